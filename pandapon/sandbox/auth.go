package sandbox

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pandabridge/pandabridge/pandapon"
)

// authenticate verifies the system headers the way PandaPon does, plus a
// nonce replay check PandaPon is not known to make. On refusal it answers
// HTTP 200 with CodeUnauthorized and a message naming what is wrong (never
// the secret or the expected signature) and returns false.
func (s *Sandbox) authenticate(x *exchange) bool {
	msg := s.checkAuth(x)
	if msg == "" {
		return true
	}
	s.reply(x, http.StatusOK, CodeUnauthorized, msg, nil)
	return false
}

func (s *Sandbox) checkAuth(x *exchange) string {
	h := x.r.Header
	for _, name := range []string{pandapon.HeaderAccessKey, pandapon.HeaderTimestamp, pandapon.HeaderNonce, pandapon.HeaderSignature} {
		if strings.TrimSpace(h.Get(name)) == "" {
			return "missing header " + name
		}
	}
	key := h.Get(pandapon.HeaderAccessKey)
	ts := h.Get(pandapon.HeaderTimestamp)
	nonce := h.Get(pandapon.HeaderNonce)
	sig := h.Get(pandapon.HeaderSignature)

	if subtle.ConstantTimeCompare([]byte(key), []byte(s.accessKey)) != 1 {
		return fmt.Sprintf("unknown access-key %q", key)
	}
	now := s.now()
	t, err := s.unit.Parse(ts)
	if err != nil {
		return fmt.Sprintf("timestamp %q is not an integer (expected %s since the Unix epoch)", ts, unitName(s.unit))
	}
	if msg := skewMessage(ts, t, now, s.unit); msg != "" {
		return msg
	}
	if n := utf8.RuneCountInString(nonce); n != pandapon.NonceLength {
		return fmt.Sprintf("nonce-str must be %d characters, got %d", pandapon.NonceLength, n)
	}
	want := pandapon.Sign(s.accessKey, ts, nonce, s.accessSecret)
	if subtle.ConstantTimeCompare([]byte(sig), []byte(want)) != 1 {
		if strings.EqualFold(sig, want) {
			return "signature does not match: it differs only in letter case, send upper-case hex"
		}
		return "signature does not match (want upper-case hex MD5 of access-key + timestamp + nonce-str + access secret, timestamp exactly as sent)"
	}
	if !s.nonces.use(nonce, now) {
		return fmt.Sprintf("nonce-str %s was already used within the last %d s: replayed request (sign every attempt afresh)", nonce, int(pandapon.MaxClockSkew/time.Second))
	}
	return ""
}

func unitName(u pandapon.TimestampUnit) string {
	if u == pandapon.Seconds {
		return "seconds"
	}
	return "milliseconds"
}

// skewMessage returns "" when t is within MaxClockSkew of now, else a
// message with the distance and direction, and a hint when the value would
// have been in range in the other unit.
func skewMessage(ts string, t, now time.Time, unit pandapon.TimestampUnit) string {
	d := t.Sub(now)
	if d >= -pandapon.MaxClockSkew && d <= pandapon.MaxClockSkew {
		return ""
	}
	dir := "ahead of"
	if d < 0 {
		dir, d = "behind", -d
	}
	secs := int64((d + time.Second - 1) / time.Second)
	msg := fmt.Sprintf("timestamp %s is %d s %s server time, limit %d s", ts, secs, dir, int64(pandapon.MaxClockSkew/time.Second))
	other := pandapon.Seconds
	if unit == pandapon.Seconds {
		other = pandapon.Milliseconds
	}
	if ot, err := other.Parse(ts); err == nil {
		if od := ot.Sub(now); od >= -pandapon.MaxClockSkew && od <= pandapon.MaxClockSkew {
			msg += fmt.Sprintf(" (read as %s it would be in range: this server expects %s)", unitName(other), unitName(unit))
		}
	}
	return msg
}

// nonceStore remembers the nonces of accepted signatures for at least
// MaxClockSkew. It keeps two generations, each covering at most
// MaxClockSkew of traffic, and drops the older one when the newer one has
// become that old: memory is bounded by two windows of requests, and a
// request replayed later than that is refused by its stale timestamp anyway.
type nonceStore struct {
	mu    sync.Mutex
	cur   map[string]struct{}
	prev  map[string]struct{}
	start time.Time // when cur became the current generation
}

// use records nonce at now and reports whether it was unused.
func (n *nonceStore) use(nonce string, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cur == nil {
		n.cur, n.start = make(map[string]struct{}), now
	} else if now.Sub(n.start) >= pandapon.MaxClockSkew {
		n.prev, n.cur, n.start = n.cur, make(map[string]struct{}), now
	}
	if _, ok := n.cur[nonce]; ok {
		return false
	}
	if _, ok := n.prev[nonce]; ok {
		return false
	}
	n.cur[nonce] = struct{}{}
	return true
}

// len returns the number of remembered nonces (for tests).
func (n *nonceStore) len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.cur) + len(n.prev)
}
