package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
)

// followPoll is how often a followed log is read again while its process runs.
const followPoll = 200 * time.Millisecond

// serveLogs serves the kubelet's GET /containerLogs/{namespace}/{pod}/{container}, which the
// API server calls for `kubectl logs`, over HTTPS to clients with a certificate of the
// cluster CA (the API server's kubelet client certificate). Supported: follow, tailLines,
// limitBytes. Not supported: previous (there is no previous container), timestamps,
// sinceSeconds and sinceTime (ignored).
func (a *agent) serveLogs(ctx context.Context) error {
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(a.o.clientCA) // #nosec G703 -- a file named on the command line
	if err != nil {
		return fmt.Errorf("read client CA: %w", err)
	}
	if !pool.AppendCertsFromPEM(ca) {
		return fmt.Errorf("no certificate in %s", a.o.clientCA)
	}
	cert, err := tls.LoadX509KeyPair(a.o.tlsCert, a.o.tlsKey)
	if err != nil {
		return fmt.Errorf("load serving certificate: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", a.handleLogs)
	srv := &http.Server{
		Addr:              a.o.listen,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
		},
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.ListenAndServeTLS("", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve logs on %s: %w", a.o.listen, err)
	}
	return nil
}

func (a *agent) handleLogs(w http.ResponseWriter, r *http.Request) {
	ns, name, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	q := r.URL.Query()
	if q.Get("previous") == "true" {
		http.Error(w, fmt.Sprintf("previous terminated container %q in pod %q not found: the sluice node agent never restarts containers", container, name), http.StatusBadRequest)
		return
	}
	pod, err := a.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		http.Error(w, fmt.Sprintf("pod %s/%s not found on node %s", ns, name, a.o.nodeName), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	f, err := os.Open(filesOf(a.o.workDir, pod).log(container))
	if err != nil {
		http.Error(w, fmt.Sprintf("container %q in pod %q is waiting to start or was not run by the sluice node agent", container, name), http.StatusBadRequest)
		return
	}
	defer func() { _ = f.Close() }()

	if n, err := strconv.Atoi(q.Get("tailLines")); err == nil && n >= 0 {
		if err := seekTail(f, n); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	var out io.Writer = w
	limit := int64(-1)
	if n, err := strconv.ParseInt(q.Get("limitBytes"), 10, 64); err == nil && n > 0 {
		limit = n
	}
	w.Header().Set("Content-Type", "text/plain")
	flusher, _ := w.(http.Flusher)
	follow := q.Get("follow") == "true"
	for {
		var copied int64
		if limit >= 0 {
			copied, _ = io.Copy(out, io.LimitReader(f, limit))
			limit -= copied
		} else {
			copied, _ = io.Copy(out, f)
		}
		if flusher != nil && copied > 0 {
			flusher.Flush()
		}
		if !follow || limit == 0 || !a.running(pod.UID) {
			if follow && limit != 0 {
				_, _ = io.Copy(out, f) // what the process wrote before it ended
			}
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(followPoll):
		}
	}
}

// running reports whether the agent runs a process for pod now.
func (a *agent) running(uid types.UID) bool {
	a.mu.Lock()
	p := a.procs[uid]
	a.mu.Unlock()
	return p != nil && !p.done()
}

// seekTail positions f at the start of its last n lines.
func seekTail(f *os.File, n int) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if n == 0 {
		_, err := f.Seek(size, io.SeekStart)
		return err
	}
	const chunk = 8 << 10
	buf := make([]byte, chunk)
	newlines := 0
	pos := size
	for pos > 0 {
		step := min(int64(chunk), pos)
		pos -= step
		if _, err := f.ReadAt(buf[:step], pos); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		for i := step - 1; i >= 0; i-- {
			if pos+i == size-1 {
				continue // the final newline ends the last line
			}
			if buf[i] == '\n' {
				newlines++
				if newlines == n {
					_, err := f.Seek(pos+i+1, io.SeekStart)
					return err
				}
			}
		}
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}
