package verify

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// cluster is an etcd and a kube-apiserver, both on 127.0.0.1, that live as
// long as the test.
type cluster struct {
	config *rest.Config
	dir    string
}

// startCluster starts etcd and kube-apiserver from binDir, waits until the
// API server is ready, and stops both at the end of the test. Their logs are
// in the test's temporary directory and printed when the test fails.
func startCluster(t *testing.T, binDir string) *cluster {
	t.Helper()
	dir := t.TempDir()

	etcdClient, etcdPeer := freePort(t), freePort(t)
	etcdURL := "http://127.0.0.1:" + etcdClient
	startProcess(t, dir, filepath.Join(binDir, "etcd"),
		"--name=verify",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls=http://127.0.0.1:"+etcdPeer,
		"--initial-advertise-peer-urls=http://127.0.0.1:"+etcdPeer,
		"--initial-cluster=verify=http://127.0.0.1:"+etcdPeer,
		"--unsafe-no-fsync", // a throw-away store: speed over durability
		"--log-level=warn",
	)
	waitFor(t, 30*time.Second, "etcd "+etcdURL+"/health", func() error {
		return get(http.DefaultClient, etcdURL+"/health", "")
	})

	saKey, saPub := serviceAccountKeys(t, dir)
	const token = "verify-token"
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+",verify,verify,system:masters\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	startProcess(t, dir, filepath.Join(binDir, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+port,
		"--cert-dir="+filepath.Join(dir, "certs"), // self-signed serving certificate
		// Nothing keeps the kubernetes Service's endpoints up to date: with
		// the default reconciler a 127.0.0.1 advertise address is refused.
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+saPub,
		"--service-account-signing-key-file="+saKey,
		"--token-auth-file="+tokens,
		"--authorization-mode=AlwaysAllow",
		// PodSecurity is on by default; named so that it cannot silently go.
		"--enable-admission-plugins=PodSecurity",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	)
	cfg := &rest.Config{
		Host:                      "https://127.0.0.1:" + port,
		BearerToken:               token,
		TLSClientConfig:           rest.TLSClientConfig{Insecure: true}, // its own self-signed certificate, on loopback
		QPS:                       200,
		Burst:                     400,
		WarningHandlerWithContext: warningCollector{},
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hc.Timeout = 5 * time.Second
	waitFor(t, 90*time.Second, "kube-apiserver "+cfg.Host+"/readyz", func() error {
		return get(hc, cfg.Host+"/readyz", "")
	})
	return &cluster{config: cfg, dir: dir}
}

// startProcess runs a server until the test ends (SIGTERM, then SIGKILL
// after 10s). Its output goes to <dir>/<name>.log, printed if the test failed.
func startProcess(t *testing.T, dir, bin string, args ...string) {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%v: build the servers first: deploy/k8s/verify/run.sh (or set PANDABRIDGE_K8S_BIN)", err)
	}
	name := filepath.Base(bin)
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("--- last lines of %s:\n%s", name, b)
		}
	})
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// serviceAccountKeys writes a fresh RSA key pair for signing and verifying
// service account tokens and returns the files' paths.
func serviceAccountKeys(t *testing.T, dir string) (private, public string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	private, public = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(private, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(public, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		t.Fatal(err)
	}
	return private, public
}

func get(c *http.Client, url, token string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(body.String()))
	}
	return nil
}

// waitFor polls check every 100ms until it succeeds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// warningCollector hands every warning header of a response to the
// *warnings in the request's context, or to strayWarnings.
type warningCollector struct{}

type warningsKey struct{}

// strayWarnings are those of requests made without collectWarnings' context
// (e.g. discovery); the test fails on them too.
var strayWarnings warnings

type warnings struct {
	mu   sync.Mutex
	list []string
}

func (warningCollector) HandleWarningHeaderWithContext(ctx context.Context, _ int, _ string, text string) {
	w, ok := ctx.Value(warningsKey{}).(*warnings)
	if !ok {
		w = &strayWarnings
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// collectWarnings returns a context whose requests' warnings end up in the
// returned *warnings.
func collectWarnings(ctx context.Context) (context.Context, *warnings) {
	w := &warnings{}
	return context.WithValue(ctx, warningsKey{}, w), w
}

func (w *warnings) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.list...)
}
