package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pandabridge/pandabridge/embeddednats"
	"github.com/pandabridge/pandabridge/topology"
)

// hookWriter is a log that calls onLine for every line written to it.
type hookWriter struct {
	mu     sync.Mutex
	buf    strings.Builder
	onLine func(string)
}

func (w *hookWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.onLine != nil {
		w.onLine(string(p))
	}
	return len(p), nil
}

func (w *hookWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// storeObstacleEnv starts an embedded server and puts a plain file where
// the store of topo's input stream must go, so that creating that stream
// fails in the server's file store as a full disk would. It returns the
// file's path; the server removes the file when the creation fails.
func storeObstacleEnv(t *testing.T, topo topology.Topology, log *hookWriter) (*env, string) {
	t.Helper()
	e := &env{log: log, nsLog: &embeddednats.WarningLog{}}
	dir := t.TempDir()
	ns, err := embeddednats.Start(embeddednats.Options{StoreDir: dir, Logger: e.nsLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if e.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	// The server removes a failed store's path at once, and the streams
	// directory later if it is empty: a sibling keeps the directory.
	streams := filepath.Join(dir, "jetstream", "$G", "streams")
	if err := os.MkdirAll(filepath.Join(streams, "KEEP"), 0o755); err != nil {
		t.Fatal(err)
	}
	obstacle := filepath.Join(streams, topo.InputStream)
	if err := os.WriteFile(obstacle, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return e, obstacle
}

// TestCreateStreamsReportsServerCause: a stream whose store cannot be
// created fails with the cause from the server's log, after three more
// attempts.
func TestCreateStreamsReportsServerCause(t *testing.T) {
	topo := topology.New("pbobstacle")
	log := &hookWriter{}
	e, obstacle := storeObstacleEnv(t, topo, log)
	log.onLine = func(line string) {
		if strings.Contains(line, "trying again") {
			if err := os.WriteFile(obstacle, nil, 0o644); err != nil {
				t.Error(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := e.createStreams(ctx, topo, false)
	if err == nil {
		t.Fatalf("stream created over a file in its store's place; log:\n%s\nserver: %s", log, e.nsLog.Since(0))
	}
	for _, want := range []string{"creating stream " + topo.InputStream, "error creating store for stream", "not a directory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if got := strings.Count(log.String(), "trying again"); got != 3 {
		t.Errorf("%d retries logged, want 3:\n%s", got, log)
	}
}

// TestCreateStreamsRetriesTransientStoreFailure: once the obstacle is gone
// (the server removes it with the failed store, as another process might
// free disk space), the next attempt succeeds.
func TestCreateStreamsRetriesTransientStoreFailure(t *testing.T) {
	topo := topology.New("pbtransient")
	log := &hookWriter{}
	e, _ := storeObstacleEnv(t, topo, log)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.createStreams(ctx, topo, false); err != nil {
		t.Fatalf("%v\nlog:\n%s", err, log)
	}
	for _, name := range []string{topo.InputStream, topo.OutputStream, topo.DLQStream} {
		if _, err := e.js.Stream(ctx, name); err != nil {
			t.Errorf("stream %s: %v", name, err)
		}
	}
	if got := strings.Count(log.String(), "trying again"); got != 1 {
		t.Errorf("%d retries logged, want 1:\n%s", got, log)
	}
}
