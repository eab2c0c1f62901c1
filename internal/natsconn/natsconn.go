// Package natsconn holds what the consumer and the publisher do alike
// around connecting to NATS: checking NATS_URL before it is used, and
// logging the connection's life (failed attempts, disconnections,
// reconnections) without ever showing a credential.
package natsconn

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/pandabridge/pandabridge/internal/redact"
)

// CheckURLs reports what in the comma-separated server list nats.go could
// not use or this program could not print safely: a list with no server, an
// entry that does not parse as a URL, or an entry with an "@" after its
// host, which is a password or token holding an unencoded '/', '?' or '#'
// (url.Parse would take the credential for a path, so it could be shown).
// Like nats.go, it skips empty entries, reads an entry without a scheme as
// nats://..., and leaves schemes and hosts to the dialler (nats.go dials
// any scheme but ws, wss and tls as plain TCP, and an empty host as
// localhost). Its errors never show an entry's user information.
func CheckURLs(list string) error {
	n := 0
	for i, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n++
		switch _, err := redact.Entry(part); {
		case errors.Is(err, redact.ErrUnencodedCredential):
			return fmt.Errorf("entry %d has an '@' after its host: percent-encode the '/', '?' or '#' in its password or token", i+1)
		case err != nil: // not shown: url.Parse's error quotes the entry
			return fmt.Errorf("entry %d does not parse as a URL (percent-encode a '/', '?', '#', '%%' or '@' in a password or token)", i+1)
		}
	}
	if n == 0 {
		return fmt.Errorf("is empty")
	}
	return nil
}

// Servers returns the entries of the list as scheme://host[:port], without
// user information, path or anything else: what a log line may show.
// Entries CheckURLs refuses are left out.
func Servers(list string) string {
	var out []string
	for _, part := range strings.Split(list, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		if u, err := redact.Entry(part); err == nil {
			out = append(out, u.Scheme+"://"+u.Host)
		}
	}
	return strings.Join(out, ",")
}

// Logging returns the options that log the connection to the servers of
// urls: a failed attempt to connect (warning, the first one and every 30th
// after it, counted from the last time connected: with
// nats.RetryOnFailedConnect and a reconnect wait of a second, nats.go
// retries silently otherwise, and an unreachable or mistyped NATS_URL would
// show nowhere), a lost connection (warning) and a reconnection (info).
// Servers are shown as Servers shows them. They replace any connect,
// disconnect, reconnect or reconnect-error handler set before them.
func Logging(log *slog.Logger, urls string) []nats.Option {
	var failed atomic.Int64
	shown := Servers(urls)
	return []nats.Option{
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if n := failed.Add(1); n == 1 || n%30 == 0 {
				log.Warn("cannot connect to NATS, retrying every second", "url", shown, "attempts", n, "error", err)
			}
		}),
		nats.ConnectHandler(func(*nats.Conn) { failed.Store(0) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close at shutdown
				log.Warn("disconnected from NATS", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			failed.Store(0)
			log.Info("reconnected to NATS", "url", Servers(nc.ConnectedUrl()))
		}),
	}
}
