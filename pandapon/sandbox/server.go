package sandbox

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server is a Sandbox served over real HTTP by Start.
type Server struct {
	*Sandbox
	// URL is the base URL, e.g. http://127.0.0.1:41234.
	URL string
	// Addr is the listening address, e.g. 127.0.0.1:41234.
	Addr string

	srv       *http.Server
	cancel    context.CancelFunc
	served    chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// shutdownGrace bounds how long Close waits for handlers to finish before
// it closes their connections.
const shutdownGrace = 5 * time.Second

// Start serves a new Sandbox built from opts on addr in a goroutine. An
// empty addr means 127.0.0.1:0 (a free port). Call Close when done.
func Start(addr string, opts Options) (*Server, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	base, cancel := context.WithCancel(context.Background())
	s := &Server{
		Sandbox: New(opts),
		Addr:    ln.Addr().String(),
		cancel:  cancel,
		served:  make(chan struct{}),
	}
	s.URL = "http://" + s.Addr
	s.srv = &http.Server{
		Handler:           s.Sandbox,
		ReadHeaderTimeout: 10 * time.Second,
		// Request contexts derive from base, so Close can end hanging and
		// delayed handlers at once.
		BaseContext: func(net.Listener) context.Context { return base },
	}
	go func() {
		defer close(s.served)
		_ = s.srv.Serve(ln) // returns http.ErrServerClosed after Close
	}()
	return s, nil
}

// Close stops accepting connections, cancels requests that are hanging or
// delayed by faults (their clients get a 504, or nothing), and waits for
// every handler to return. Calling it again returns the first result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		err := s.srv.Shutdown(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			err = s.srv.Close()
		}
		<-s.served
		s.closeErr = err
	})
	return s.closeErr
}
