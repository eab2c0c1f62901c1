package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/kelseyhightower/envconfig"

	"github.com/pandabridge/pandabridge/callbacks"
	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/topology"
	"github.com/pandabridge/pandabridge/webhooks"
)

const (
	serveToken    = "ingest-token-0123456789abcdef"
	serveSecret   = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	callbackToken = "callback-token-0123456789abcdef"
)

// cleanServeEnv unsets every variable of Config and ServeConfig.
func cleanServeEnv(t *testing.T) {
	t.Helper()
	cleanEnv(t)
	st := reflect.TypeOf(ServeConfig{})
	for i := range st.NumField() {
		k := st.Field(i).Tag.Get("envconfig")
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// serving is a running "publisher serve".
type serving struct {
	base   string
	stderr *testkit.SyncBuffer
	cancel context.CancelFunc
	code   chan int
}

// runServe builds the cli as run does and calls serve, bounded by 60 s.
func runServe(t *testing.T, ctx context.Context, stderr io.Writer) int {
	t.Helper()
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		t.Fatal(err)
	}
	c := &cli{cfg: cfg, stdin: strings.NewReader(""), stdout: io.Discard, stderr: stderr, topo: topology.New(cfg.SubjectPrefix)}
	return c.serve(ctx, nil)
}

// startServe runs serve in the background and waits for its listener.
func startServe(t *testing.T) *serving {
	t.Helper()
	t.Setenv("PANDABRIDGE_INGEST_ADDR", "127.0.0.1:0")
	t.Setenv("PANDABRIDGE_LOG_FORMAT", "json")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	s := &serving{stderr: &testkit.SyncBuffer{}, cancel: cancel, code: make(chan int, 1)}
	go func() { s.code <- runServe(t, ctx, s.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.code:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	testkit.Eventually(t, 10*time.Second, func() bool {
		for line := range strings.Lines(s.stderr.String()) {
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "serving" {
				s.base = "http://" + l.Addr
				return true
			}
		}
		return false
	}, "serve to listen (stderr: %s)", s.stderr)
	return s
}

func (s *serving) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(s.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// stop cancels serve and returns its exit code.
func (s *serving) stop(t *testing.T) int {
	t.Helper()
	s.cancel()
	select {
	case code := <-s.code:
		s.code <- code
		return code
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s")
		return -1
	}
}

func TestServeIngestCallbacksAndWebhooksEndToEnd(t *testing.T) {
	cleanServeEnv(t)
	js := setup(t) // NATS_URL points at an embedded server

	var mu sync.Mutex
	got := map[string]int{}
	var verifyErr error
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sec, _ := webhooks.ParseSecret(serveSecret)
		_, err := webhooks.NewVerifier([]webhooks.Secret{sec}).Verify(r.Header, body)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			verifyErr = err
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		got[r.Header.Get("webhook-id")]++
	}))
	t.Cleanup(receiver.Close)
	secretFile := writeFile(t, "target.secret", serveSecret+"\n")
	t.Setenv("PANDABRIDGE_INGEST_TOKENS_FILE", writeFile(t, "tokens", "# ERP\n"+serveToken+"\n"))
	t.Setenv("PANDABRIDGE_INGEST_WEBHOOK_SECRETS_FILE", writeFile(t, "secrets", serveSecret+"\n"))
	t.Setenv("PANDABRIDGE_CALLBACK_TOKEN_FILE", writeFile(t, "callback", callbackToken+"\n"))
	t.Setenv("PANDABRIDGE_WEBHOOK_TARGETS_FILE", writeFile(t, "targets.json",
		fmt.Sprintf(`[{"name":"erp","url":%q,"secretFile":%q,"backoffMin":"10ms","backoffMax":"50ms"}]`, receiver.URL, secretFile)))

	srv := startServe(t)
	if code, _ := srv.get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { code, _ := srv.get(t, "/readyz"); return code == http.StatusOK }, "/readyz 200")

	// Ingest with a bearer token.
	id := uuid.NewString()
	req, _ := http.NewRequest(http.MethodPost, srv.base+"/events", strings.NewReader(`{"refundId":"110002687818"}`))
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-id", id)
	req.Header.Set("ce-source", "erp")
	req.Header.Set("ce-type", events.TypeRefundLookupRequested)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+serveToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /events = %d, want 202", resp.StatusCode)
	}
	// Without credentials: 401.
	resp, err = http.Post(srv.base+"/events", events.ContentTypeStructured, strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unauthenticated POST /events = %d, want 401", resp.StatusCode)
	}

	// A PandaPon callback.
	cb := `{"messageType":9,"messageBody":"{\"refundId\":\"110000303674\"}","messagePlatform":0,"timestamp":1}`
	resp, err = http.Post(srv.base+"/pandapon/callback/"+callbackToken, "application/json", strings.NewReader(cb))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("callback = %d, want 200", resp.StatusCode)
	}
	topo := topology.New("pandapon")
	inputs := streamMsgs(t, js, topo.InputStream)
	if len(inputs) != 2 || decodeInput(t, inputs[1]).RefundID() != "110000303674" {
		t.Fatalf("input stream holds %d events; want the ingested one and the callback's lookup", len(inputs))
	}
	if raw := streamMsgs(t, js, callbacks.StreamName(topo.Subjects)); len(raw) != 1 || string(raw[0].Data) != cb {
		t.Fatalf("raw callback not stored byte for byte")
	}

	// A refund.updated reaches the webhook target.
	out := event.New()
	out.SetID(uuid.NewString())
	out.SetSource("pandabridge")
	out.SetType(events.TypeRefundUpdated)
	out.SetSubject("110000303674")
	out.SetDataContentType(events.ContentTypeJSON)
	out.DataEncoded = []byte(`{"refundOrderAggregate":{"refundOrder":{"refundId":"110000303674","refundStatus":20}}}`)
	msg, err := events.EncodeNATS(topo.Subjects.Of(events.TypeRefundUpdated), out)
	if err != nil {
		t.Fatal(err)
	}
	testkit.PublishMsg(t, js, msg)
	testkit.Eventually(t, 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return got[out.ID()] == 1 }, "the webhook delivery")
	mu.Lock()
	if verifyErr != nil {
		t.Errorf("a delivery failed verification: %v", verifyErr)
	}
	mu.Unlock()

	_, metrics := srv.get(t, "/metrics")
	for _, name := range []string{"pandabridge_ingest_requests_total", "pandabridge_callbacks_received_total",
		"pandabridge_webhook_deliveries_total", "pandabridge_build_info", "go_goroutines"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if code := srv.stop(t); code != 0 {
		t.Fatalf("serve exited %d after cancellation, want 0\n%s", code, srv.stderr)
	}
	for _, secret := range []string{serveToken, callbackToken, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"} {
		if strings.Contains(srv.stderr.String(), secret) {
			t.Fatalf("the logs show a secret:\n%s", srv.stderr)
		}
	}
}

func TestServeNotReadyWhileNATSIsUnreachable(t *testing.T) {
	cleanServeEnv(t)
	t.Setenv("NATS_URL", closedPortURL(t))
	t.Setenv("PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED", "true")
	srv := startServe(t)
	if code, _ := srv.get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d, want 200 while alive", code)
	}
	if code, _ := srv.get(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d, want 503 while NATS is unreachable", code)
	}
	resp, err := http.Post(srv.base+"/events", events.ContentTypeStructured, strings.NewReader(
		`{"specversion":"1.0","id":"x1","source":"erp","type":"refund.lookup.requested","data":{"refundId":"1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("POST /events = %d while NATS is unreachable, want 503", resp.StatusCode)
	}
	if code := srv.stop(t); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

func TestServeConfigurationErrors(t *testing.T) {
	cleanServeEnv(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "s")
	os.WriteFile(secretFile, []byte(serveSecret), 0o600)
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"no authentication", nil, []string{"PANDABRIDGE_INGEST_TOKENS_FILE", "PANDABRIDGE_INGEST_WEBHOOK_SECRETS_FILE", "PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED"}},
		{"short token", map[string]string{"PANDABRIDGE_INGEST_TOKENS_FILE": writeFile(t, "t", "short\n")},
			[]string{"PANDABRIDGE_INGEST_TOKENS_FILE", "token #1"}},
		{"missing tokens file", map[string]string{"PANDABRIDGE_INGEST_TOKENS_FILE": filepath.Join(dir, "none")},
			[]string{"PANDABRIDGE_INGEST_TOKENS_FILE"}},
		{"bad secret", map[string]string{"PANDABRIDGE_INGEST_WEBHOOK_SECRETS_FILE": writeFile(t, "s2", "whsec_%%%%\n")},
			[]string{"PANDABRIDGE_INGEST_WEBHOOK_SECRETS_FILE", "#1"}},
		{"short callback token", map[string]string{"PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED": "true",
			"PANDABRIDGE_CALLBACK_TOKEN_FILE": writeFile(t, "c", "abc\n")}, []string{"PANDABRIDGE_CALLBACK_TOKEN_FILE"}},
		{"bad target", map[string]string{"PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED": "true",
			"PANDABRIDGE_WEBHOOK_TARGETS_FILE": writeFile(t, "targets.json", `[{"name":"erp","url":"http://x","secretFile":"`+secretFile+`","rateLimit":-1}]`)},
			[]string{"PANDABRIDGE_WEBHOOK_TARGETS_FILE", `target "erp"`, "rateLimit"}},
		{"bad duration", map[string]string{"PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED": "true", "PANDABRIDGE_CALLBACK_TIMEOUT": "soon"},
			[]string{"PANDABRIDGE_CALLBACK_TIMEOUT"}},
		{"bad max bytes", map[string]string{"PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED": "true", "PANDABRIDGE_INGEST_MAX_BYTES": "0"},
			[]string{"PANDABRIDGE_INGEST_MAX_BYTES"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanServeEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var stderr testkit.SyncBuffer
			code := runServe(t, context.Background(), &stderr)
			if code != 2 {
				t.Fatalf("exit %d, want 2\n%s", code, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr does not mention %q:\n%s", w, stderr.String())
				}
			}
			if strings.Contains(stderr.String(), "MfKQ9r8G") || strings.Contains(stderr.String(), "%%%%") {
				t.Errorf("stderr shows a secret:\n%s", stderr.String())
			}
		})
	}
}

func TestServeUsage(t *testing.T) {
	cleanServeEnv(t)
	var stderr testkit.SyncBuffer
	c := &cli{stderr: &stderr, stdout: io.Discard}
	if code := c.serve(context.Background(), []string{"extra"}); code != 2 || !strings.Contains(stderr.String(), "unexpected argument") {
		t.Fatalf("serve extra = %d\n%s", code, stderr.String())
	}
}
