package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Path is where the metrics are served.
const Path = "/metrics"

// Server serves a run's metrics over HTTP.
type Server struct {
	srv  *http.Server
	done chan error
}

// Serve serves the metrics at Path on l until Shutdown. The listener comes from the caller
// so that it binds (and fails) before the run starts, and a test can pick a free port.
func (m *Metrics) Serve(l net.Listener) *Server {
	mux := http.NewServeMux()
	mux.Handle(Path, m.Handler())
	s := &Server{
		srv: &http.Server{
			Handler: mux,
			// A scrape is one small request: a client slower than this is not a scraper.
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
		},
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(l) }()
	return s
}

// Shutdown stops accepting scrapes, lets one in progress finish until ctx ends, closes the
// listener and returns why serving stopped early, if it did (nil after a clean stop).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}
