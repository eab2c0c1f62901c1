// Package embeddednats runs a real NATS server with JetStream inside the
// process: the consumer's -dev mode and every test that needs a broker use
// it, so nothing is ever faked.
package embeddednats

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultDevPort is the port the dev mode listens on, NATS's standard one.
const DefaultDevPort = 4222

// Options configure an embedded server.
type Options struct {
	// Host defaults to 127.0.0.1: the embedded server is never exposed.
	Host string
	// Port is the client port; 0 or -1 picks a free one.
	Port int
	// StoreDir is JetStream's store. Empty means a new temporary directory
	// that Server.Shutdown removes.
	StoreDir string
	// ServerName names the server (default: chosen by nats-server).
	ServerName string
	// Logs enables the server's own log lines on stderr (default off).
	Logs bool
	// Logger, when set, receives the server's log lines instead (notices,
	// warnings, errors; no debug or trace). It takes precedence over Logs
	// and is kept across Restart. A failure the server reports to clients
	// only in general terms, such as "error creating store for stream",
	// has its cause in the warning logged with it: a *WarningLog keeps the
	// latest warnings for reporting.
	Logger server.Logger
	// Cluster, when set, joins a cluster: it is applied to the
	// server.Options as is (name, host, port, routes).
	Cluster *server.ClusterOpts
	Routes  []string
}

// Server is a running embedded NATS server.
type Server struct {
	*server.Server
	// URL is the client URL, e.g. nats://127.0.0.1:4222.
	URL      string
	StoreDir string
	tempDir  bool
	opts     *server.Options
	logger   server.Logger
}

// Start starts a server with JetStream and waits until it accepts
// connections (at most 10 s). On error nothing is left running.
func Start(o Options) (*Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = -1
	}
	temp := false
	if o.StoreDir == "" {
		d, err := os.MkdirTemp("", "pandabridge-jetstream-")
		if err != nil {
			return nil, fmt.Errorf("embeddednats: creating store dir: %w", err)
		}
		o.StoreDir, temp = d, true
	}
	opts := &server.Options{
		Host:       o.Host,
		Port:       o.Port,
		ServerName: o.ServerName,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      !o.Logs && o.Logger == nil,
		Routes:     server.RoutesFromStr(joinRoutes(o.Routes)),
	}
	if o.Cluster != nil {
		opts.Cluster = *o.Cluster
	}
	s, err := startWith(opts, o.Logs, o.Logger)
	if err != nil {
		if temp {
			os.RemoveAll(o.StoreDir)
		}
		return nil, err
	}
	return &Server{Server: s, URL: s.ClientURL(), StoreDir: o.StoreDir, tempDir: temp, opts: opts, logger: o.Logger}, nil
}

func startWith(opts *server.Options, logs bool, logger server.Logger) (*server.Server, error) {
	if opts.Port > 0 {
		// The server reports a port it cannot bind only in its log; say so
		// at once, with the cause, rather than after the 10 s wait below.
		addr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			var oe *net.OpError
			if errors.As(err, &oe) {
				err = oe.Err // the bare cause: the address is in the message already
			}
			return nil, fmt.Errorf("embeddednats: cannot listen on %s: %w", addr, err)
		}
		l.Close()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embeddednats: %w", err)
	}
	switch {
	case logger != nil:
		s.SetLogger(logger, false, false)
	case logs:
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embeddednats: server did not accept connections on %s:%d within 10s (is the port in use?)", opts.Host, opts.Port)
	}
	return s, nil
}

// Restart shuts the server down and starts it again on the same port and
// store, as an operator restarting NATS would.
func (s *Server) Restart() error {
	opts := s.opts.Clone()
	if a, ok := s.Addr().(*net.TCPAddr); ok {
		opts.Port = a.Port
	}
	s.Server.Shutdown()
	s.Server.WaitForShutdown()
	ns, err := startWith(opts, !opts.NoLog, s.logger)
	if err != nil {
		return err
	}
	s.Server = ns
	return nil
}

// Shutdown stops the server, waits for it, and removes a temporary store.
func (s *Server) Shutdown() {
	s.Server.Shutdown()
	s.Server.WaitForShutdown()
	if s.tempDir {
		os.RemoveAll(s.StoreDir)
	}
}

func joinRoutes(rs []string) string { return strings.Join(rs, ",") }
