package main

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/pandabridge/pandabridge/internal/testkit"
)

// TestNATSTokenIsNotLogged: nats://TOKEN@host is NATS token
// authentication; url.URL.Redacted and nats.go's ConnectedUrlRedacted print
// the token, which used to reach -print-config and every "reconnected"
// log line.
func TestNATSTokenIsNotLogged(t *testing.T) {
	const token = "natstoken-must-not-leak"
	startNATS := func(port int) *server.Server {
		s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, Authorization: token, NoSigs: true, NoLog: true})
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("NATS not ready")
		}
		return s
	}
	s := startNATS(-1)
	port := s.Addr().(*net.TCPAddr).Port
	natsURL := "nats://" + token + "@" + s.Addr().String()

	var printed strings.Builder
	Config{NATSURL: natsURL}.Print(&printed)
	if strings.Contains(printed.String(), token) || !strings.Contains(printed.String(), "NATS_URL=nats://[REDACTED]@127.0.0.1:") {
		t.Errorf("-print-config does not hide the NATS token:\n%s", printed.String())
	}

	logs := &testkit.SyncBuffer{}
	nc, err := connect(Config{NATSURL: natsURL}, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s.Shutdown() // NATS restarts on the same port: the consumer reconnects and says so
	s = startNATS(port)
	defer s.Shutdown()
	testkit.Eventually(t, 15*time.Second, func() bool { return strings.Contains(logs.String(), "reconnected to NATS") }, "the reconnect log line")
	if out := logs.String(); strings.Contains(out, token) || !strings.Contains(out, `"url":"nats://127.0.0.1:`) {
		t.Errorf("the log shows the NATS token or no redacted URL:\n%s", out)
	}
}

// TestUnreachableNATSIsLogged: while NATS cannot be reached at start, the
// consumer says so, naming the servers (token hidden), instead of retrying
// in silence.
func TestUnreachableNATSIsLogged(t *testing.T) {
	const token = "natstoken-must-not-leak"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	logs := &testkit.SyncBuffer{}
	nc, err := connect(Config{NATSURL: "nats://" + token + "@" + addr}, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	testkit.Eventually(t, 10*time.Second, func() bool { return strings.Contains(logs.String(), "cannot connect to NATS") }, "the failed attempt to be logged")
	out := logs.String()
	if strings.Contains(out, token) || !strings.Contains(out, `"url":"nats://`+addr+`"`) || !strings.Contains(out, `"attempts":1`) {
		t.Errorf("the log line does not name the servers, or shows the token:\n%s", out)
	}
}
