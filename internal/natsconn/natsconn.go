// Package natsconn holds what the consumer and the publisher do alike
// around connecting to NATS: checking NATS_URL before it is used, so that a
// mistyped one stops the program with a message naming it instead of
// leaving nats.go retrying a server that cannot exist, and logging the
// attempts that fail while it retries one that is down.
package natsconn

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/pandabridge/pandabridge/internal/redact"
)

// CheckURLs reports the first part of the comma-separated server list that
// nats.go could never connect to: an empty part, a part that does not
// parse, a scheme other than nats, tls, ws or wss, or no host. A part
// without a scheme is read as nats.go reads it, as if it began with
// nats://. The error shows the part with its credentials hidden
// (redact.URLs).
func CheckURLs(list string) error {
	if strings.TrimSpace(list) == "" {
		return fmt.Errorf("is empty")
	}
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return fmt.Errorf("%q: the list has an empty entry", redact.URLs(list))
		}
		full := part
		if !strings.Contains(part, "://") {
			full = "nats://" + part
		}
		u, err := url.Parse(full)
		if err != nil {
			// The *url.Error quotes the whole URL; its cause names only the
			// faulty piece (a port, an escape), never the user information.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return fmt.Errorf("%q is not a URL: %v", redact.URLs(part), err)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("%q: scheme %q is not nats, tls, ws or wss", redact.URLs(part), u.Scheme)
		}
		if u.Hostname() == "" {
			return fmt.Errorf("%q has no host", redact.URLs(part))
		}
	}
	return nil
}

// LogFailedAttempts returns the options that log, at warning level, the
// first failed attempt to connect to the servers of urls (credentials
// hidden) and every 30th after it (the count starts again when the first
// connection is made; later outages also log nats.go's disconnection): with
// nats.RetryOnFailedConnect and a reconnect wait of a second, nats.go
// retries silently otherwise, and an unreachable or mistyped NATS_URL would
// show nowhere.
func LogFailedAttempts(log *slog.Logger, urls string) []nats.Option {
	var failed atomic.Int64
	shown := redact.URLs(urls)
	return []nats.Option{
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if n := failed.Add(1); n == 1 || n%30 == 0 {
				log.Warn("cannot connect to NATS, retrying every second", "url", shown, "attempts", n, "error", err)
			}
		}),
		nats.ConnectHandler(func(*nats.Conn) { failed.Store(0) }),
	}
}
