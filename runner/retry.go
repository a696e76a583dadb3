package runner

import (
	"context"
	"time"
)

// maxBackoff caps a retry wait whatever the spec says.
const maxBackoff = 5 * time.Minute

// retryPolicy is the retry policy for infrastructure errors: attempts retries of a batch, the
// first after initial, each later one after twice the previous wait (1s, 2s, 4s by default).
type retryPolicy struct {
	attempts int
	initial  time.Duration
}

// backoff returns the wait before retry number n (1-based).
func (p retryPolicy) backoff(n int) time.Duration {
	if n < 1 || p.initial <= 0 {
		return 0
	}
	d := p.initial
	for i := 1; i < n; i++ {
		d *= 2
		if d >= maxBackoff {
			return maxBackoff
		}
	}
	return min(d, maxBackoff)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
