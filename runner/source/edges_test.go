package source

import (
	"context"
	"fmt"
	"strings"
	"testing"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
)

// readAll pages through r from the start and returns every row's order values as text.
func readAll(ctx context.Context, t *testing.T, r *Reader, size int) []string {
	t.Helper()
	var out []string
	var after []string
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("paging does not end after %v: the checkpoint does not move", after)
		}
		b, err := r.Read(ctx, after)
		if err != nil {
			t.Fatalf("Read after %v: %v", after, err)
		}
		for i := 0; i < b.Len(); i++ {
			pos, err := r.Position(b, i)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, strings.Join(pos, "|"))
		}
		if b.Len() < size {
			return out
		}
		if after, err = r.Position(b, b.Len()-1); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCheckpointCastsKeepTheColumnType pages, two rows at a time, over keys of types whose
// modifier matters: the checkpoint is cast back to the column's full type, so a char(4) key
// is not cut to one character (which read the same page forever).
func TestCheckpointCastsKeepTheColumnType(t *testing.T) {
	conn := connectSource(t)
	ctx := context.Background()
	cases := []struct {
		name, typ, values string
		cursor            bool
	}{
		{"char(n)", "char(4)", `SELECT 'a' || lpad(g::text, 3, '0') FROM generate_series(1, 9) g`, false},
		{"varchar(n)", "varchar(6)", `SELECT 'k' || g FROM generate_series(1, 9) g`, false},
		{"numeric(p,s)", "numeric(8,3)", `SELECT g / 7.0 FROM generate_series(1, 9) g`, false},
		{"timestamp(p)", "timestamp(3)", `SELECT timestamp '2024-01-01 00:00:00' + g * interval '1.001 ms' FROM generate_series(1, 9) g`, false},
		{"timestamp without time zone", "timestamp", `SELECT timestamp '2024-03-31 01:59:59.999999' + g * interval '1 us' FROM generate_series(1, 9) g`, false},
		{"bit(n)", "bit(6)", `SELECT g::bit(6) FROM generate_series(1, 9) g`, false},
		{"uuid", "uuid", `SELECT md5(g::text)::uuid FROM generate_series(1, 9) g`, false},
		{"text, non-ASCII and collation-sensitive", "text", `SELECT unnest(ARRAY['a', 'B', 'é', 'e', 'Z', 'ß', 'ss', '日本', 'a b'])`, false},
		{"char(n) as the cursor of an Incremental read", "char(4)", `SELECT 'a' || lpad(g::text, 3, '0') FROM generate_series(1, 9) g`, true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			table := fmt.Sprintf("typed%d", i)
			if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (k %s PRIMARY KEY, c %s)`, table, tc.typ, tc.typ)); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s SELECT v, v FROM (%s) AS s(v)`, table, tc.values)); err != nil {
				t.Fatal(err)
			}
			opts := Options{Query: "SELECT k, c FROM " + table, Keys: []string{"k"}, BatchSize: 2}
			if tc.cursor {
				opts.Cursor = "c"
			}
			r, err := Open(ctx, conn, opts)
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(ctx, t, r, 2)
			if len(got) != 9 {
				t.Fatalf("read %d rows, want 9: %v", len(got), got)
			}
			seen := map[string]bool{}
			for _, g := range got {
				if seen[g] {
					t.Fatalf("row %s read twice: %v", g, got)
				}
				seen[g] = true
			}
		})
	}
}

// TestDuplicateKeysetOrderFails: a reader whose output repeats (cursor, keys) at a page
// boundary would lose a row to the strict comparison; the run fails naming the key.
func TestDuplicateKeysetOrderFails(t *testing.T) {
	conn := connectSource(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `CREATE TABLE o AS SELECT g AS id, timestamptz '2024-01-01' + g * interval '1s' AS c FROM generate_series(1, 10) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE lines AS SELECT 7 AS order_id, n FROM generate_series(1, 2) n`); err != nil {
		t.Fatal(err)
	}
	// A join repeats order 7. Whatever the page size, the pair is seen together: within a page,
	// or as a page's last row and its look-ahead row.
	for _, size := range []int{1, 2, 3, 6, 7, 20} {
		t.Run(fmt.Sprintf("page size %d", size), func(t *testing.T) {
			r, err := Open(ctx, conn, Options{Query: "SELECT o.id, o.c FROM o LEFT JOIN lines l ON l.order_id = o.id",
				Cursor: "c", Keys: []string{"id"}, BatchSize: size})
			if err != nil {
				t.Fatal(err)
			}
			var after []string
			for {
				b, err := r.Read(ctx, after)
				if err != nil {
					if !strings.Contains(err.Error(), "id=7") || failure.Classify(err) != etlv1.ErrorBusiness {
						t.Fatalf("Read = %v (%s), want a business error naming id=7", err, failure.Classify(err))
					}
					return
				}
				if b.Len() < size {
					t.Fatal("read to the end without noticing the repeated key")
				}
				after, _ = r.Position(b, b.Len()-1)
			}
		})
	}
}

// TestReaderCannotWrite: a reader query that switches the session to read-write, or writes,
// still runs each page in a READ ONLY transaction; a write attempt is a business error.
func TestReaderCannotWrite(t *testing.T) {
	conn := connectSource(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `CREATE TABLE w AS SELECT g AS id FROM generate_series(1, 10) g;
		CREATE TABLE victim (n int); INSERT INTO victim VALUES (1);
		CREATE FUNCTION scribble() RETURNS int LANGUAGE sql AS 'UPDATE victim SET n = n + 1 RETURNING n'`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SET default_transaction_read_only = on`); err != nil {
		t.Fatal(err)
	}
	// The first page turns the session's default off; the second page must still be read-only.
	r, err := Open(ctx, conn, Options{Query: `SELECT id, set_config('default_transaction_read_only', 'off', false) AS s FROM w`,
		Keys: []string{"id"}, BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(ctx, t, r, 3); len(got) != 10 {
		t.Fatalf("read %d rows, want 10", len(got))
	}
	r, err = Open(ctx, conn, Options{Query: `SELECT id, scribble() AS n FROM w`, Keys: []string{"id"}, BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Read(ctx, nil)
	if err == nil || failure.Classify(err) != etlv1.ErrorBusiness || !strings.Contains(err.Error(), "tried to write") {
		t.Fatalf("Read = %v (%s), want a business error: the reader tried to write", err, failure.Classify(err))
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT n FROM victim`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("victim = %d, %v: the reader wrote", n, err)
	}
}
