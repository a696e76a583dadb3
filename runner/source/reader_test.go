package source

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/test/testenv"
)

func connectSource(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testenv.NewPostgresDB(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	RegisterTypes(conn.TypeMap())
	return conn
}

// TestPagesVisitEveryRowOnce pages through sources ordered by columns of many types, with
// ties on the cursor, and checks that the rendered checkpoints bring every row exactly once.
func TestPagesVisitEveryRowOnce(t *testing.T) {
	conn := connectSource(t)
	ctx := context.Background()
	cases := []struct {
		name   string
		create string
		cursor string
		keys   []string
	}{
		{"timestamptz cursor with ties, bigint key", `SELECT g AS id, timestamptz '2024-01-01 00:00:00.000001+00' + (g / 7) * interval '1.5 microseconds' AS c FROM generate_series(1, 1000) g`, "c", []string{"id"}},
		{"numeric cursor, text key", `SELECT 'k' || g || 'é' AS id, (g % 13) / 7.0 AS c FROM generate_series(1, 1000) g`, "c", []string{"id"}},
		{"date cursor, uuid key", `SELECT md5(g::text)::uuid AS id, date '2024-02-28' + g % 3 AS c FROM generate_series(1, 1000) g`, "c", []string{"id"}},
		{"full mode over composite keys", `SELECT g % 10 AS a, 'x' || (g / 10) AS b FROM generate_series(1, 1000) g`, "", []string{"a", "b"}},
		{"full mode over a timestamp key with infinity", `SELECT CASE WHEN g = 1000 THEN timestamp 'infinity' ELSE timestamp '2024-01-01' + g * interval '1 day' END AS id FROM generate_series(1, 1000) g`, "", []string{"id"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			table := fmt.Sprintf("t%d", i)
			if _, err := conn.Exec(ctx, "CREATE TABLE "+table+" AS "+tc.create); err != nil {
				t.Fatal(err)
			}
			r, err := Open(ctx, conn, Options{Query: "SELECT * FROM " + table, Cursor: tc.cursor, Keys: tc.keys, BatchSize: 37})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			seen := map[string]bool{}
			var after []string
			for pages := 0; ; pages++ {
				if pages > 100 {
					t.Fatal("paging does not end")
				}
				b, err := r.Read(ctx, after)
				if err != nil {
					t.Fatalf("Read after %v: %v", after, err)
				}
				for _, row := range b.Rows {
					key := fmt.Sprint(row)
					if seen[key] {
						t.Fatalf("row %s read twice", key)
					}
					seen[key] = true
				}
				if b.Len() < 37 {
					break
				}
				if after, err = r.Position(b, b.Len()-1); err != nil {
					t.Fatalf("Position: %v", err)
				}
			}
			if len(seen) != 1000 {
				t.Fatalf("read %d distinct rows, want 1000", len(seen))
			}
		})
	}
}

func TestOpenRejectsQueriesThatCannotBePaged(t *testing.T) {
	conn := connectSource(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `CREATE TABLE t (id int, c timestamptz, other int)`); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, query, cursor, want string
	}{
		{"missing cursor", "SELECT id FROM t", "c", `no cursor column "c"`},
		{"missing key", "SELECT c FROM t", "c", `no key column "id"`},
		{"duplicate column", "SELECT id, c, other AS id FROM t", "c", `returns column "id" twice`},
		{"syntax error", "SELEC id FROM t", "c", "SQLSTATE 42601"},
		{"two statements", "SELECT id, c FROM t; SELECT 1", "c", "SQLSTATE 42601"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(ctx, conn, Options{Query: tc.query, Cursor: tc.cursor, Keys: []string{"id"}, BatchSize: 10})
			if err == nil || !strings.Contains(err.Error(), tc.want) || failure.Classify(err) != etlv1.ErrorBusiness {
				t.Fatalf("Open = %v (%s), want a business error containing %q", err, failure.Classify(err), tc.want)
			}
		})
	}
}

func TestNullOrderColumnsAreErrors(t *testing.T) {
	conn := connectSource(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `CREATE TABLE t AS SELECT g AS id, CASE WHEN g = 5 THEN NULL ELSE now() + g * interval '1s' END AS c
		FROM generate_series(1, 20) g`); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, conn, Options{Query: "SELECT * FROM t", Cursor: "c", Keys: []string{"id"}, BatchSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	// NULLs sort last: a page that reaches them fails and names the row.
	if _, err := r.Read(ctx, nil); err == nil || !strings.Contains(err.Error(), `source row (id=5) has a NULL cursor column "c"`) {
		t.Fatalf("Read = %v", err)
	}
	// After a checkpoint the row comparison can never match the row: the final check finds it.
	key, found, err := r.FindNull(ctx)
	if err != nil || !found || key != "id=5" {
		t.Fatalf("FindNull = %q, %v, %v", key, found, err)
	}
}
