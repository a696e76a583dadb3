package postgres

import (
	"context"
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/sink"
)

// TestDeletesByKey writes batches that mix upserts and deletes into a table with a composite
// key of a text and a uuid (the uuid carried as text and cast), through Write and through Send,
// decoded and raw: deleted keys go, a delete of an absent key and a replayed batch change
// nothing, and the last row of a key wins within a batch.
func TestDeletesByKey(t *testing.T) {
	ctx := context.Background()
	u := func(n int) string { return "00000000-0000-0000-0000-00000000000" + string(rune('0'+n)) }
	columns := []batch.Column{{Name: "region", Type: pgtype.TextOID}, {Name: "id", Type: pgtype.TextOID}, {Name: "v", Type: pgtype.Int4OID}}
	decoded := func(rows [][]any, deleted ...bool) *batch.Batch {
		return &batch.Batch{Columns: columns, Rows: rows, Deleted: deleted}
	}
	raw := func(b *batch.Batch) *batch.Batch {
		r := batch.NewRaw([]int16{0, 0, 0}, len(b.Rows), 64)
		for _, row := range b.Rows {
			var vals [][]byte
			for _, v := range row {
				switch v := v.(type) {
				case string:
					vals = append(vals, []byte(v))
				case int32:
					vals = append(vals, []byte(string(rune('0'+v))))
				default:
					vals = append(vals, nil)
				}
			}
			r.AppendRow(vals)
		}
		return &batch.Batch{Columns: columns, Raw: r, Deleted: b.Deleted}
	}
	steps := []struct {
		b    *batch.Batch
		want string
	}{
		{decoded([][]any{{"eu", u(1), int32(1)}, {"eu", u(2), int32(2)}, {"us", u(1), int32(3)}}), "eu/1=1 eu/2=2 us/1=3"},
		// Delete eu/2, delete a key that is not there, write us/2.
		{decoded([][]any{{"eu", u(2), nil}, {"eu", u(9), nil}, {"us", u(2), int32(4)}}, true, true, false), "eu/1=1 us/1=3 us/2=4"},
		// Written then deleted in one batch: the delete wins; deleted then written: the write.
		{decoded([][]any{{"eu", u(1), int32(5)}, {"eu", u(1), nil}, {"us", u(1), nil}, {"us", u(1), int32(6)}}, false, true, true, false),
			"us/1=6 us/2=4"},
		// Only deletes.
		{decoded([][]any{{"us", u(2), nil}}, true), "us/1=6"},
	}
	read := func(conn *pgx.Conn) string {
		var got string
		if err := conn.QueryRow(ctx, `SELECT coalesce(string_agg(region || '/' || right(id::text, 1) || '=' || v, ' ' ORDER BY region, id), '')
			FROM analytics.t`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, mode := range []string{"Write decoded", "Send decoded", "Write raw", "Send raw"} {
		// A session of its own, as the runner's sinks have: prepared statements are per session.
		conn := connect(t)
		if _, err := conn.Exec(ctx, `CREATE TABLE analytics.t (region text, id uuid, v integer, PRIMARY KEY (region, id))`); err != nil {
			t.Fatal(err)
		}
		s := New(conn, "analytics", "t", []string{"region", "id"})
		if err := s.Prepare(ctx); err != nil {
			t.Fatal(err)
		}
		for i, st := range steps {
			b := st.b
			if mode == "Write raw" || mode == "Send raw" {
				b = raw(b)
			}
			for replay := range 2 {
				var err error
				if mode == "Write decoded" || mode == "Write raw" {
					_, err = s.Write(ctx, b)
				} else if err = s.Send(ctx, b, sink.Statement{SQL: "SELECT 1"}); err == nil {
					if _, err = s.Receive(ctx); err == nil {
						err = s.closePipeline(ctx) // the connection serves the check below
					}
				}
				if err != nil {
					t.Fatalf("%s, step %d (replay %d): %v", mode, i, replay, err)
				}
				if got := read(conn); got != st.want {
					t.Fatalf("%s, step %d (replay %d): table holds %q, want %q", mode, i, replay, got, st.want)
				}
			}
		}
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSplitDeleted(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keep      []int
		deleted   []bool
		ups, dels []int
	}{
		{"every row, some deleted", nil, []bool{false, true, false, true}, []int{0, 2}, []int{1, 3}},
		{"only the kept rows", []int{1, 2}, []bool{true, true, false}, []int{2}, []int{1}},
		{"nothing written", nil, []bool{true}, []int{}, []int{0}},
		{"nothing deleted", []int{0}, []bool{false, true}, []int{0}, nil},
	} {
		ups, dels := splitDeleted(tc.keep, tc.deleted)
		if !reflect.DeepEqual(ups, tc.ups) || !reflect.DeepEqual(dels, tc.dels) {
			t.Errorf("%s: splitDeleted = %v, %v; want %v, %v", tc.name, ups, dels, tc.ups, tc.dels)
		}
	}
}
