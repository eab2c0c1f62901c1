package webhooks_test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pandabridge/pandabridge/webhooks"
)

// The Standard Webhooks reference test vector (as used by the reference
// libraries): our signatures must be the ones every receiver library
// computes.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustSecret(t *testing.T, s string) webhooks.Secret {
	t.Helper()
	sec, err := webhooks.ParseSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

func TestSignMatchesTheStandardWebhooksReferenceVector(t *testing.T) {
	got := webhooks.Sign(mustSecret(t, vectorSecret), vectorID, vectorTimestamp, []byte(vectorBody))
	if got != vectorSignature {
		t.Fatalf("signature = %s, want the reference %s: receivers using a Standard Webhooks library would refuse us", got, vectorSignature)
	}
}

func signedHeader(secret webhooks.Secret, id string, at time.Time, body []byte) http.Header {
	h := http.Header{}
	webhooks.SetHeaders(h, secret, id, at, body)
	return h
}

func TestVerifyAcceptsAValidSignature(t *testing.T) {
	sec := mustSecret(t, vectorSecret)
	v := webhooks.NewVerifier([]webhooks.Secret{sec})
	body := []byte(`{"a":1}`)
	id, err := v.Verify(signedHeader(sec, "msg_1", time.Now(), body), body)
	if err != nil || id != "msg_1" {
		t.Fatalf("Verify = %q, %v; want msg_1, nil", id, err)
	}
}

func TestVerifyAcceptsAnyOfSeveralSecretsAndSignatures(t *testing.T) {
	old, cur := mustSecret(t, "old-shared-password-1234"), mustSecret(t, vectorSecret)
	v := webhooks.NewVerifier([]webhooks.Secret{old, cur})
	body := []byte("x")
	now := time.Now()
	h := signedHeader(cur, "msg_2", now, body)
	// A rotation: the sender signs with a secret we do not know and ours.
	unknown := webhooks.Sign(mustSecret(t, "some-other-secret-xyz"), "msg_2", now.Unix(), body)
	h.Set(webhooks.HeaderSignature, unknown+" "+h.Get(webhooks.HeaderSignature))
	if _, err := v.Verify(h, body); err != nil {
		t.Fatalf("one valid signature among several must pass: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	sec := mustSecret(t, vectorSecret)
	now := time.Unix(1_700_000_000, 0)
	v := webhooks.NewVerifier([]webhooks.Secret{sec}, webhooks.WithClock(func() time.Time { return now }))
	body := []byte(`{"refundId":"1"}`)
	for _, tc := range []struct {
		name   string
		header func() http.Header
		body   []byte
		want   error
	}{
		{"no headers", func() http.Header { return http.Header{} }, body, webhooks.ErrMissingHeaders},
		{"no signature", func() http.Header {
			h := signedHeader(sec, "m", now, body)
			h.Del(webhooks.HeaderSignature)
			return h
		}, body, webhooks.ErrMissingHeaders},
		{"body changed", func() http.Header { return signedHeader(sec, "m", now, body) }, []byte(`{"refundId":"2"}`), webhooks.ErrSignature},
		{"id changed", func() http.Header {
			h := signedHeader(sec, "m", now, body)
			h.Set(webhooks.HeaderID, "m2")
			return h
		}, body, webhooks.ErrSignature},
		{"wrong secret", func() http.Header { return signedHeader(mustSecret(t, "not-the-secret-at-all"), "m", now, body) }, body, webhooks.ErrSignature},
		{"stale timestamp", func() http.Header { return signedHeader(sec, "m", now.Add(-6*time.Minute), body) }, body, webhooks.ErrTimestamp},
		{"future timestamp", func() http.Header { return signedHeader(sec, "m", now.Add(6*time.Minute), body) }, body, webhooks.ErrTimestamp},
		{"timestamp not a number", func() http.Header {
			h := signedHeader(sec, "m", now, body)
			h.Set(webhooks.HeaderTimestamp, "yesterday")
			return h
		}, body, webhooks.ErrTimestamp},
		{"timestamp in milliseconds", func() http.Header {
			h := signedHeader(sec, "m", now, body)
			h.Set(webhooks.HeaderTimestamp, strconv.FormatInt(now.UnixMilli(), 10))
			return h
		}, body, webhooks.ErrTimestamp},
		{"unknown scheme", func() http.Header {
			h := signedHeader(sec, "m", now, body)
			h.Set(webhooks.HeaderSignature, strings.Replace(h.Get(webhooks.HeaderSignature), "v1,", "v2,", 1))
			return h
		}, body, webhooks.ErrSignature},
		{"signature not base64", func() http.Header {
			h := signedHeader(sec, "m", now, body)
			h.Set(webhooks.HeaderSignature, "v1,!!!")
			return h
		}, body, webhooks.ErrSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.header(), tc.body)
			if !errors.Is(err, tc.want) || !errors.Is(err, webhooks.ErrVerification) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyRefusesAReplayOfAnAcceptedID(t *testing.T) {
	sec := mustSecret(t, vectorSecret)
	v := webhooks.NewVerifier([]webhooks.Secret{sec})
	body := []byte("b")
	h := signedHeader(sec, "msg_r", time.Now(), body)
	if _, err := v.Verify(h, body); err != nil {
		t.Fatal(err)
	}
	// Not yet remembered (the request failed, say): a retry passes.
	if _, err := v.Verify(h, body); err != nil {
		t.Fatalf("a retry before Remember must pass: %v", err)
	}
	v.Remember("msg_r")
	if _, err := v.Verify(h, body); !errors.Is(err, webhooks.ErrReplayed) {
		t.Fatalf("replay of an accepted id: Verify = %v, want ErrReplayed", err)
	}
}

func TestReplayCacheIsBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	v := webhooks.NewVerifier(nil, webhooks.WithMaxRemembered(100), webhooks.WithClock(func() time.Time { return now }))
	for i := range 1000 {
		v.Remember(fmt.Sprint("id-", i))
	}
	if n := v.Remembered(); n > 100 {
		t.Fatalf("the cache holds %d ids, want at most 100", n)
	}
	// Expired entries go away.
	now = now.Add(time.Hour)
	v.Remember("fresh")
	if n := v.Remembered(); n != 1 {
		t.Fatalf("after the tolerance the cache holds %d ids, want only the fresh one", n)
	}
}

func TestParseSecret(t *testing.T) {
	if _, err := webhooks.ParseSecret("  "); err == nil {
		t.Error("an empty secret must be refused")
	}
	if _, err := webhooks.ParseSecret("whsec_%%%"); err == nil || strings.Contains(err.Error(), "%%%") {
		t.Errorf("invalid base64: err = %v; want an error that does not quote the secret", err)
	}
	if _, err := webhooks.ParseSecret("whsec_c2hvcnQ="); err == nil {
		t.Error("a 5-byte whsec_ secret must be refused")
	}
	s := mustSecret(t, "raw-password-used-as-is")
	if fmt.Sprint(s) != "[REDACTED]" || fmt.Sprintf("%#v", s) == "" || strings.Contains(fmt.Sprintf("%#v %v %+v", s, s, s), "raw-password") {
		t.Errorf("a Secret printed shows its key: %v / %#v", s, s)
	}
	// Raw and whsec_ forms of the same bytes sign alike.
	raw := mustSecret(t, "0123456789abcdef0123")
	enc := mustSecret(t, "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM=")
	if webhooks.Sign(raw, "i", 1, nil) != webhooks.Sign(enc, "i", 1, nil) {
		t.Error("raw secret and its whsec_ encoding sign differently")
	}
}

func TestReadSecretsFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secrets")
	os.WriteFile(p, []byte("# rotation\n"+vectorSecret+"\n\n  another-raw-secret-123  \n"), 0o600)
	s, err := webhooks.ReadSecretsFile(p)
	if err != nil || len(s) != 2 {
		t.Fatalf("ReadSecretsFile = %d secrets, %v; want 2", len(s), err)
	}
	os.WriteFile(p, []byte("# nothing\n"), 0o600)
	if _, err := webhooks.ReadSecretsFile(p); err == nil {
		t.Error("a file without secrets must be refused")
	}
	os.WriteFile(p, []byte("whsec_!!notbase64!!\n"), 0o600)
	_, err = webhooks.ReadSecretsFile(p)
	if err == nil || !strings.Contains(err.Error(), "#1") || strings.Contains(err.Error(), "notbase64") {
		t.Errorf("bad secret: err = %v; want one naming the line, not the secret", err)
	}
}
