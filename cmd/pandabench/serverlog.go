package main

import (
	"fmt"
	"strings"
	"sync"
)

// serverLog keeps the embedded NATS server's most recent warnings and
// errors, so that a failure the server reports to clients only in general
// terms ("error creating store for stream") can be reported with the cause
// the server logged alongside it (a full disk, a missing directory).
// It implements nats-server's server.Logger; notices, debug and trace lines
// are dropped.
type serverLog struct {
	mu    sync.Mutex
	lines []string // at most serverLogKeep, oldest first
	total int      // lines ever kept, for since
}

const serverLogKeep = 32

func (l *serverLog) add(level, format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == serverLogKeep {
		l.lines = append(l.lines[:0], l.lines[1:]...)
	}
	l.lines = append(l.lines, level+": "+fmt.Sprintf(format, v...))
	l.total++
}

func (l *serverLog) Noticef(string, ...any)         {}
func (l *serverLog) Debugf(string, ...any)          {}
func (l *serverLog) Tracef(string, ...any)          {}
func (l *serverLog) Warnf(format string, v ...any)  { l.add("warning", format, v...) }
func (l *serverLog) Errorf(format string, v ...any) { l.add("error", format, v...) }
func (l *serverLog) Fatalf(format string, v ...any) { l.add("fatal", format, v...) }

// mark returns a position to pass to since.
func (l *serverLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// since returns the lines logged after mark (as many as are still kept),
// joined with "; ", or "" if there are none.
func (l *serverLog) since(mark int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := min(l.total-mark, len(l.lines))
	if n <= 0 {
		return ""
	}
	return strings.Join(l.lines[len(l.lines)-n:], "; ")
}
