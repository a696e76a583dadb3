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
}
