//go:build !linux

package sandbox

// sharedAlarm returns nil: outside Linux, delay uses Go timers.
func sharedAlarm() *alarm { return nil }
