package runner

import (
	"context"

	"github.com/sluice-dev/sluice/runner/batch"
)

// prefetch reads the next page on the source connection while the current one is written,
// so that the source and the sink work at the same time. At most one page is ahead: memory
// stays at two batches.
type prefetch struct {
	cancel context.CancelFunc
	done   chan prefetched
}

type prefetched struct {
	b   *batch.Batch
	err error
}

func (e *executor) startPrefetch(ctx context.Context, s *session, after []string) {
	pctx, cancel := context.WithCancel(ctx)
	pf := &prefetch{cancel: cancel, done: make(chan prefetched, 1)}
	go func() {
		b, err := s.read(pctx, after)
		pf.done <- prefetched{b: b, err: err}
	}()
	e.prefetch = pf
}

func (pf *prefetch) wait() prefetched {
	r := <-pf.done
	pf.cancel()
	return r
}

// stopPrefetch abandons a page being read: the session is going away or the run stops.
func (e *executor) stopPrefetch() {
	if pf := e.prefetch; pf != nil {
		e.prefetch = nil
		pf.cancel()
		<-pf.done
	}
}
