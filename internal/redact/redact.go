// Package redact makes configuration values safe to print.
package redact

import (
	"errors"
	"net/url"
	"strings"
)

// ErrUnencodedCredential is Entry's error for an entry with an '@' after its
// host: a password or token holding an unencoded '/', '?' or '#', which
// url.Parse reads as a path, query or fragment.
var ErrUnencodedCredential = errors.New("an '@' after the host: a credential with an unencoded '/', '?' or '#'")

// Entry reads one entry of a comma-separated URL list as nats.go reads it:
// without a scheme, as if it began with nats://. It fails with url.Parse's
// error, or with ErrUnencodedCredential. Errors must not be printed whole:
// url.Parse's quote the entry.
func Entry(part string) (*url.URL, error) {
	if !strings.Contains(part, "://") {
		part = "nats://" + part
	}
	u, err := url.Parse(part)
	if err != nil {
		return nil, err
	}
	if strings.Contains(u.Path+u.RawQuery+u.Fragment, "@") {
		return nil, ErrUnencodedCredential
	}
	return u, nil
}

// URLs returns the comma-separated URL list with every credential
// hidden: the password of user:password@ becomes [REDACTED], and a lone
// user@ becomes [REDACTED]@, because NATS reads that as a token (unlike
// url.URL.Redacted and nats.Conn.ConnectedUrlRedacted, which print it).
// A part without a scheme is read as nats.go reads it, as if it began with
// nats:// (so "tok@host" is a token too), and printed without one. A part
// that does not parse is shown as [UNPARSABLE URL], since it may hold a
// credential, and so is one with an '@' after its host (a credential with
// an unencoded '/', '?' or '#', which url.Parse reads as a path) as
// [REDACTED URL]. Surrounding spaces of each part are dropped.
func URLs(list string) string {
	if list == "" {
		return ""
	}
	parts := strings.Split(list, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			parts[i] = ""
			continue
		}
		noScheme := !strings.Contains(p, "://")
		u, err := Entry(p)
		switch {
		case errors.Is(err, ErrUnencodedCredential): // none of it may be shown
			parts[i] = "[REDACTED URL]"
			continue
		case err != nil:
			parts[i] = "[UNPARSABLE URL]"
			continue
		}
		if u.User != nil {
			if _, hasPassword := u.User.Password(); hasPassword {
				u.User = url.UserPassword(u.User.Username(), "[REDACTED]")
			} else {
				u.User = url.User("[REDACTED]")
			}
		}
		parts[i] = strings.NewReplacer("%5B", "[", "%5D", "]").Replace(u.String())
		if noScheme {
			parts[i] = strings.TrimPrefix(parts[i], "nats://")
		}
	}
	return strings.Join(parts, ",")
}
