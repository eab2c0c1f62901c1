package pandapon

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The expected signatures below were computed independently of this code
// with coreutils in a shell, e.g.:
//
//	printf '%s' "58c0201dfdf148eca63cbf6bb5e7cf03""1715669977082""0123456789abcdef0123456789abcdef""test-secret" | md5sum | tr a-f A-F
//
// (plain concatenation of access key, timestamp header value, nonce and
// secret, then upper-case hex MD5).
func TestSignMatchesIndependentVectors(t *testing.T) {
	tests := []struct {
		name, key, ts, nonce, secret, want string
	}{
		{"milliseconds timestamp", "58c0201dfdf148eca63cbf6bb5e7cf03", "1715669977082", "0123456789abcdef0123456789abcdef", "test-secret", "396D29CFD8BC96F28D80D71FEC448679"},
		{"seconds timestamp", "58c0201dfdf148eca63cbf6bb5e7cf03", "1715669977", "0123456789abcdef0123456789abcdef", "test-secret", "A19532D6DE8E943B7C7E91CDC948C2ED"},
		{"other values", "AKsample", "1715669977000", "0123456789abcdefghijklmnopqrstuv", "SECRET", "8A16F6C397692C832C99ADD6B38E9F58"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Sign(tt.key, tt.ts, tt.nonce, tt.secret); got != tt.want {
				t.Errorf("Sign(%q, %q, %q, secret) = %s, want %s (md5sum of the concatenation)", tt.key, tt.ts, tt.nonce, got, tt.want)
			}
		})
	}
}

func TestSignRequestSetsAllFiveHeaders(t *testing.T) {
	now := time.UnixMilli(1715669977082)
	for _, unit := range []TimestampUnit{Milliseconds, Seconds} {
		c := Credentials{AccessKey: "ak", AccessSecret: "sk", UserID: "2100007341207", TimestampUnit: unit}
		h := http.Header{}
		c.SignRequest(h, now)
		wantTS := map[TimestampUnit]string{Milliseconds: "1715669977082", Seconds: "1715669977"}[unit]
		if got := h.Get(HeaderTimestamp); got != wantTS {
			t.Errorf("unit %s: timestamp header %q, want %q", unit, got, wantTS)
		}
		if got := h.Get(HeaderAccessKey); got != "ak" {
			t.Errorf("access-key header %q, want ak", got)
		}
		if got := h.Get(HeaderUserID); got != "2100007341207" {
			t.Errorf("user-id header %q", got)
		}
		nonce := h.Get(HeaderNonce)
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(nonce) {
			t.Errorf("nonce-str %q is not 32 hex characters", nonce)
		}
		if got, want := h.Get(HeaderSignature), Sign("ak", wantTS, nonce, "sk"); got != want {
			t.Errorf("signature %q, want %q", got, want)
		}
	}
}

func TestNonceIsFreshEachTime(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		n := NewNonce()
		if seen[n] {
			t.Fatalf("nonce %s repeated", n)
		}
		seen[n] = true
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("super-secret-value")
	for _, got := range []string{s.String(), s.GoString()} {
		if got != "[REDACTED]" {
			t.Errorf("got %q, want [REDACTED]", got)
		}
	}
	b, _ := s.MarshalText()
	if string(b) != "[REDACTED]" {
		t.Errorf("MarshalText = %q", b)
	}
	creds := Credentials{AccessKey: "k", AccessSecret: s}
	c, err := New(Config{BaseURL: "https://user:url-password@api.pandapon.com", Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	// Wrong verbs on purpose: fmt prints a raw value for %d.
	out := fmt.Sprintf("%d %x %s %q %v %+v %#v | %v %+v %#v | %v %+v %s %#v", s, s, s, s, s, s, s, creds, creds, creds, c, c, c, c)
	if strings.Contains(out, "super-secret-value") || strings.Contains(out, "url-password") {
		t.Errorf("a formatted Secret, Credentials or Client shows the secret: %s", out)
	}
}

func TestParseTimestampUnit(t *testing.T) {
	for in, want := range map[string]TimestampUnit{"": Milliseconds, "ms": Milliseconds, "s": Seconds} {
		got, err := ParseTimestampUnit(in)
		if err != nil || got != want {
			t.Errorf("ParseTimestampUnit(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseTimestampUnit("us"); err == nil {
		t.Error(`ParseTimestampUnit("us") succeeded`)
	}
}

func BenchmarkSignRequest(b *testing.B) {
	c := Credentials{AccessKey: "58c0201dfdf148eca63cbf6bb5e7cf03", AccessSecret: "secret", UserID: "2100007341207"}
	h := http.Header{}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		c.SignRequest(h, now)
	}
}
