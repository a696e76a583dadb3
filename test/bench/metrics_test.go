package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkUpsertMetrics measures what the runner's metrics cost: the 1M-row upsert of
// pg_upsert_1m with the metrics endpoint on and scraped every second (far more often than
// Prometheus does), against the same run with --metrics-bind-address 0. Best of five of each,
// interleaved and alternating which goes first, so that background load and the table's
// state weigh on both alike.
func BenchmarkUpsertMetrics(b *testing.B) {
	e := setup(b)
	runs := 0
	nextRun := func() string { runs++; return fmt.Sprintf("metrics-%d", runs) }
	full := "SELECT * FROM src"
	var off, on []time.Duration
	var scrapes int64
	measureOff := func() {
		e.fresh("items")
		off = append(off, e.runner("Full", full, nextRun(), "--metrics-bind-address", "0").wall)
	}
	measureOn := func() {
		e.fresh("items")
		addr := freeAddress(b)
		stop := scrapeEvery(time.Second, "http://"+addr+"/metrics", &scrapes)
		on = append(on, e.runner("Full", full, nextRun(), "--metrics-bind-address", addr).wall)
		stop()
	}
	for i := range 5 {
		if i%2 == 0 {
			measureOff()
			measureOn()
		} else {
			measureOn()
			measureOff()
		}
	}
	if scrapes == 0 {
		b.Fatalf("no scrape of the runner's metrics succeeded")
	}
	b.Logf("metrics off %v, metrics on %v (%d scrapes answered)", off, on, scrapes)
	rate := func(d time.Duration) float64 { return bigRows / d.Seconds() }
	report("pg_upsert_1m_metrics", rate(slices.Min(on)), rate(slices.Min(off)), "rows/s")
}

// freeAddress returns a loopback address with a port nothing listens on.
func freeAddress(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// scrapeEvery GETs url every interval until stopped, counting the answers that hold the
// runner's rows counter; a scrape before the runner listens or after it stopped fails quietly.
func scrapeEvery(interval time.Duration, url string, answered *int64) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if scrapeOnce(ctx, url) {
				atomic.AddInt64(answered, 1)
			}
		}
	}()
	return func() { cancel(); <-done }
}

func scrapeOnce(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer func() { _ = res.Body.Close() }()
	body, err := io.ReadAll(res.Body)
	return err == nil && res.StatusCode == http.StatusOK && strings.Contains(string(body), "sluice_runner_rows_read_total{")
}
