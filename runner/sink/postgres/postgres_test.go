package postgres

import (
	"context"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/sink"
	"github.com/sluice-dev/sluice/test/testenv"
)

func TestUpsertSQL(t *testing.T) {
	cases := []struct {
		name                         string
		columns, arrays, casts, keys []string
		want                         string
	}{
		{
			name: "updates the non-key columns", columns: []string{"id", "v"}, arrays: []string{"bigint[]", "text[]"},
			casts: []string{"", ""}, keys: []string{"id"},
			want: `INSERT INTO "analytics"."t" ("id", "v") SELECT unnest($1::bigint[]), unnest($2::text[]) ` +
				`ON CONFLICT ("id") DO UPDATE SET "v" = EXCLUDED."v"`,
		},
		{
			name: "casts where the carried type differs", columns: []string{"id", "u", "m"}, arrays: []string{"integer[]", "text[]", "text[]"},
			casts: []string{"", "uuid", "public.mood"}, keys: []string{"id"},
			want: `INSERT INTO "analytics"."t" ("id", "u", "m") SELECT unnest($1::integer[]), unnest($2::text[])::uuid, ` +
				`unnest($3::text[])::public.mood ON CONFLICT ("id") DO UPDATE SET "u" = EXCLUDED."u", "m" = EXCLUDED."m"`,
		},
		{
			name: "composite key, quoted identifiers", columns: []string{"a", "B\"x", "v"}, arrays: []string{"text[]", "text[]", "text[]"},
			casts: []string{"", "", ""}, keys: []string{"a", "B\"x"},
			want: `INSERT INTO "analytics"."t" ("a", "B""x", "v") SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::text[]) ` +
				`ON CONFLICT ("a", "B""x") DO UPDATE SET "v" = EXCLUDED."v"`,
		},
		{
			name: "only key columns: nothing to update", columns: []string{"id"}, arrays: []string{"bigint[]"}, casts: []string{""}, keys: []string{"id"},
			want: `INSERT INTO "analytics"."t" ("id") SELECT unnest($1::bigint[]) ON CONFLICT ("id") DO NOTHING`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := upsertSQL(pgx.Identifier{"analytics", "t"}, tc.columns, tc.arrays, tc.casts, tc.keys); got != tc.want {
				t.Fatalf("upsertSQL:\n got %s\nwant %s", got, tc.want)
			}
		})
	}
	if got := itoa(123); got != "123" {
		t.Fatalf("itoa(123) = %q", got)
	}
}

func num(s string) pgtype.Numeric {
	var n pgtype.Numeric
	if err := n.Scan(s); err != nil {
		panic(err)
	}
	return n
}

func TestLastPerKey(t *testing.T) {
	ts := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		rows   [][]any
		keyIdx []int
		want   []string
	}{
		{"no repeats keeps the batch", [][]any{{int64(1), "a"}, {int64(2), "b"}}, []int{0}, []string{"1a", "2b"}},
		{"repeats collapse to the last, in order", [][]any{{int64(1), "a"}, {int64(2), "b"}, {int64(1), "c"}, {int64(3), "d"}, {int64(2), "e"}}, []int{0}, []string{"1c", "3d", "2e"}},
		{"composite keys", [][]any{{"x", int32(1), "a"}, {"x", int32(2), "b"}, {"x", int32(1), "c"}}, []int{0, 1}, []string{"x2b", "x1c"}},
		{"numerics equal in value are one key", [][]any{{num("1.0"), "a"}, {num("1.00"), "b"}}, []int{0}, []string{"1.00b"}},
		{"one instant in two zones is one key", [][]any{{ts, "a"}, {ts.In(time.FixedZone("x", 3600)), "b"}}, []int{0}, []string{"b"}},
		{"strings that only look alike stay apart", [][]any{{"a\x00b", "1"}, {"a", "2"}}, []int{0}, []string{"a\x00b1", "a2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := rowsAt(tc.rows, lastPerKeyIndex(tc.rows, tc.keyIdx), nil)
			var flat []string
			for _, r := range got {
				var b strings.Builder
				for _, v := range r {
					switch v := v.(type) {
					case pgtype.Numeric:
						f, _ := new(big.Float).SetInt(v.Int).Float64()
						fmt.Fprintf(&b, "%.2f", f*pow10(v.Exp))
					case time.Time:
					default:
						fmt.Fprint(&b, v)
					}
				}
				flat = append(flat, b.String())
			}
			if fmt.Sprint(flat) != fmt.Sprint(tc.want) {
				t.Fatalf("lastPerKeyIndex keeps %q, want %q", flat, tc.want)
			}
		})
	}
}

func pow10(e int32) float64 {
	f := 1.0
	for ; e < 0; e++ {
		f /= 10
	}
	for ; e > 0; e-- {
		f *= 10
	}
	return f
}

func connect(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), testenv.NewPostgresDB(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(context.Background(), `CREATE SCHEMA analytics`); err != nil {
		t.Fatal(err)
	}
	return conn
}

func cols(names ...string) []batch.Column {
	out := make([]batch.Column, len(names))
	for i, n := range names {
		out[i] = batch.Column{Name: n, Type: pgtype.Int8OID}
	}
	out[len(out)-1].Type = pgtype.TextOID
	return out
}

func TestPrepareChecksTheTarget(t *testing.T) {
	conn := connect(t)
	ctx := context.Background()
	for _, sql := range []string{
		`CREATE TABLE analytics.nokey (id bigint, v text)`,
		`CREATE TABLE analytics.partial (id bigint, v text)`,
		`CREATE UNIQUE INDEX ON analytics.partial (id) WHERE id > 0`,
		`CREATE TABLE analytics.wide (id bigint, region text, v text, UNIQUE (id, region))`,
		`CREATE TABLE analytics.ok (id bigint PRIMARY KEY, v text)`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		table string
		key   []string
		want  string
	}{
		{"missing", []string{"id"}, "target table analytics.missing does not exist"},
		{"nokey", []string{"id"}, "no unique index on exactly (id)"},
		{"partial", []string{"id"}, "no unique index on exactly (id)"},
		{"wide", []string{"id"}, "no unique index on exactly (id)"},
		{"wide", []string{"region", "id"}, ""},
		{"ok", []string{"nope"}, `has no key column "nope"`},
		{"ok", []string{"id"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.table+"/"+strings.Join(tc.key, ","), func(t *testing.T) {
			err := New(conn, "analytics", tc.table, tc.key).Prepare(ctx)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Prepare: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || failure.Classify(err) != etlv1.ErrorBusiness {
				t.Fatalf("Prepare = %v, want a business error containing %q", err, tc.want)
			}
		})
	}
}

func TestWriteUpsertsIdempotently(t *testing.T) {
	conn := connect(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `CREATE TABLE analytics.t (id bigint PRIMARY KEY, extra text DEFAULT 'kept', v text)`); err != nil {
		t.Fatal(err)
	}
	s := New(conn, "analytics", "t", []string{"id"})
	if err := s.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	b := &batch.Batch{Columns: cols("id", "v"), Rows: [][]any{{int64(1), "a"}, {int64(2), "b"}, {int64(1), "a2"}}}
	for i := 0; i < 2; i++ { // a replayed batch changes nothing
		n, err := s.Write(ctx, b)
		if err != nil || n != 2 {
			t.Fatalf("Write = %d, %v; want 2 rows", n, err)
		}
	}
	var got string
	if err := conn.QueryRow(ctx, `SELECT string_agg(id || ':' || v || ':' || extra, ',' ORDER BY id) FROM analytics.t`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "1:a2:kept,2:b:kept" {
		t.Fatalf("target holds %q", got)
	}

	// Pipelined sends: each batch commits with its statement or not at all, results come
	// back in order, and a failed batch does not stop the next one at this level (the
	// executor's checkpoint statements do that).
	one := func(id int64, v string) *batch.Batch {
		return &batch.Batch{Columns: cols("id", "v"), Rows: [][]any{{id, v}}}
	}
	sends := []struct {
		b    *batch.Batch
		stmt string
		err  string
	}{
		{one(3, "c"), "CREATE TABLE side_effect (x int)", ""},
		{one(4, "d"), "SELECT 1/0", "division by zero"},
		{one(5, "e"), "", ""},
		{&batch.Batch{Columns: cols("id", "v")}, "INSERT INTO side_effect VALUES (1)", ""},
	}
	for _, sd := range sends {
		if err := s.Send(ctx, sd.b, sink.Statement{SQL: sd.stmt}); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	for i, sd := range sends {
		n, err := s.Receive(ctx)
		if (err == nil) != (sd.err == "") || (err != nil && !strings.Contains(err.Error(), sd.err)) {
			t.Fatalf("Receive %d = %d, %v; want error %q", i, n, err, sd.err)
		}
		if err == nil && n != int64(sd.b.Len()) {
			t.Fatalf("Receive %d = %d rows, want %d", i, n, sd.b.Len())
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var ids string
	if err := conn.QueryRow(ctx, `SELECT string_agg(id::text, ',' ORDER BY id) FROM analytics.t`).Scan(&ids); err != nil || ids != "1,2,3,5" {
		t.Fatalf("target ids %q (%v), want 1,2,3,5: batch 4 must have rolled back with its statement", ids, err)
	}
	var side int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM side_effect`).Scan(&side); err != nil || side != 1 {
		t.Fatalf("the statements of the empty batch did not commit: %d, %v", side, err)
	}
	// A column the target lacks is a business error naming it.
	_, err := s.Write(ctx, &batch.Batch{Columns: cols("id", "nope"), Rows: [][]any{{int64(4), "x"}}})
	if err == nil || !strings.Contains(err.Error(), `has no column "nope"`) || failure.Classify(err) != etlv1.ErrorBusiness {
		t.Fatalf("Write with an unknown column = %v", err)
	}
}
