package sandbox_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pandabridge/pandabridge/pandapon"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
)

// resign sets the system headers for the given values, signed with secret.
func resign(h http.Header, key, ts, nonce, secret string) {
	h.Set(pandapon.HeaderAccessKey, key)
	h.Set(pandapon.HeaderTimestamp, ts)
	h.Set(pandapon.HeaderNonce, nonce)
	h.Set(pandapon.HeaderSignature, pandapon.Sign(key, ts, nonce, secret))
}

func TestAuthRefusals(t *testing.T) {
	ms := func(d time.Duration) string { return pandapon.Milliseconds.Format(time.Now().Add(d)) }
	nonce := pandapon.NewNonce
	key, secret := sandbox.DefaultAccessKey, sandbox.DefaultAccessSecret
	tests := []struct {
		name    string
		mutate  func(h http.Header)
		wantMsg string
	}{
		{"missing access-key", func(h http.Header) { h.Del(pandapon.HeaderAccessKey) }, "missing header access-key"},
		{"empty access-key", func(h http.Header) { h.Set(pandapon.HeaderAccessKey, "") }, "missing header access-key"},
		{"missing timestamp", func(h http.Header) { h.Del(pandapon.HeaderTimestamp) }, "missing header timestamp"},
		{"missing nonce-str", func(h http.Header) { h.Del(pandapon.HeaderNonce) }, "missing header nonce-str"},
		{"missing signature", func(h http.Header) { h.Del(pandapon.HeaderSignature) }, "missing header signature"},
		{"bad signature", func(h http.Header) {
			sig := []byte(h.Get(pandapon.HeaderSignature))
			sig[0] = map[bool]byte{true: 'B', false: 'A'}[sig[0] == 'A']
			h.Set(pandapon.HeaderSignature, string(sig))
		}, "signature does not match"},
		{"signature signed with another secret", func(h http.Header) {
			resign(h, key, ms(0), nonce(), "wrong-secret")
		}, "signature does not match"},
		{"lower-case signature", func(h http.Header) {
			h.Set(pandapon.HeaderSignature, strings.ToLower(h.Get(pandapon.HeaderSignature)))
		}, "differs only in letter case"},
		{"unknown access-key", func(h http.Header) { resign(h, "someone-else", ms(0), nonce(), secret) },
			`unknown access-key "someone-else"`},
		{"timestamp too old", func(h http.Header) { resign(h, key, ms(-700*time.Second), nonce(), secret) },
			"s behind server time, limit 600 s"},
		{"timestamp too far ahead", func(h http.Header) { resign(h, key, ms(700*time.Second), nonce(), secret) },
			"s ahead of server time, limit 600 s"},
		{"timestamp in seconds, server wants ms", func(h http.Header) {
			resign(h, key, pandapon.Seconds.Format(time.Now()), nonce(), secret)
		}, "read as seconds it would be in range"},
		{"timestamp not an integer", func(h http.Header) { resign(h, key, "2024-05-14T06:59:37Z", nonce(), secret) },
			`timestamp "2024-05-14T06:59:37Z" is not an integer`},
		{"short nonce", func(h http.Header) { resign(h, key, ms(0), nonce()[:16], secret) },
			"nonce-str must be 32 characters, got 16"},
		{"long nonce", func(h http.Header) { resign(h, key, ms(0), nonce()+"x", secret) },
			"nonce-str must be 32 characters, got 33"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := start(t, sandbox.Options{})
			req := signed(t, http.MethodGet, queryURL(srv.URL, sandbox.SeedRefundOnly), nil)
			tt.mutate(req.Header)
			h := req.Header
			expected := pandapon.Sign(key, h.Get(pandapon.HeaderTimestamp), h.Get(pandapon.HeaderNonce), secret)

			r := send(t, req)
			wantCode(t, r, sandbox.CodeUnauthorized)
			if !strings.Contains(r.env.Msg, tt.wantMsg) {
				t.Errorf("refusal message %q does not say %q", r.env.Msg, tt.wantMsg)
			}
			if strings.Contains(string(r.body), secret) || strings.Contains(string(r.body), expected) {
				t.Errorf("refusal leaks the secret or the expected signature: %s", r.body)
			}
			if string(r.env.Data) != "null" {
				t.Errorf("refusal data = %s, want null", r.env.Data)
			}
			if st := srv.Stats(); st.Refused != 1 || st.BusinessErrors != 0 {
				t.Errorf("Stats.Refused = %d, BusinessErrors = %d, want 1 and 0", st.Refused, st.BusinessErrors)
			}
		})
	}
}

func TestAuthAcceptsWithoutUserID(t *testing.T) {
	srv := start(t, sandbox.Options{})
	req := signed(t, http.MethodGet, queryURL(srv.URL, sandbox.SeedRefundOnly), nil)
	req.Header.Del(pandapon.HeaderUserID)
	wantCode(t, send(t, req), sandbox.CodeSuccess)
}

func TestAuthRefusesReplayedNonce(t *testing.T) {
	srv := start(t, sandbox.Options{})
	first := signed(t, http.MethodGet, queryURL(srv.URL, sandbox.SeedRefundOnly), nil)
	wantCode(t, send(t, first), sandbox.CodeSuccess)

	replay := newRequest(t, t.Context(), http.MethodGet, queryURL(srv.URL, sandbox.SeedRefundOnly), nil)
	replay.Header = first.Header.Clone()
	r := send(t, replay)
	wantCode(t, r, sandbox.CodeUnauthorized)
	if !strings.Contains(r.env.Msg, "already used") {
		t.Errorf("replay refused with %q, want it to say the nonce was already used", r.env.Msg)
	}

	// A fresh signature for the same call is accepted.
	wantCode(t, query(t, srv.URL, sandbox.SeedRefundOnly), sandbox.CodeSuccess)
}

func TestAuthNonceOfRefusedRequestIsNotConsumed(t *testing.T) {
	srv := start(t, sandbox.Options{})
	req := signed(t, http.MethodGet, queryURL(srv.URL, sandbox.SeedRefundOnly), nil)
	good := req.Header.Get(pandapon.HeaderSignature)
	req.Header.Set(pandapon.HeaderSignature, strings.Repeat("0", 32))
	wantCode(t, send(t, req), sandbox.CodeUnauthorized)

	retry := newRequest(t, t.Context(), http.MethodGet, queryURL(srv.URL, sandbox.SeedRefundOnly), nil)
	retry.Header = req.Header.Clone()
	retry.Header.Set(pandapon.HeaderSignature, good)
	wantCode(t, send(t, retry), sandbox.CodeSuccess)
}

func TestAuthTimestampUnitSeconds(t *testing.T) {
	srv := start(t, sandbox.Options{TimestampUnit: pandapon.Seconds})
	secs := creds
	secs.TimestampUnit = pandapon.Seconds

	req := newRequest(t, t.Context(), http.MethodGet, queryURL(srv.URL, sandbox.SeedRefundOnly), nil)
	secs.SignRequest(req.Header, time.Now())
	if ts := req.Header.Get(pandapon.HeaderTimestamp); len(ts) != 10 {
		t.Fatalf("seconds timestamp %q is not 10 digits", ts)
	}
	wantCode(t, send(t, req), sandbox.CodeSuccess)

	// A millisecond timestamp is far in the future when read as seconds.
	r := query(t, srv.URL, sandbox.SeedRefundOnly)
	wantCode(t, r, sandbox.CodeUnauthorized)
	if !strings.Contains(r.env.Msg, "read as milliseconds it would be in range") {
		t.Errorf("ms timestamp refused with %q, want a hint about the unit", r.env.Msg)
	}
}

func TestAuthClockSkewLimitIsInclusive(t *testing.T) {
	now := time.UnixMilli(1715669977082)
	srv := start(t, sandbox.Options{Now: func() time.Time { return now }})
	for _, tt := range []struct {
		skew time.Duration
		want int
	}{
		{-pandapon.MaxClockSkew, sandbox.CodeSuccess},
		{pandapon.MaxClockSkew, sandbox.CodeSuccess},
		{-pandapon.MaxClockSkew - time.Millisecond, sandbox.CodeUnauthorized},
		{pandapon.MaxClockSkew + time.Millisecond, sandbox.CodeUnauthorized},
	} {
		req := newRequest(t, t.Context(), http.MethodGet, queryURL(srv.URL, sandbox.SeedRefundOnly), nil)
		creds.SignRequest(req.Header, now.Add(tt.skew))
		r := send(t, req)
		if r.env.Code != tt.want {
			t.Errorf("skew %v: code %d (%s), want %d", tt.skew, r.env.Code, r.env.Msg, tt.want)
		}
	}
	r := func() response {
		req := newRequest(t, t.Context(), http.MethodGet, queryURL(srv.URL, sandbox.SeedRefundOnly), nil)
		creds.SignRequest(req.Header, now.Add(-812*time.Second))
		return send(t, req)
	}()
	want := "timestamp " + strconv.FormatInt(now.Add(-812*time.Second).UnixMilli(), 10) + " is 812 s behind server time, limit 600 s"
	if r.env.Msg != want {
		t.Errorf("stale timestamp message\n got %q\nwant %q", r.env.Msg, want)
	}
}

func TestAuthCustomCredentials(t *testing.T) {
	srv := start(t, sandbox.Options{AccessKey: "58c0201dfdf148eca63cbf6bb5e7cf03", AccessSecret: "s3cr3t"})
	wantCode(t, query(t, srv.URL, sandbox.SeedRefundOnly), sandbox.CodeUnauthorized)

	req := newRequest(t, t.Context(), http.MethodGet, queryURL(srv.URL, sandbox.SeedRefundOnly), nil)
	pandapon.Credentials{AccessKey: "58c0201dfdf148eca63cbf6bb5e7cf03", AccessSecret: "s3cr3t"}.SignRequest(req.Header, time.Now())
	wantCode(t, send(t, req), sandbox.CodeSuccess)
}
