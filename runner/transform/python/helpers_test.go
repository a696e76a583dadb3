package python

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/sandbox/sandboxtest"
)

// testPython is the interpreter the tests use: Debian's python3 when present, as in the
// image, else python3 from PATH.
func testPython() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return DefaultPython
}

// syncBuffer is a log destination safe for the worker's stderr goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start starts a stage of one task per code, named t1, t2, ...; the key is id.
func start(t *testing.T, opts Options, codes ...string) *Stage {
	t.Helper()
	s, err := startErr(t, opts, codes...)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return s
}

func startErr(t *testing.T, opts Options, codes ...string) (*Stage, error) {
	t.Helper()
	if opts.Python == "" {
		opts.Python = testPython()
	}
	if opts.Keys == nil {
		opts.Keys = []string{"id"}
	}
	if opts.detect == nil && !opts.AllowUnsandboxed {
		opts.AllowUnsandboxed = sandboxtest.UnconfinedLocally(t)
	}
	tasks := make([]Task, len(codes))
	for i, c := range codes {
		tasks[i] = Task{Name: "t" + string(rune('1'+i)), Code: c}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, tasks, opts)
	if err == nil {
		t.Cleanup(func() { _ = s.Close() })
	}
	return s, err
}

func apply(t *testing.T, s *Stage, in *batch.Batch) (*batch.Batch, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return s.Apply(ctx, in)
}

// idRows is a batch of rows (id, name) with ids 1..n.
func idRows(n int) *batch.Batch {
	b := &batch.Batch{Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "name", Type: pgtype.TextOID}}}
	for i := 1; i <= n; i++ {
		b.Rows = append(b.Rows, []any{int64(i), "Row " + string(rune('A'+i-1))})
	}
	return b
}

func testLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, nil))
}
