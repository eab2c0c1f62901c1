// Package webhooks signs and verifies HTTP messages the Standard Webhooks
// way (https://www.standardwebhooks.com): pandabridge verifies producers'
// requests to its HTTP ingest with it, and signs the refund.updated
// deliveries it sends to subscribers' URLs.
//
// A signed message carries three headers:
//
//	webhook-id:        a unique id of the message (for deliveries: the event id)
//	webhook-timestamp: when it was signed, in Unix seconds
//	webhook-signature: "v1,<base64 HMAC-SHA256 of id.timestamp.body>"
//
// where the signed content is the id, a full stop, the timestamp as sent, a
// full stop, and the raw body. webhook-signature may hold several
// space-separated signatures (one per secret during a rotation); one valid
// signature is enough.
//
// Secrets are written "whsec_<base64 of the key bytes>" as the
// specification suggests; a secret without that prefix is used as raw key
// bytes (its UTF-8 text), so that an existing shared password works as is.
// Secrets never appear in errors or in String output.
package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Header names of the Standard Webhooks specification.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts a secret written in the specification's format.
const SecretPrefix = "whsec_"

// signatureVersion is the only scheme defined: HMAC-SHA256.
const signatureVersion = "v1"

// DefaultTolerance is how far a webhook-timestamp may be from the
// verifier's clock, either way, before the message is refused as stale or
// from the future. It is also how long a seen webhook-id is remembered.
const DefaultTolerance = 5 * time.Minute

// DefaultMaxRemembered bounds the seen-id cache: at most this many ids are
// remembered; beyond it the oldest are forgotten first.
const DefaultMaxRemembered = 100_000

// Errors of Verify. Each matches ErrVerification with errors.Is. They are
// for logs and metrics; an HTTP server answers 401 without telling which.
var (
	ErrVerification = errors.New("webhook signature verification failed")

	// ErrMissingHeaders: a webhook-id, webhook-timestamp or
	// webhook-signature header is absent or empty.
	ErrMissingHeaders = fmt.Errorf("%w: missing webhook-id, webhook-timestamp or webhook-signature", ErrVerification)
	// ErrTimestamp: webhook-timestamp is not an integer, or is further from
	// now than the tolerance.
	ErrTimestamp = fmt.Errorf("%w: webhook-timestamp is malformed or outside the tolerance", ErrVerification)
	// ErrSignature: no signature matches any secret.
	ErrSignature = fmt.Errorf("%w: no valid signature", ErrVerification)
	// ErrReplayed: the signature is valid but a message with this
	// webhook-id was already accepted within the tolerance.
	ErrReplayed = fmt.Errorf("%w: webhook-id already accepted (replay)", ErrVerification)
)

// Secret is an HMAC key. Its String and GoString never show the key.
type Secret struct{ key []byte }

// ParseSecret reads a secret: "whsec_<base64>" (standard or URL-safe
// alphabet, padding optional) is decoded; anything else is used as raw key
// bytes. Surrounding white space is trimmed. An empty secret, or a whsec_
// secret whose base64 is invalid or shorter than 16 bytes once decoded, is an
// error (which never contains the secret).
func ParseSecret(s string) (Secret, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Secret{}, errors.New("secret is empty")
	}
	if b64, ok := strings.CutPrefix(s, SecretPrefix); ok {
		var key []byte
		var err error
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if key, err = enc.DecodeString(b64); err == nil {
				break
			}
		}
		if err != nil {
			return Secret{}, errors.New("secret starts with " + SecretPrefix + " but the rest is not base64")
		}
		if len(key) < 16 {
			return Secret{}, fmt.Errorf("secret decodes to %d bytes; use at least 16 (the specification recommends 24 to 64)", len(key))
		}
		return Secret{key: key}, nil
	}
	return Secret{key: []byte(s)}, nil
}

// String hides the key.
func (Secret) String() string { return "[REDACTED]" }

// GoString hides the key.
func (Secret) GoString() string { return "webhooks.Secret{[REDACTED]}" }

// IsZero reports whether s holds no key.
func (s Secret) IsZero() bool { return len(s.key) == 0 }

// ReadSecretFile reads one secret from a file (surrounding white space
// trimmed). Errors name the file, never its content.
func ReadSecretFile(path string) (Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Secret{}, fmt.Errorf("reading secret file %s: %w", path, errors.Unwrap(err))
	}
	s, err := ParseSecret(string(b))
	if err != nil {
		return Secret{}, fmt.Errorf("secret file %s: %w", path, err)
	}
	return s, nil
}

// ReadLines reads a file of secrets or tokens, one per line. Blank lines
// and lines starting with '#' are skipped; surrounding white space is
// trimmed. Errors name the file and line, never their content.
func ReadLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, errors.Unwrap(err))
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	return out, nil
}

// ReadSecretsFile reads secrets one per line (see ReadLines and
// ParseSecret). A file without any secret is an error.
func ReadSecretsFile(path string) ([]Secret, error) {
	lines, err := ReadLines(path)
	if err != nil {
		return nil, err
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("%s holds no secret", path)
	}
	secrets := make([]Secret, 0, len(lines))
	for i, l := range lines {
		s, err := ParseSecret(l)
		if err != nil {
			return nil, fmt.Errorf("%s: secret #%d: %w", path, i+1, err)
		}
		secrets = append(secrets, s)
	}
	return secrets, nil
}

// Sign returns the v1 signature of a message: "v1,<base64 HMAC-SHA256 of
// id.timestamp.body>", timestamp in Unix seconds.
func Sign(secret Secret, id string, timestamp int64, body []byte) string {
	return signatureVersion + "," + base64.StdEncoding.EncodeToString(mac(secret, id, strconv.FormatInt(timestamp, 10), body))
}

func mac(secret Secret, id, timestamp string, body []byte) []byte {
	h := hmac.New(sha256.New, secret.key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(timestamp))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// SetHeaders signs body and sets webhook-id, webhook-timestamp (at, in Unix
// seconds) and webhook-signature on h. Sign every attempt afresh: the
// timestamp must be recent when the receiver checks it.
func SetHeaders(h http.Header, secret Secret, id string, at time.Time, body []byte) {
	ts := at.Unix()
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, Sign(secret, id, ts, body))
}

// HasSignature reports whether h carries any of the three headers, that is
// whether the sender tried to sign the message.
func HasSignature(h http.Header) bool {
	return h.Get(HeaderID) != "" || h.Get(HeaderTimestamp) != "" || h.Get(HeaderSignature) != ""
}

// Verifier checks signed messages against a set of secrets (several during
// a rotation), refusing stale timestamps and remembering accepted ids to
// refuse replays. Its zero value has no secret and refuses everything; it is
// safe for concurrent use.
type Verifier struct {
	secrets []Secret
	// Tolerance is the allowed distance between webhook-timestamp and now
	// (default DefaultTolerance).
	tolerance time.Duration
	now       func() time.Time

	mu    sync.Mutex
	seen  map[string]time.Time // id → forget after
	order []string             // ids in the order remembered (FIFO)
	max   int
}

// VerifierOption configures a Verifier.
type VerifierOption func(*Verifier)

// WithTolerance sets how far webhook-timestamp may be from now (default
// DefaultTolerance).
func WithTolerance(d time.Duration) VerifierOption { return func(v *Verifier) { v.tolerance = d } }

// WithMaxRemembered bounds the seen-id cache (default DefaultMaxRemembered).
// When full, the oldest id is forgotten, so its replay would no longer be
// caught once its timestamp is still within the tolerance: size it above the
// number of messages accepted per tolerance window.
func WithMaxRemembered(n int) VerifierOption { return func(v *Verifier) { v.max = n } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) VerifierOption { return func(v *Verifier) { v.now = now } }

// NewVerifier returns a verifier accepting a signature by any of secrets.
func NewVerifier(secrets []Secret, opts ...VerifierOption) *Verifier {
	v := &Verifier{secrets: secrets, tolerance: DefaultTolerance, now: time.Now, max: DefaultMaxRemembered, seen: map[string]time.Time{}}
	for _, o := range opts {
		o(v)
	}
	if v.tolerance <= 0 {
		v.tolerance = DefaultTolerance
	}
	if v.max <= 0 {
		v.max = DefaultMaxRemembered
	}
	return v
}

// Verify checks the signature headers in h against body: all three
// present, the timestamp within the tolerance, one v1 signature matching one
// secret (compared in constant time), and the webhook-id not accepted
// before. It returns the webhook-id. It does not remember the id: call
// Remember once the message has been acted upon, so that a sender retrying
// after a failure (same id) is not refused as a replay.
func (v *Verifier) Verify(h http.Header, body []byte) (string, error) {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return "", ErrMissingHeaders
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return id, ErrTimestamp
	}
	now := v.clock()
	if d := now.Sub(time.Unix(ts, 0)); d > v.tol() || d < -v.tol() {
		return id, ErrTimestamp
	}
	ok := false
	for _, s := range v.secrets {
		want := mac(s, id, tsText, body)
		for sig := range strings.FieldsSeq(sigs) {
			ver, b64, found := strings.Cut(sig, ",")
			if !found || ver != signatureVersion {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				continue
			}
			if subtle.ConstantTimeCompare(got, want) == 1 {
				ok = true
			}
		}
	}
	if !ok {
		return id, ErrSignature
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if until, seen := v.seen[id]; seen && now.Before(until) {
		return id, ErrReplayed
	}
	return id, nil
}

// Remember records id as accepted: a later message with the same id is
// refused with ErrReplayed for twice the tolerance (after that its
// timestamp is stale anyway).
func (v *Verifier) Remember(id string) {
	now := v.clock()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen == nil {
		v.seen = map[string]time.Time{}
	}
	// Forget what expired, and the oldest when full.
	for len(v.order) > 0 {
		first := v.order[0]
		if until, ok := v.seen[first]; ok && now.Before(until) && len(v.seen) < v.maxOr() {
			break
		}
		delete(v.seen, first)
		v.order[0] = ""
		v.order = v.order[1:]
	}
	if _, dup := v.seen[id]; !dup {
		v.order = append(v.order, id)
	}
	v.seen[id] = now.Add(2 * v.tol())
}

func (v *Verifier) clock() time.Time {
	if v.now == nil {
		return time.Now()
	}
	return v.now()
}

func (v *Verifier) tol() time.Duration {
	if v.tolerance <= 0 {
		return DefaultTolerance
	}
	return v.tolerance
}

func (v *Verifier) maxOr() int {
	if v.max <= 0 {
		return DefaultMaxRemembered
	}
	return v.max
}

// Remembered returns how many ids the replay cache holds.
func (v *Verifier) Remembered() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.seen)
}
