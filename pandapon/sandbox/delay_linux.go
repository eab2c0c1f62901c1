package sandbox

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

var (
	alarmOnce sync.Once
	theAlarm  *alarm
)

// sharedAlarm returns the process's timerfd alarm, started on first use and
// kept for the life of the process (one file descriptor, one goroutine);
// nil if the kernel refuses a timerfd.
func sharedAlarm() *alarm {
	alarmOnce.Do(func() { theAlarm = newTimerfdAlarm() })
	return theAlarm
}

// newTimerfdAlarm returns an alarm on a non-blocking CLOCK_MONOTONIC timerfd
// read through the runtime's netpoller, or nil if none can be created.
func newTimerfdAlarm() *alarm {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil
	}
	clock := os.NewFile(uintptr(fd), "timerfd")
	a := &alarm{set: func(d time.Duration) error {
		spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
		return unix.TimerfdSettime(fd, 0, &spec, nil)
	}}
	go func() {
		var expirations [8]byte
		for {
			if _, err := clock.Read(expirations[:]); err != nil {
				a.mu.Lock()
				a.failLocked(fmt.Errorf("reading the timerfd: %w", err))
				a.mu.Unlock()
				return
			}
			a.fired()
		}
	}()
	return a
}
