package bench

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkUpsertRejects measures what rejected rows cost the Postgres sink: the 1M-row
// upsert of pg_upsert_1m into a table whose check constraint refuses 0.01% of the rows
// (every 10,000th, so that every other batch of 5,000 holds one), with spec.errors
// tolerating them, against the same run into the table without the constraint. Each batch
// with a bad row fails, is written again in parts under savepoints until the row is found,
// and its rejects commit with its checkpoint. Best of three of each, interleaved.
func BenchmarkUpsertRejects(b *testing.B) {
	e := setup(b)
	runs := 0
	nextRun := func() string { runs++; return fmt.Sprintf("rejects-%d", runs) }
	spec := func(errors bool) map[string]any {
		s := map[string]any{
			"mode": "Full",
			"source": map[string]any{"connection": "main", "query": "SELECT * FROM src",
				"cursor": map[string]any{"column": "updated_at", "keyColumns": []string{"id"}}},
			"target":    map[string]any{"name": "analytics.items"},
			"batchSize": batchSize,
		}
		if errors {
			s["errors"] = map[string]any{"maxRejectedRows": 1000}
		}
		return s
	}
	// Each run starts without rejects: a pipeline that has some checks every row it writes
	// against them, which is not what this measures.
	noRejects := `DO $$ BEGIN IF to_regclass('etl.etl_rejects') IS NOT NULL THEN TRUNCATE etl.etl_rejects; END IF; END $$`
	var clean, rejecting []time.Duration
	for range 3 {
		e.exec(`ALTER TABLE analytics.items DROP CONSTRAINT IF EXISTS one_in_ten_thousand`)
		e.fresh("items")
		e.exec(noRejects)
		clean = append(clean, e.runSpec(spec(false), nextRun()).wall)

		e.fresh("items")
		e.exec(`ALTER TABLE analytics.items ADD CONSTRAINT one_in_ten_thousand CHECK (id % 10000 <> 0)`)
		e.exec(noRejects)
		rejecting = append(rejecting, e.runSpec(spec(true), nextRun()).wall)
		var rejects, written int64
		if err := e.conn.QueryRow(b.Context(), `SELECT (SELECT count(*) FROM etl.etl_rejects), (SELECT count(*) FROM analytics.items)`).
			Scan(&rejects, &written); err != nil {
			b.Fatal(err)
		}
		if rejects != bigRows/10000 || written != bigRows-rejects {
			b.Fatalf("the run kept %d rejects and wrote %d rows, want %d and %d", rejects, written, bigRows/10000, bigRows-bigRows/10000)
		}
	}
	e.exec(`ALTER TABLE analytics.items DROP CONSTRAINT IF EXISTS one_in_ten_thousand`)
	b.Logf("without rejects %v, with 0.01%% rejected %v", clean, rejecting)
	rate := func(d time.Duration) float64 { return bigRows / d.Seconds() }
	report("pg_upsert_1m_with_rejects", rate(slices.Min(rejecting)), rate(slices.Min(clean)), "rows/s")
	// What one batch with a bad row costs: the time the rejecting run took beyond the clean
	// one, per batch that held a bad row.
	badBatches := float64(bigRows / 10000)
	cleanBatch := slices.Min(clean).Seconds() * batchSize / bigRows
	extra := (slices.Min(rejecting) - slices.Min(clean)).Seconds() / badBatches
	report("pg_batch_with_one_reject", 1000*(cleanBatch+extra), 1000*cleanBatch, "ms")
}
