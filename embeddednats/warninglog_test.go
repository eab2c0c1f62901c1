package embeddednats

import (
	"fmt"
	"strings"
	"testing"
)

func TestWarningLogKeepsTheLatestWarningsAndErrors(t *testing.T) {
	var l WarningLog
	l.Noticef("started")
	l.Debugf("debug")
	l.Tracef("trace")
	if got := l.Since(0); got != "" {
		t.Fatalf("notices, debug and trace kept: %q", got)
	}
	l.Warnf("disk %d%% full", 99)
	mark := l.Mark()
	l.Errorf("store %q failed", "S")
	if got, want := l.Since(mark), `error: store "S" failed`; got != want {
		t.Errorf("Since(mark) = %q, want %q", got, want)
	}
	if got, want := l.Since(0), `warning: disk 99% full; error: store "S" failed`; got != want {
		t.Errorf("Since(0) = %q, want %q", got, want)
	}
	for i := range WarningLogKeep + 5 {
		l.Warnf("w%d", i)
	}
	lines := strings.Split(l.Since(0), "; ")
	if len(lines) != WarningLogKeep {
		t.Fatalf("%d lines kept, want %d", len(lines), WarningLogKeep)
	}
	if first, want := lines[0], fmt.Sprintf("warning: w%d", 5); first != want {
		t.Errorf("oldest kept line %q, want %q", first, want)
	}
	if got := l.Since(l.Mark()); got != "" {
		t.Errorf("Since(Mark()) = %q, want nothing", got)
	}
}

// TestLoggerReceivesTheServerWarnings: a stream whose store cannot be
// created is refused with a general error, and its cause is in the log.
func TestLoggerReceivesTheServerWarnings(t *testing.T) {
	var l WarningLog
	s, err := Start(Options{StoreDir: t.TempDir(), Logger: &l})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	s.Warnf("a warning %s", "logged by the server")
	if got := l.Since(0); !strings.Contains(got, "warning: a warning logged by the server") {
		t.Errorf("the server's warning did not reach the Logger: %q", got)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	mark := l.Mark()
	s.Errorf("after restart")
	if got := l.Since(mark); got != "error: after restart" {
		t.Errorf("after Restart the Logger got %q", got)
	}
}
