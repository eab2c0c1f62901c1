package sandbox_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pandabridge/pandabridge/pandapon/sandbox"
)

func TestStartServesOnLoopback(t *testing.T) {
	srv := start(t, sandbox.Options{})
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") || srv.URL != "http://"+srv.Addr {
		t.Errorf("URL %q Addr %q, want http://127.0.0.1:port", srv.URL, srv.Addr)
	}
	wantCode(t, query(t, srv.URL, sandbox.SeedRefundOnly), sandbox.CodeSuccess)
}

func TestServerCloseEndsHangingRequests(t *testing.T) {
	srv, err := sandbox.Start("", sandbox.Options{Faults: sandbox.Faults{TimeoutRate: 1, Hang: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	req := signed(t, http.MethodGet, queryURL(srv.URL, sandbox.SeedRefundOnly), nil)
	answered := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	eventually(t, 10*time.Second, "the request never started hanging", func() bool {
		return srv.Stats().FaultsInjected[sandbox.FaultTimeout] == 1
	})

	closed := make(chan error)
	go func() { closed <- srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waiting on a hanging request after 10 s")
	}
	if status := <-answered; status != http.StatusGatewayTimeout && status != 0 {
		t.Errorf("hanging request answered HTTP %d after Close, want 504 or a dropped connection", status)
	}
}
