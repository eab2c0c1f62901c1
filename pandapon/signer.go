package pandapon

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// System header names. PandaPon carries every system parameter as an HTTP
// request header; the first three are covered by the signature.
const (
	HeaderAccessKey = "access-key" // the developer's Access Key (signed)
	HeaderTimestamp = "timestamp"  // request time in TimestampUnit (signed)
	HeaderNonce     = "nonce-str"  // 32 random characters (signed)
	HeaderUserID    = "user-id"    // sub-account id (not signed)
	HeaderSignature = "signature"  // Sign(accessKey, timestamp, nonce, secret)
)

// The system headers' canonical forms (HTTP header names are
// case-insensitive; Go sends these as Access-Key etc.).
var (
	canonAccessKey = http.CanonicalHeaderKey(HeaderAccessKey)
	canonTimestamp = http.CanonicalHeaderKey(HeaderTimestamp)
	canonNonce     = http.CanonicalHeaderKey(HeaderNonce)
	canonUserID    = http.CanonicalHeaderKey(HeaderUserID)
	canonSignature = http.CanonicalHeaderKey(HeaderSignature)
)

// NonceLength is the length of the nonce-str header PandaPon requires.
const NonceLength = 32

// MaxClockSkew is how far a request timestamp may be from PandaPon's clock
// before the request is refused.
const MaxClockSkew = 600 * time.Second

// TimestampUnit is the unit of the timestamp header: PandaPon's pages show
// 13-digit milliseconds, a third-party client sends 10-digit seconds.
type TimestampUnit string

const (
	Milliseconds TimestampUnit = "ms" // the default
	Seconds      TimestampUnit = "s"
)

// ParseTimestampUnit accepts "ms", "s" or "" (meaning ms).
func ParseTimestampUnit(s string) (TimestampUnit, error) {
	switch TimestampUnit(s) {
	case "", Milliseconds:
		return Milliseconds, nil
	case Seconds:
		return Seconds, nil
	}
	return "", fmt.Errorf("timestamp unit %q: want %q or %q", s, Milliseconds, Seconds)
}

// Format renders t as a timestamp header value in unit u.
func (u TimestampUnit) Format(t time.Time) string {
	if u == Seconds {
		return strconv.FormatInt(t.Unix(), 10)
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

// Parse reads a timestamp header value written in unit u.
func (u TimestampUnit) Parse(v string) (time.Time, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %q is not an integer", v)
	}
	if u == Seconds {
		return time.Unix(n, 0), nil
	}
	return time.UnixMilli(n), nil
}

// Sign computes PandaPon's request signature:
//
//	UPPERCASE(hex(MD5(accessKey + timestamp + nonce + accessSecret)))
//
// plain concatenation without separators; body and query are not signed.
// timestamp must be exactly the header value sent.
func Sign(accessKey, timestamp, nonce, accessSecret string) string {
	// One buffer on the stack for the usual lengths (it grows for others),
	// hashed at once, and hex digits written in upper case directly: one
	// allocation, the result.
	var buf [256]byte
	msg := append(append(append(append(buf[:0], accessKey...), timestamp...), nonce...), accessSecret...)
	sum := md5.Sum(msg)
	const digits = "0123456789ABCDEF"
	var out [2 * md5.Size]byte
	for i, b := range sum {
		out[2*i], out[2*i+1] = digits[b>>4], digits[b&0x0f]
	}
	return string(out[:])
}

// NewNonce returns NonceLength random lower-case hex characters from
// crypto/rand.
func NewNonce() string {
	var b [NonceLength / 2]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand documents it panics instead)
	return hex.EncodeToString(b[:])
}

// Credentials identify a PandaPon developer account. The zero value is not
// usable: AccessKey and AccessSecret are required.
type Credentials struct {
	AccessKey    string
	AccessSecret Secret
	// UserID is sent as the user-id header (empty when unset: PandaPon's
	// pages list the header on every request).
	UserID string
	// TimestampUnit defaults to Milliseconds.
	TimestampUnit TimestampUnit
}

// SignRequest sets all five system headers on h for a request made at now,
// with a fresh nonce (user-id empty when Credentials.UserID is). Call it
// once per attempt: a retried request must carry a new nonce and timestamp.
func (c Credentials) SignRequest(h http.Header, now time.Time) {
	ts := c.TimestampUnit.Format(now)
	nonce := NewNonce()
	// Canonical keys computed once: http.Header.Set would canonicalise (and
	// allocate) on every call. The values share one backing array, each a
	// full-capacity slice of it, so that an Add by a caller copies instead of
	// overwriting a neighbour.
	vals := [...]string{c.AccessKey, ts, nonce, c.UserID, Sign(c.AccessKey, ts, nonce, string(c.AccessSecret))}
	all := vals[:] // escapes: one allocation for the five values
	h[canonAccessKey] = all[0:1:1]
	h[canonTimestamp] = all[1:2:2]
	h[canonNonce] = all[2:3:3]
	h[canonUserID] = all[3:4:4]
	h[canonSignature] = all[4:5:5]
}

// Secret holds a credential that must never be printed: its String, GoString,
// Format and MarshalText methods all give "[REDACTED]" (or "" when empty), so
// a Secret formatted with any verb (%d included), logged by slog or encoded
// to JSON does not leak. fmt cannot call methods of a value in an
// unexported struct field, so a struct holding one there must not be
// printed whole (Client has a String method for that). Convert explicitly
// with string(s) where the value is really needed.
type Secret string

const redacted = "[REDACTED]"

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer for %#v.
func (s Secret) GoString() string { return s.String() }

// Format implements fmt.Formatter: every verb prints String, where fmt
// would print the raw value for a verb it finds wrong for a string (%d).
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// MarshalText implements encoding.TextMarshaler (JSON, slog text and JSON).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
