package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pandabridge/pandabridge/events"
	"github.com/pandabridge/pandabridge/internal/testkit"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
	"github.com/pandabridge/pandabridge/topology"
)

// bin holds the binaries built once for these tests.
var bin struct{ consumer, publisher string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pandabridge-bin-")
	if err != nil {
		panic(err)
	}
	bin.consumer = filepath.Join(dir, "consumer")
	bin.publisher = filepath.Join(dir, "publisher")
	for path, pkg := range map[string]string{bin.consumer: ".", bin.publisher: "../publisher"} {
		out, err := exec.Command("go", "build", "-o", path, pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// process is a running binary whose output is collected line by line.
type process struct {
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

// baseEnv is a minimal environment: nothing of the developer's leaks in.
func baseEnv(kv ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}, kv...)
}

func startProcess(t *testing.T, env []string, path string, args ...string) *process {
	t.Helper()
	p := &process{t: t, cmd: exec.Command(path, args...), done: make(chan struct{})}
	p.cmd.Env = env
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
	}()
	go func() { _ = p.cmd.Wait(); w.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(path), strings.Join(p.output(), "\n"))
		}
	})
	return p
}

func (p *process) output() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLine waits for an output line matching re and returns its submatches.
func (p *process) waitLine(re string) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	testkit.Eventually(p.t, 20*time.Second, func() bool {
		for _, l := range p.output() {
			if m = rx.FindStringSubmatch(l); m != nil {
				return true
			}
		}
		return false
	}, "a line matching %q", re)
	return m
}

// stop sends sig and returns the exit code.
func (p *process) stop(sig os.Signal) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("%s did not exit within 30 s of %s", filepath.Base(p.cmd.Path), sig)
	}
	return p.cmd.ProcessState.ExitCode()
}

func TestConfigErrorsNameTheVariableAndHideTheSecret(t *testing.T) {
	const secret = "do-not-print-this-secret-value"
	valid := []string{"NATS_URL=nats://127.0.0.1:1", "PANDAPON_ACCESS_KEY=key", "PANDAPON_ACCESS_SECRET=" + secret}
	with := func(over ...string) []string {
		env := append([]string(nil), valid...)
		for _, o := range over {
			name := strings.SplitN(o, "=", 2)[0]
			kept := env[:0]
			for _, e := range env {
				if !strings.HasPrefix(e, name+"=") {
					kept = append(kept, e)
				}
			}
			env = kept
			if strings.Contains(o, "=") {
				env = append(env, o)
			}
		}
		return env
	}
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"no NATS_URL", with("NATS_URL"), "NATS_URL is required"},
		{"no access key", with("PANDAPON_ACCESS_KEY"), "PANDAPON_ACCESS_KEY is required"},
		{"no secret", with("PANDAPON_ACCESS_SECRET"), "PANDAPON_ACCESS_SECRET or PANDAPON_ACCESS_SECRET_FILE is required"},
		{"both secrets", with("PANDAPON_ACCESS_SECRET_FILE=/etc/hostname"), "only one of PANDAPON_ACCESS_SECRET and PANDAPON_ACCESS_SECRET_FILE"},
		{"secret file missing", with("PANDAPON_ACCESS_SECRET", "PANDAPON_ACCESS_SECRET_FILE=/nonexistent/secret"), `PANDAPON_ACCESS_SECRET_FILE="/nonexistent/secret": no such file`},
		{"concurrency not a number", with("PANDABRIDGE_CONCURRENCY=lots"), `PANDABRIDGE_CONCURRENCY="lots": not a valid integer`},
		{"concurrency zero", with("PANDABRIDGE_CONCURRENCY=0"), "PANDABRIDGE_CONCURRENCY=0: must be at least 1"},
		{"timestamp unit", with("PANDAPON_TIMESTAMP_UNIT=us"), `PANDAPON_TIMESTAMP_UNIT="us": want ms or s`},
		{"subject prefix", with("PANDABRIDGE_SUBJECT_PREFIX=a.b"), `PANDABRIDGE_SUBJECT_PREFIX="a.b"`},
		{"ack wait unit", with("PANDABRIDGE_ACK_WAIT=30"), `PANDABRIDGE_ACK_WAIT="30": not a valid duration`},
		{"log level", with("PANDABRIDGE_LOG_LEVEL=loud"), `PANDABRIDGE_LOG_LEVEL="loud"`},
		{"base url", with("PANDAPON_BASE_URL=api.pandapon.com"), `PANDAPON_BASE_URL="api.pandapon.com"`},
		{"base url with a query", with("PANDAPON_BASE_URL=https://api.pandapon.com?x=1"), `PANDAPON_BASE_URL="https://api.pandapon.com?x=1": want https://host[:port][/prefix], without a query or fragment`},
		{"NATS URL does not parse", with("NATS_URL=nats://a:4222,nats://b:42x22"), `NATS_URL entry 2 does not parse as a URL`},
		{"heap floor unit", with("PANDABRIDGE_GC_HEAP_FLOOR=64MB"), `PANDABRIDGE_GC_HEAP_FLOOR="64MB": not a valid size`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin.consumer)
			cmd.Env = baseEnv(tc.env...)
			out, err := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Fatalf("exit %d (%v), want 2; output:\n%s", code, err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("output %q does not say %q", out, tc.want)
			}
			if strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
				t.Errorf("want one message line, got:\n%s", out)
			}
			if strings.Contains(string(out), secret) {
				t.Errorf("the secret appears in the output: %s", out)
			}
		})
	}
}

// TestURLPasswordsAreNotShownWhenAURLIsBad: a URL refused at start is named
// with what is wrong with it, and without its password.
func TestURLPasswordsAreNotShownWhenAURLIsBad(t *testing.T) {
	for _, c := range []struct{ env, password, want string }{
		{"NATS_URL=nats://alice:natspw-secret@127.0.0.1:42x22", "natspw-secret", `NATS_URL entry 1 does not parse as a URL`},
		{"NATS_URL=nats://natstok/en-secret@127.0.0.1:4222", "en-secret", `NATS_URL entry 1 has an '@' after its host: percent-encode`},
		{"PANDAPON_BASE_URL=ftp://bob:pwleak123@host", "pwleak123", `PANDAPON_BASE_URL="ftp://bob:[REDACTED]@host": want https://host[:port]`},
	} {
		cmd := exec.Command(bin.consumer)
		cmd.Env = baseEnv("NATS_URL=nats://127.0.0.1:4222", "PANDAPON_ACCESS_KEY=k", "PANDAPON_ACCESS_SECRET=s",
			"PANDABRIDGE_HTTP_ADDR=127.0.0.1:0", c.env)
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Errorf("%s: exit %d, want 2 (a configuration error); output:\n%s", c.env, code, out)
		}
		if strings.Contains(string(out), c.password) {
			t.Errorf("%s: the password appears in the output:\n%s", c.env, out)
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("%s: the output does not say %q:\n%s", c.env, c.want, out)
		}
	}
}

func TestConsumerProcessEndToEndNeverLogsTheSecret(t *testing.T) {
	const secret = "S3cret-value-that-must-never-be-logged"
	ns := testkit.NATS(t)
	sb := testkit.Sandbox(t, sandbox.Options{AccessKey: "prod-key", AccessSecret: secret, GeneratedRefunds: 10})
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, baseEnv(
		"NATS_URL="+ns.URL, "PANDAPON_BASE_URL="+sb.URL, "PANDAPON_ACCESS_KEY=prod-key",
		"PANDAPON_ACCESS_SECRET_FILE="+secretFile, "PANDABRIDGE_HTTP_ADDR=127.0.0.1:0",
		"PANDABRIDGE_LOG_LEVEL=debug", "PANDABRIDGE_BACKOFF_MIN=10ms", "PANDABRIDGE_BACKOFF_MAX=50ms",
		"PANDAPON_MAX_RETRIES=1",
	), bin.consumer)
	addr := p.waitLine(`"msg":"serving health and metrics","addr":"([^"]+)"`)[1]
	p.waitLine(`"msg":"consuming"`)
	base := "http://" + addr
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		if code := httpStatus(t, base+path); code != want {
			t.Errorf("GET %s = %d, want %d", path, code, want)
		}
	}

	_, js := testkit.Connect(t, ns.URL)
	topo := testkit.EnsureStreams(t, js)
	outputs := testkit.Collect(t, js, topo.OutputStream, topo.Subjects.Outputs()...)
	dlq := testkit.Collect(t, js, topo.DLQStream, topo.Subjects.DeadLetters())

	flaky := sandbox.GeneratedRefundID(2)
	sb.SetRefundFaults(flaky, sandbox.Faults{ServerErrorRate: 1})
	ok := testkit.Lookup(sandbox.SeedRefundOnly)
	shipped := testkit.ReturnShipped(sandbox.SeedAwaitingReturn, "SF", "SF0001")
	unknown := testkit.Lookup("987654321")
	retried := testkit.Lookup(flaky)
	testkit.Publish(t, js, ok)
	testkit.Publish(t, js, shipped)
	testkit.Publish(t, js, unknown)
	testkit.Publish(t, js, retried)
	bad := nats.NewMsg("pandapon.return.shipped")
	bad.Data = []byte("not an event")
	testkit.PublishMsg(t, js, bad)

	testkit.Eventually(t, 10*time.Second, func() bool { return sb.Stats().FaultsInjected[sandbox.FaultServerError] >= 2 }, "retries of the failing refund")
	sb.SetRefundFaults(flaky, sandbox.Faults{})
	outputs.WaitN(t, 4, 20*time.Second)
	dlq.WaitN(t, 1, 10*time.Second)

	types := map[string]int{}
	for _, e := range outputs.Events(t) {
		types[e.Type()]++
	}
	if types[events.TypeRefundUpdated] != 3 || types[events.TypeRefundRequestFailed] != 1 {
		t.Errorf("outputs by type %v, want 3 refund.updated and 1 refund.request.failed", types)
	}

	metrics := httpBody(t, base+"/metrics")
	for _, want := range []string{
		`pandabridge_events_consumed_total{outcome="published",type="refund.lookup.requested"} 3`,
		`pandabridge_events_consumed_total{outcome="published",type="return.shipped"} 1`,
		`pandabridge_events_dead_lettered_total{kind="invalid",type="unknown"} 1`,
		`pandabridge_events_published_total{type="refund.updated"} 3`,
		`pandabridge_events_published_total{type="refund.request.failed"} 1`,
		`pandabridge_pandapon_requests_total{code="404",endpoint="GET /open/order/refund/query",outcome="business_error"} 1`,
		`pandabridge_pandapon_requests_total{code="",endpoint="POST /open/order/refund/render/submit/logistics",outcome="success"} 1`,
		`pandabridge_pandapon_retries_total{endpoint="GET /open/order/refund/query",reason="http_5xx"}`,
		`pandabridge_pandapon_request_duration_seconds_count{endpoint="GET /open/order/refund/query",outcome="success"} 3`,
		`pandabridge_pandapon_circuit_state 0`,
		`pandabridge_build_info{binary="consumer"`,
		`pandabridge_consumer_pending_messages`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	lines := p.output()
	if !strings.Contains(strings.Join(lines, "\n"), `"msg":"shut down"`) {
		t.Error("no shut down line after SIGTERM")
	}
	for _, l := range lines {
		if strings.Contains(l, secret) {
			t.Errorf("log line contains the secret: %s", l)
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Errorf("log line is not JSON: %s", l)
			continue
		}
		if id, ok := rec["event_id"].(string); ok && id != "" && rec["event_type"] != "unknown" {
			if rec["event_type"] == nil || rec["refund_id"] == nil {
				t.Errorf("log line about event %s lacks event_type or refund_id: %s", id, l)
			}
		}
	}
}

// TestGCHeapFloor: with PANDABRIDGE_GC_HEAP_FLOOR the running consumer's
// GOGC (go_gc_gogc_percent on /metrics) rises above 100 once a collection
// has ended; with GOGC also set, the operator's GOGC stays and the log says
// why.
func TestGCHeapFloor(t *testing.T) {
	ns := testkit.NATS(t)
	sb := testkit.Sandbox(t, sandbox.Options{GeneratedRefunds: 50})
	_, js := testkit.Connect(t, ns.URL)
	for _, tc := range []struct {
		name, gogc string
		raised     bool
	}{{"floor", "", true}, {"floor and GOGC", "100", false}} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := "gcfloor" + strconv.FormatBool(tc.raised)
			env := []string{"NATS_URL=" + ns.URL, "PANDAPON_BASE_URL=" + sb.URL,
				"PANDAPON_ACCESS_KEY=" + sandbox.DefaultAccessKey, "PANDAPON_ACCESS_SECRET=" + sandbox.DefaultAccessSecret,
				"PANDABRIDGE_HTTP_ADDR=127.0.0.1:0", "PANDABRIDGE_SUBJECT_PREFIX=" + prefix, "PANDAPON_RATE_LIMIT=100000",
				"PANDABRIDGE_GC_HEAP_FLOOR=64MiB"}
			if tc.gogc != "" {
				env = append(env, "GOGC="+tc.gogc)
			}
			p := startProcess(t, baseEnv(env...), bin.consumer)
			addr := p.waitLine(`"msg":"serving health and metrics","addr":"([^"]+)"`)[1]
			p.waitLine(`"msg":"consuming"`)
			if !tc.raised {
				p.waitLine(`"msg":"GOGC is set: PANDABRIDGE_GC_HEAP_FLOOR is not applied","GOGC":"100"`)
			}
			// Each handled lookup allocates some kB: publish batches until
			// the floor shows (it is set at the end of a collection), or,
			// with GOGC set, until two collections since "consuming" have
			// ended without it.
			gogc := func() (percent, cycles float64) {
				for _, line := range strings.Split(httpBody(t, "http://"+addr+"/metrics"), "\n") {
					if v, ok := strings.CutPrefix(line, "go_gc_gogc_percent "); ok {
						percent, _ = strconv.ParseFloat(v, 64)
					}
					if v, ok := strings.CutPrefix(line, "go_gc_duration_seconds_count "); ok {
						cycles, _ = strconv.ParseFloat(v, 64)
					}
				}
				return percent, cycles
			}
			percent, startCycles := gogc()
			cycles := startCycles
			done := func() bool {
				if tc.raised {
					return percent > 100
				}
				return cycles >= startCycles+2
			}
			for i := 0; !done() && i < 100; i++ {
				for k := range 100 {
					e := testkit.Lookup(sandbox.GeneratedRefundID(k % 50))
					msg, err := events.EncodeNATS(topology.New(prefix).Subjects.Of(events.TypeRefundLookupRequested), e)
					if err != nil {
						t.Fatal(err)
					}
					testkit.PublishMsg(t, js, msg)
				}
				percent, cycles = gogc()
			}
			if !done() {
				t.Errorf("after 10,000 lookups and %v collections go_gc_gogc_percent is %v; want raised above 100: %v",
					cycles-startCycles, percent, tc.raised)
			}
			if !tc.raised && percent != 100 {
				t.Errorf("with GOGC=100 set, go_gc_gogc_percent is %v after %v collections, want 100", percent, cycles-startCycles)
			}
			if code := p.stop(syscall.SIGTERM); code != 0 {
				t.Errorf("exit code %d after SIGTERM, want 0", code)
			}
		})
	}
}

func TestDevModeQuickStart(t *testing.T) {
	port := freePort(t)
	dev := startProcess(t, baseEnv("PANDABRIDGE_HTTP_ADDR=127.0.0.1:0"), bin.consumer, "-dev", "-dev-nats-port", fmt.Sprint(port))
	dev.waitLine(`DEV MODE`)
	// The hint names the port when it is not the publisher's default.
	dev.waitLine(fmt.Sprintf(`DEV MODE: try it" lookup="NATS_URL=nats://127\.0\.0\.1:%d go run \./cmd/publisher lookup --refund-id 110002687818"`, port))
	dev.waitLine(`msg=consuming`)
	natsURL := fmt.Sprintf("NATS_URL=nats://127.0.0.1:%d", port)

	lookup := exec.Command(bin.publisher, "lookup", "--refund-id", "110002687818")
	lookup.Env = baseEnv(natsURL)
	if out, err := lookup.CombinedOutput(); err != nil {
		t.Fatalf("publisher lookup: %v\n%s", err, out)
	}
	watch := exec.Command(bin.publisher, "watch", "--from-start", "--count", "1")
	watch.Env = baseEnv(natsURL)
	out, err := watch.Output()
	if err != nil {
		t.Fatalf("publisher watch: %v", err)
	}
	var ev map[string]any
	if err := json.Unmarshal(out, &ev); err != nil {
		t.Fatalf("watch printed %q: %v", out, err)
	}
	if ev["type"] != "refund.updated" || ev["subject"] != "110002687818" {
		t.Errorf("watch printed %s", out)
	}
	dev.waitLine(`refund\.updated: refund 110002687818 is 100 \(refund succeeded\)`)
	if code := dev.stop(os.Interrupt); code != 0 {
		t.Errorf("exit code %d after SIGINT, want 0", code)
	}
}

// TestDevModeSaysTheNATSPortIsTaken: the embedded server's port in use
// stops the dev mode with the cause.
func TestDevModeSaysTheNATSPortIsTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	cmd := exec.Command(bin.consumer, "-dev", "-dev-nats-port", fmt.Sprint(port))
	cmd.Env = baseEnv("PANDABRIDGE_HTTP_ADDR=127.0.0.1:0")
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit %d, want 1; output:\n%s", code, out)
	}
	if want := fmt.Sprintf("cannot listen on 127.0.0.1:%d", port); !strings.Contains(string(out), want) || !strings.Contains(string(out), "address already in use") {
		t.Errorf("the output does not say %q with the cause:\n%s", want, out)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestNodevBuildHasNoDevMode: the production image's build (-tags=nodev)
// links no NATS server, and its -dev says so instead of starting anything.
func TestNodevBuildHasNoDevMode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the consumer")
	}
	nodev := filepath.Join(t.TempDir(), "consumer")
	if out, err := exec.Command("go", "build", "-tags=nodev", "-o", nodev, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags=nodev: %v\n%s", err, out)
	}
	const server = "github.com/nats-io/nats-server/v2"
	for bin, want := range map[string]bool{bin.consumer: true, nodev: false} {
		out, err := exec.Command("go", "version", "-m", bin).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(out, []byte(server)); got != want {
			t.Errorf("%s links %s: %v, want %v", bin, server, got, want)
		}
	}
	cmd := exec.Command(nodev, "-dev")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("nodev consumer -dev: %v, want exit status 2; stderr:\n%s", err, &stderr)
	}
	if !strings.Contains(stderr.String(), "built with -tags nodev") {
		t.Errorf("stderr does not explain the missing -dev mode:\n%s", &stderr)
	}
}
