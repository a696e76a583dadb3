package postgres

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/sink"
)

// TestSendsWithChangingShapes: batches in flight whose column types change from one batch to
// the next (a python transform types its columns by each batch's values) each prepare their
// own upsert, and every batch's result comes back as its own.
func TestSendsWithChangingShapes(t *testing.T) {
	conn := connect(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `CREATE TABLE analytics.t (id bigint PRIMARY KEY, v timestamptz)`); err != nil {
		t.Fatal(err)
	}
	s := New(conn, "analytics", "t", []string{"id"})
	if err := s.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	typed := func(id int64, oid uint32, v any) *batch.Batch {
		return &batch.Batch{Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "v", Type: oid}}, Rows: [][]any{{id, v}}}
	}
	batches := []*batch.Batch{
		typed(1, pgtype.TextOID, "2024-05-01T00:00:00Z"),
		typed(2, 0, nil),
		typed(3, pgtype.TextOID, "2024-05-03T00:00:00Z"),
	}
	for _, b := range batches {
		if err := s.Send(ctx, b, sink.Statement{SQL: "SELECT 1"}); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	for i := range batches {
		if n, err := s.Receive(ctx); err != nil || n != 1 {
			t.Fatalf("Receive %d = %d, %v; want 1 row", i, n, err)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := conn.QueryRow(ctx, `SELECT string_agg(id || ':' || coalesce(v::date::text, 'null'), ',' ORDER BY id) FROM analytics.t`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "1:2024-05-01,2:null,3:2024-05-03" {
		t.Fatalf("target holds %q", got)
	}
}
