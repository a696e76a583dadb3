package runner

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// softQuery reads src with its soft-delete marker.
const softQuery = "SELECT id, updated_at, name, amount, doc, deleted_at FROM src"

// liveRows are the source rows a sink of a soft-deleting pipeline must hold.
const liveRows = "src WHERE deleted_at IS NULL"

// softSource is createSource with a deleted_at column.
func softSource(t *testing.T, db *testDB, n int) {
	t.Helper()
	createSource(t, db, n)
	db.exec(t, `ALTER TABLE src ADD COLUMN deleted_at timestamptz`)
}

// withTarget sets fields of a spec's target.
func withTarget(t *testing.T, spec string, fields map[string]any) string {
	t.Helper()
	return editSpec(t, spec, func(m map[string]any) {
		target := m["target"].(map[string]any)
		for k, v := range fields {
			target[k] = v
		}
	})
}

// editSpec returns a spec snapshot changed by edit, which gets it as decoded JSON.
func editSpec(t *testing.T, spec string, edit func(map[string]any)) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(spec), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var softDelete = map[string]any{"deleteWhen": map[string]any{"column": "deleted_at"}}

// TestSoftDeletesReachTheSink soft-deletes and revives source rows between Incremental runs:
// after each run the sink holds exactly the live rows, by count and checksum, and the status
// counts the deletes apart from the writes. It runs each sink topology, Elasticsearch, and a
// python task that passes rows through (the flags follow the rows through the transform).
func TestSoftDeletesReachTheSink(t *testing.T) {
	t.Parallel()
	type sinkCase struct {
		name  string
		setup func(t *testing.T) (db *testDB, r *inProcess, check func())
	}
	pg := func(tp topology, python bool) func(t *testing.T) (*testDB, *inProcess, func()) {
		return func(t *testing.T) (*testDB, *inProcess, func()) {
			main, dst := dbsFor(t, tp)
			softSource(t, main, 3000)
			createTarget(t, dst, "items")
			o := specOpts{sourceConn: "main", targetConn: dst.name, query: softQuery, batch: 400}
			spec := specJSON(t, o)
			if python {
				spec = tasksSpecJSON(t, o, 0, pyTask{"same", "def transform(row):\n    return row\n"})
			}
			r := &inProcess{cfg: testConfig(main, dst), env: envOf(main, dst), spec: withTarget(t, spec, softDelete),
				opts: Options{Python: pythonForTests()}}
			return main, r, func() { sinkMatches(t, main, liveRows, dst, "items") }
		}
	}
	cases := []sinkCase{
		{"postgres in the state database", pg(topologies[0], false)},
		{"postgres in another database", pg(topologies[1], false)},
		{"postgres through a python task", pg(topologies[0], true)},
		{"elasticsearch", func(t *testing.T) (*testDB, *inProcess, func()) {
			db := newTestDB(t, "main")
			softSource(t, db, 3000)
			ix := newESIndex(t, srcMappings)
			spec := esSpec(t, specOpts{sourceConn: "main", target: "es:" + ix.name, query: softQuery, batch: 400}, etlv1.ActionUpdate)
			r := &inProcess{cfg: esConfig(ix.url, db, ix.name), env: envOf(db), spec: withTarget(t, spec, softDelete)}
			return db, r, func() { indexMatches(t, db, liveRows, ix) }
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, r, check := tc.setup(t)
			steps := []struct {
				change  string
				deleted int64
			}{
				{"", 0},
				// Soft-delete a fifth of the rows (later cursor values, below the read horizon:
				// the next run reads them).
				{`UPDATE src SET deleted_at = now(), updated_at = '2025-01-01' WHERE id % 5 = 0`, 600},
				// Revive half of them, delete a few more, and delete rows the sink never had.
				{`UPDATE src SET deleted_at = CASE WHEN id % 10 = 0 THEN NULL ELSE now() END,
					updated_at = '2025-01-02' WHERE id % 10 = 0 OR id % 333 = 1`, 9},
				{`INSERT INTO src SELECT g, '2025-01-03', 'gone', 1, '{}', now() FROM generate_series(5001, 5100) g`, 100},
			}
			for i, st := range steps {
				if st.change != "" {
					db.exec(t, st.change)
				}
				r.rep = nil
				r.runID = "run-" + string(rune('1'+i))
				requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
				check()
				if end := r.rep.lastEnd(t); end.RowsDeleted != st.deleted {
					t.Fatalf("step %d: the run reported %d deletes, want %d", i, end.RowsDeleted, st.deleted)
				}
			}
			if n := db.queryInt(t, `SELECT sum(rows_deleted) FROM etl.etl_runs`); n != 709 {
				t.Fatalf("etl_runs counts %d deletes, want 709", n)
			}
		})
	}
}

// TestDeleteWhenNeedsItsColumn fails a run whose marker column the reader does not return,
// before anything is written.
func TestDeleteWhenNeedsItsColumn(t *testing.T) {
	db := newTestDB(t, "main")
	softSource(t, db, 100)
	createTarget(t, db, "items")
	spec := withTarget(t, specJSON(t, specOpts{sourceConn: "main"}), map[string]any{"deleteWhen": map[string]any{"column": "removed"}})
	r := &inProcess{cfg: testConfig(db), env: envOf(db), spec: spec}
	res := r.run(t)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	if !strings.Contains(res.Message, `target.deleteWhen.column "removed" is not a column of the reader's output`) {
		t.Fatalf("message %q does not name the missing column", res.Message)
	}
	if n := db.queryInt(t, `SELECT count(*) FROM analytics.items`); n != 0 {
		t.Fatalf("%d rows written before the error", n)
	}
}

// TestPythonDeleteIsExplicit: a task's sluice.Delete deletes the key, a later task never sees
// it, and a dict that merely looks like a delete is an ordinary row.
func TestPythonDeleteIsExplicit(t *testing.T) {
	db := newTestDB(t, "main")
	createSource(t, db, 2000)
	createTarget(t, db, "items")
	cfg, env := testConfig(db), envOf(db)
	fill := &inProcess{cfg: cfg, env: env, spec: specJSON(t, specOpts{sourceConn: "main", mode: etlv1.ModeFull})}
	requireOutcome(t, fill.run(t), OutcomeIdle, configv1.ExitOK)

	del := pyTask{"delete-fourths", `
import sluice

def transform(row):
    if row["id"] % 4 == 0:
        return sluice.Delete({"id": row["id"]})
    if row["id"] % 4 == 1:
        return [row, sluice.Delete(dict(row, id=row["id"] + 1))]
    return row
`}
	after := pyTask{"after", `
def transform(row):
    if row["id"] % 4 == 0 or row["id"] % 4 == 2 and row.get("name") is None:
        raise AssertionError("a later task saw a delete: %r" % (row,))
    return row
`}
	spec := tasksSpecJSON(t, specOpts{sourceConn: "main", mode: etlv1.ModeFull, batch: 300}, 0, del, after)
	r := &inProcess{cfg: cfg, env: env, spec: spec, opts: Options{Python: pythonForTests()}, runID: "run-2"}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	// Row 4k+1 deletes 4k+2, which row 4k+2 itself writes back later in the same order:
	// the last word on a key wins, as with any two rows of one key.
	sinkMatches(t, db, "src WHERE id % 4 <> 0", db, "items")
	end := r.rep.lastEnd(t)
	if end.RowsDeleted != 1000 || end.RowsWritten != 1500 {
		t.Fatalf("reported %d deletes and %d writes, want 1000 and 1500", end.RowsDeleted, end.RowsWritten)
	}
}

// TestKilledRunnersWithSoftDeletesUnderWriters soft-deletes and revives rows from concurrent
// writers while runner processes are killed at random moments: once the writers stop and one
// more run completes, the sinks hold exactly the live rows.
func TestKilledRunnersWithSoftDeletesUnderWriters(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and runs it many times")
	}
	bin := buildSluice(t)
	const update = `UPDATE src SET name = $2, amount = $3, doc = jsonb_build_object('w', $4::int),
		deleted_at = CASE WHEN $4::int % 2 = 0 AND $3::numeric % 3 = 0 THEN now() END WHERE id = $1`
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		main, dst := dbsFor(t, topologies[1])
		stampedSource(t, main, 100000)
		main.exec(t, `ALTER TABLE src ADD COLUMN deleted_at timestamptz`)
		createTarget(t, dst, "items")
		cfg := writeConfig(t, testConfig(main, dst))
		spec := withTarget(t, specJSON(t, specOpts{sourceConn: "main", targetConn: dst.name, query: softQuery, batch: 2000,
			attempts: 3, backoff: 200 * time.Millisecond}), softDelete)
		killUnderLoad(t, bin, main, envOf(main, dst), spec, cfg, update)
		sinkMatches(t, main, liveRows, dst, "items")
		if n := main.queryInt(t, `SELECT count(*) FROM src WHERE deleted_at IS NOT NULL`); n < 100 {
			t.Fatalf("only %d rows soft-deleted: the writers did not exercise deletes", n)
		}
	})
	t.Run("elasticsearch", func(t *testing.T) {
		t.Parallel()
		db := newTestDB(t, "main")
		stampedSource(t, db, 100000)
		db.exec(t, `ALTER TABLE src ADD COLUMN deleted_at timestamptz`)
		ix := newESIndex(t, srcMappings)
		cfg := writeConfig(t, esConfig(ix.url, db, ix.name))
		spec := withTarget(t, esSpec(t, specOpts{sourceConn: "main", target: "es:" + ix.name, query: softQuery, batch: 2000,
			attempts: 3, backoff: 200 * time.Millisecond}, etlv1.ActionIndex), softDelete)
		killUnderLoad(t, bin, db, envOf(db), spec, cfg, update)
		indexMatches(t, db, liveRows, ix)
	})
}
