package elasticsearch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
)

// BenchmarkWriteCPU measures the sink's own work per document (rendering, the bulk
// indexer, the answer's decoding) against a server that acknowledges everything at once.
// The throughput against a real node is in test/bench.
func BenchmarkWriteCPU(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Elastic-Product", "Elasticsearch")
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/" {
			_, _ = io.WriteString(w, `{"version":{"number":"8.19.21"}}`)
			return
		}
		body, _ := io.ReadAll(r.Body)
		n := bytes.Count(body, []byte("\n")) / 2
		var out bytes.Buffer
		out.WriteString(`{"items":[`)
		for i := 0; i < n; i++ {
			if i > 0 {
				out.WriteByte(',')
			}
			out.WriteString(`{"index":{"status":201}}`)
		}
		out.WriteString(`]}`)
		_, _ = w.Write(out.Bytes())
	}))
	defer srv.Close()
	s, err := newSink(Target{Index: "x", Key: []string{"id"}, Action: etlv1.ActionIndex}, Connection{Name: "t", URLs: []string{srv.URL}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Prepare(context.Background()); err != nil {
		b.Fatal(err)
	}
	raw := &batch.Raw{Formats: []int16{1, 1, 1, 1, 1, 1}}
	m := pgtype.NewMap()
	for i := 0; i < 5000; i++ {
		id, _ := m.Encode(pgtype.Int8OID, 1, int64(i+1), nil)
		name := []byte(fmt.Sprintf("customer number %d", i+1))
		ts, _ := m.Encode(pgtype.Int8OID, 1, int64(757382400000000+i), nil)
		amt, _ := m.Encode(pgtype.NumericOID, 1, num("1234.56"), nil)
		qty, _ := m.Encode(pgtype.Int4OID, 1, int32(i%1000), nil)
		payload := []byte(fmt.Sprintf("%064x", i))
		raw.AppendRow([][]byte{id, ts, name, amt, qty, payload})
	}
	bt := &batch.Batch{Raw: raw, Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "updated_at", Type: pgtype.TimestamptzOID},
		{Name: "name", Type: pgtype.TextOID}, {Name: "amount", Type: pgtype.NumericOID}, {Name: "qty", Type: pgtype.Int4OID}, {Name: "payload", Type: pgtype.TextOID}}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Write(context.Background(), bt); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*5000), "ns/doc")
}
