package embeddednats

import (
	"fmt"
	"strings"
	"sync"
)

// WarningLog is a server.Logger (Options.Logger) that keeps the server's
// most recent warnings and errors in memory and drops everything else.
// A failure the server reports to clients only in general terms ("error
// creating store for stream") has its cause in the warning it logs at the
// same time; a WarningLog lets the caller report the two together. It is
// safe for concurrent use; the zero value is ready and keeps the last
// WarningLogKeep lines.
type WarningLog struct {
	mu    sync.Mutex
	lines []string // oldest first, at most WarningLogKeep
	total int      // lines ever logged
}

// WarningLogKeep is how many lines a WarningLog keeps.
const WarningLogKeep = 32

func (l *WarningLog) add(level, format string, v ...any) {
	line := level + ": " + fmt.Sprintf(format, v...)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == WarningLogKeep {
		l.lines = append(l.lines[:0], l.lines[1:]...)
	}
	l.lines = append(l.lines, line)
	l.total++
}

// Warnf, Errorf and Fatalf keep the line; nats-server calls them.
func (l *WarningLog) Warnf(format string, v ...any)  { l.add("warning", format, v...) }
func (l *WarningLog) Errorf(format string, v ...any) { l.add("error", format, v...) }
func (l *WarningLog) Fatalf(format string, v ...any) { l.add("fatal", format, v...) }

// Noticef, Debugf and Tracef drop the line.
func (l *WarningLog) Noticef(string, ...any) {}
func (l *WarningLog) Debugf(string, ...any)  {}
func (l *WarningLog) Tracef(string, ...any)  {}

// Mark returns a position in the log for Since.
func (l *WarningLog) Mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Since returns the lines logged after mark that are still kept, joined
// with "; ", or "" if there are none. Since(0) is every kept line.
func (l *WarningLog) Since(mark int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := min(l.total-mark, len(l.lines))
	if n <= 0 {
		return ""
	}
	return strings.Join(l.lines[len(l.lines)-n:], "; ")
}
