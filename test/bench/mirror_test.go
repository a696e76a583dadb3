package bench

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

// mirrorSpec is a Full run of the whole source into analytics.items, mirrored or not.
func mirrorSpec(fullSync string) map[string]any {
	return map[string]any{
		"mode": "Full",
		"source": map[string]any{"connection": "main", "query": "SELECT * FROM src",
			"cursor": map[string]any{"column": "updated_at", "keyColumns": []string{"id"}}},
		"target":    map[string]any{"name": "analytics.items", "fullSync": fullSync},
		"batchSize": batchSize,
	}
}

var sweepSeconds = regexp.MustCompile(`"msg":"mirror complete".*"seconds":([0-9.e+-]+)`)

// BenchmarkMirror measures Mirror runs on Postgres:
//
//   - pg_mirror_full_1m: a Full Mirror run of the million rows into an empty table (rows/s),
//     against a Full Upsert run of the same rows: what recording the keys costs.
//
//   - pg_mirror_sweep_1m: the sweep at the end of a Full Mirror run after 1% of the source's
//     keys went (seconds), against an in-database DELETE ... WHERE NOT EXISTS (SELECT 1 FROM
//     src ...) of the same rows from the same table.
//
//   - pg_delete_when_1m: a Full run of the source with a soft-delete marker (target.deleteWhen)
//     set on 1% of the rows (rows/s of the reader), against a Full run of the same rows
//     without the marker column: what reading the marker, deleting and dropping it cost.
//
//     go test -run '^$' -bench Mirror -benchtime=1x -timeout 60m ./test/bench/
func BenchmarkMirror(b *testing.B) {
	e := setup(b)
	rate := func(d time.Duration) float64 { return bigRows / d.Seconds() }
	var upsert, mirror []time.Duration
	for round := range 2 {
		e.fresh("items")
		upsert = append(upsert, e.runSpec(mirrorSpec("Upsert"), fmt.Sprintf("upsert-%d", round)).wall)
		e.fresh("items")
		mirror = append(mirror, e.runSpec(mirrorSpec("Mirror"), fmt.Sprintf("mirror-%d", round)).wall)
		b.Logf("round %d: Full Upsert %s, Full Mirror %s", round, upsert[round], mirror[round])
	}
	report("pg_mirror_full_1m", rate(slices.Min(mirror)), rate(slices.Min(upsert)), "rows/s")

	// 1% of the keys leave the source; the sink still has them.
	e.exec(`CREATE TABLE gone AS SELECT * FROM src WHERE id % 100 = 0`)
	e.exec(`DELETE FROM src WHERE id % 100 = 0`)
	e.exec(`VACUUM ANALYZE src`)
	var sweep, base []time.Duration
	for round := range 2 {
		e.exec(`INSERT INTO analytics.items SELECT * FROM gone ON CONFLICT DO NOTHING`)
		e.exec(`VACUUM ANALYZE analytics.items`)
		e.exec(`CHECKPOINT`)
		start := time.Now()
		e.exec(`DELETE FROM analytics.items t WHERE NOT EXISTS (SELECT 1 FROM src s WHERE s.id = t.id)`)
		base = append(base, time.Since(start))

		e.exec(`INSERT INTO analytics.items SELECT * FROM gone`)
		e.exec(`VACUUM ANALYZE analytics.items`)
		e.exec(`CHECKPOINT`)
		res := e.runSpec(mirrorSpec("Mirror"), fmt.Sprintf("sweep-%d", round), "--log-level", "info")
		m := sweepSeconds.FindStringSubmatch(res.log)
		if m == nil {
			b.Fatalf("the runner logged no sweep:\n%s", res.log)
		}
		s, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			b.Fatal(err)
		}
		sweep = append(sweep, time.Duration(s*float64(time.Second)))
		var n int64
		if err := e.conn.QueryRow(b.Context(), `SELECT count(*) FROM analytics.items`).Scan(&n); err != nil || n != bigRows-bigRows/100 {
			b.Fatalf("after the sweep the table holds %d rows, want %d (%v)", n, bigRows-bigRows/100, err)
		}
		b.Logf("round %d: sweep %s (whole run %s), DELETE ... NOT EXISTS %s", round, sweep[round], res.wall, base[round])
	}
	sec := func(d time.Duration) float64 { return d.Seconds() }
	report("pg_mirror_sweep_1m", sec(slices.Min(sweep)), sec(slices.Min(base)), "s")

	e.exec(`ALTER TABLE src ADD COLUMN deleted_at timestamptz`)
	e.exec(`UPDATE src SET deleted_at = now() WHERE id % 100 = 1`)
	e.exec(`VACUUM ANALYZE src`)
	columns := "id, updated_at, name, amount, qty, payload"
	plain := mirrorSpec("Upsert")
	plain["source"].(map[string]any)["query"] = "SELECT " + columns + " FROM src"
	marked := mirrorSpec("Upsert")
	marked["source"].(map[string]any)["query"] = "SELECT " + columns + ", deleted_at FROM src"
	marked["target"].(map[string]any)["deleteWhen"] = map[string]any{"column": "deleted_at"}
	var without, with []time.Duration
	for round := range 2 {
		e.fresh("items")
		without = append(without, e.runSpec(plain, fmt.Sprintf("plain-%d", round)).wall)
		e.fresh("items")
		with = append(with, e.runSpec(marked, fmt.Sprintf("marked-%d", round)).wall)
		b.Logf("round %d: without the marker %s, with it %s", round, without[round], with[round])
	}
	read := func(d time.Duration) float64 { return float64(bigRows-bigRows/100) / d.Seconds() }
	report("pg_delete_when_1m", read(slices.Min(with)), read(slices.Min(without)), "rows/s")
}
