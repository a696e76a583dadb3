package python

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
)

// benchBatch is n rows shaped like test/bench's source: a key, a cursor, text, a numeric, an
// integer and a 64-byte text.
func benchBatch(n int) *batch.Batch {
	b := &batch.Batch{Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "updated_at", Type: pgtype.TimestamptzOID},
		{Name: "name", Type: pgtype.TextOID}, {Name: "amount", Type: pgtype.NumericOID}, {Name: "qty", Type: pgtype.Int4OID},
		{Name: "payload", Type: pgtype.TextOID}}}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		b.Rows = append(b.Rows, []any{int64(i), base.Add(time.Duration(i) * time.Second), fmt.Sprintf("customer number %d", i),
			num(fmt.Sprintf("%d.%02d", i, i%100)), int32(i % 1000), "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"})
	}
	return b
}

// BenchmarkIdentity measures the stage alone: 5000-row batches through an identity task,
// the Go side's encoding and decoding and the worker's round trip.
func BenchmarkIdentity(b *testing.B) {
	ctx := context.Background()
	s, err := Start(ctx, []Task{{Name: "id", Code: "def transform(r):\n    return r\n"}}, Options{Python: testPython(),
		AllowUnsandboxed: os.Getenv("CI") != "true"})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	in := benchBatch(5000)
	for b.Loop() {
		if _, err := s.Apply(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*in.Len())/b.Elapsed().Seconds(), "rows/s")
}
