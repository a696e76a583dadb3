// Package bench measures the runner against baselines taken in the same run, on the same data
// and the same Postgres. It asserts nothing: each figure is one line
//
//	bench: <name> value=<v> <unit> baseline=<b> <unit> ratio=<v/b>
//
// Run it with
//
//	SLUICE_TEST_PG_DSN=postgres://... go test -run '^$' -bench . -benchtime=1x -timeout 60m ./test/bench/
//
// (-bench Runner, -bench PythonIdentity, -bench UpsertMetrics... for one of the benchmarks).
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	"github.com/sluice-dev/sluice/test/testenv"
)

const (
	bigRows   = 1_000_000
	smallRows = 100_000
	batchSize = 5000
)

// env is the benchmark's database, binary and configuration.
type env struct {
	b    *testing.B
	dsn  string
	conn *pgx.Conn
	bin  string
	cfg  string
}

func report(name string, value, baseline float64, unit string) {
	fmt.Printf("bench: %s value=%.6g %s baseline=%.6g %s ratio=%.3f\n", name, value, unit, baseline, unit, value/baseline)
}

func setup(b *testing.B) *env {
	b.Helper()
	e := &env{b: b, dsn: testenv.NewPostgresDB(b)}
	ctx := context.Background()
	var err error
	if e.conn, err = pgx.Connect(ctx, e.dsn); err != nil {
		b.Fatalf("connect: %v", err)
	}
	b.Cleanup(func() { _ = e.conn.Close(context.Background()) })

	dir := b.TempDir()
	e.bin = filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-o", e.bin, ".")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := configv1.OperatorConfig{
		APIVersion: configv1.APIVersion, Kind: configv1.Kind,
		Runner:          configv1.RunnerConfig{Image: "sluice:bench", ServiceAccountName: "runner", ConfigMapName: "cfg"},
		StateConnection: "main",
		Postgres:        []configv1.PostgresConnection{{Name: "main", DSNSecret: configv1.SecretKeyRef{Name: "main", Key: "dsn"}}},
		AllowedTargets:  configv1.AllowedTargets{PostgresTables: []string{"analytics.items"}},
	}
	data, _ := json.Marshal(cfg)
	e.cfg = filepath.Join(dir, "config.json")
	if err := os.WriteFile(e.cfg, data, 0o600); err != nil {
		b.Fatal(err)
	}

	// About 150 bytes a row: a key, a cursor, text, a numeric, an integer.
	e.exec(`CREATE TABLE src (
		id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, name text NOT NULL,
		amount numeric(14,2) NOT NULL, qty integer NOT NULL, payload text NOT NULL)`)
	e.exec(`INSERT INTO src
		SELECT g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', 'customer number ' || g,
		       (g % 100000) * 1.37, g % 1000, repeat(md5(g::text), 2)
		FROM generate_series(1, $1::int) g`, bigRows)
	e.exec(`CREATE INDEX src_keyset ON src (updated_at, id)`)
	e.exec(`VACUUM ANALYZE src`)
	e.exec(`CREATE SCHEMA analytics`)
	for _, t := range []string{"items", "baseline"} {
		e.exec(`CREATE TABLE analytics.` + t + ` (
			id bigint PRIMARY KEY, updated_at timestamptz, name text, amount numeric(14,2), qty integer, payload text)`)
	}
	var width float64
	if err := e.conn.QueryRow(ctx, `SELECT avg(pg_column_size(s.*)) FROM (SELECT * FROM src LIMIT 10000) s`).Scan(&width); err != nil {
		b.Fatal(err)
	}
	b.Logf("source: %d rows of %.0f bytes", bigRows, width)
	return e
}

func (e *env) exec(sql string, args ...any) {
	e.b.Helper()
	if _, err := e.conn.Exec(context.Background(), sql, args...); err != nil {
		e.b.Fatalf("%s: %v", strings.SplitN(strings.TrimSpace(sql), "\n", 2)[0], err)
	}
}

// runResult is one runner process.
type runResult struct {
	wall   time.Duration
	maxRSS int64 // bytes
	// log is what the runner wrote.
	log string
}

func (e *env) runner(mode, query, runID string, extra ...string) runResult {
	e.b.Helper()
	return e.runSpec(map[string]any{
		"mode": mode,
		"source": map[string]any{"connection": "main", "query": query,
			"cursor": map[string]any{"column": "updated_at", "keyColumns": []string{"id"}}},
		"target":    map[string]any{"name": "analytics.items"},
		"batchSize": batchSize,
	}, runID, extra...)
}

func (e *env) runSpec(spec map[string]any, runID string, extra ...string) runResult {
	e.b.Helper()
	js, _ := json.Marshal(spec)
	args := append([]string{"runner", "--config", e.cfg, "--no-status", "--termination-log", "", "--log-level", "warn"}, extra...)
	cmd := exec.Command(e.bin, args...)
	cmd.Env = append(os.Environ(),
		configv1.PostgresDSNEnv("main")+"="+e.dsn,
		configv1.EnvPipelineNamespace+"=bench", configv1.EnvPipelineName+"=items",
		configv1.EnvRunID+"="+runID, configv1.EnvSpec+"="+string(js), configv1.EnvGeneration+"=1")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		e.b.Fatalf("runner %s: %v\n%s", runID, err, out.String())
	}
	wall := time.Since(start)
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	var rss int64
	if ru != nil {
		rss = ru.Maxrss * 1024 // Linux reports kilobytes
	}
	return runResult{wall: wall, maxRSS: rss, log: out.String()}
}

func (e *env) timed(sql string) time.Duration {
	e.b.Helper()
	start := time.Now()
	e.exec(sql)
	return time.Since(start)
}

// fresh empties the target so that every measured write inserts the same rows into an empty,
// vacuumed table.
func (e *env) fresh(table string) {
	e.exec(`TRUNCATE analytics.` + table)
	e.exec(`VACUUM ANALYZE analytics.` + table)
	e.exec(`CHECKPOINT`)
}

func BenchmarkRunner(b *testing.B) {
	e := setup(b)
	explain(b, e)
	runs := 0
	nextRun := func() string { runs++; return fmt.Sprintf("run-%d", runs) }
	full := "SELECT * FROM src"

	// pg_upsert_1m and checkpoint_overhead: best of three of each, interleaved, so that the
	// machine's background load weighs on all of them alike.
	var base, perBatch, atEnd []time.Duration
	var bigRSS int64
	for range 3 {
		e.fresh("baseline")
		base = append(base, e.timed(`INSERT INTO analytics.baseline SELECT * FROM src
			ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at, name = EXCLUDED.name,
			amount = EXCLUDED.amount, qty = EXCLUDED.qty, payload = EXCLUDED.payload`))
		e.fresh("items")
		r := e.runner("Full", full, nextRun())
		perBatch = append(perBatch, r.wall)
		bigRSS = max(bigRSS, r.maxRSS)
		e.fresh("items")
		atEnd = append(atEnd, e.runner("Full", full, nextRun(), "--checkpoint-at-end").wall)
	}
	b.Logf("baseline %v, per-batch checkpoints %v, checkpoint at end %v", base, perBatch, atEnd)
	rate := func(d time.Duration) float64 { return bigRows / d.Seconds() }
	report("pg_upsert_1m", rate(slices.Min(perBatch)), rate(slices.Min(base)), "rows/s")

	// pg_incremental_noop: catch up once, then time runs that find nothing new.
	e.runner("Incremental", full, nextRun())
	var noop []time.Duration
	for range 5 {
		noop = append(noop, e.runner("Incremental", full, nextRun()).wall)
	}
	var ping []time.Duration
	for range 5 {
		start := time.Now()
		c, err := pgx.Connect(context.Background(), e.dsn)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
			b.Fatal(err)
		}
		_ = c.Close(context.Background())
		ping = append(ping, time.Since(start))
	}
	b.Logf("no-op runs %v; connect + SELECT 1 %v", noop, ping)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	report("pg_incremental_noop", ms(median(noop)), ms(median(ping)), "ms")

	// runner_rss: the same full run on a tenth of the rows, as many times as the big one, the
	// highest peak of each.
	var smallRSS int64
	for range 3 {
		e.fresh("items")
		smallRSS = max(smallRSS, e.runner("Full", fmt.Sprintf("SELECT * FROM src WHERE id <= %d", smallRows), nextRun()).maxRSS)
	}
	b.Logf("peak RSS: %.1f MiB at %d rows, %.1f MiB at %d rows", mib(bigRSS), bigRows, mib(smallRSS), smallRows)
	report("runner_rss", mib(bigRSS), mib(smallRSS), "MiB")

	report("checkpoint_overhead", rate(slices.Min(perBatch)), rate(slices.Min(atEnd)), "rows/s")

	// runner_rss_wide: rows of 1 MiB (batchSize 5000, the default maxBatchBytes of 16Mi) at
	// two table sizes: the peak must not grow with the table.
	e.exec(`CREATE TABLE src_wide AS SELECT g AS id, timestamptz '2024-01-01' + g * interval '1s' AS updated_at,
		'w' || g AS name, g * 1.0 AS amount, g AS qty, repeat(md5(g::text), 32768) AS payload FROM generate_series(1, 300) g`)
	e.exec(`ALTER TABLE src_wide ADD PRIMARY KEY (id)`)
	var wide [2]int64
	for i, n := range []int{150, 300} {
		e.fresh("items")
		wide[i] = e.runner("Full", fmt.Sprintf("SELECT * FROM src_wide WHERE id <= %d", n), nextRun()).maxRSS
	}
	b.Logf("peak RSS on 1 MiB rows: %.1f MiB at 150 rows, %.1f MiB at 300 rows", mib(wide[0]), mib(wide[1]))
	report("runner_rss_wide", mib(wide[1]), mib(wide[0]), "MiB")
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// explain logs the plan of an Incremental keyset page on the 1M-row table, its read horizon
// included: both bounds must reach an index scan, not a sequential scan and a sort.
func explain(b *testing.B, e *env) {
	b.Helper()
	sql := `EXPLAIN SELECT * FROM (
SELECT * FROM src
) AS q WHERE (q."updated_at", q."id") > (CAST($1::text AS timestamp with time zone), CAST($2::text AS bigint))
  AND q."updated_at" < CAST($3::text AS timestamp with time zone)
ORDER BY q."updated_at", q."id" LIMIT 5001`
	rows, err := e.conn.Query(context.Background(), sql, "2024-01-07 00:00:00Z", "500000", time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		b.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("keyset page plan:\n%s", strings.Join(plan, "\n"))
}

// BenchmarkPythonIdentity measures what a python task costs: the same full run of the 1M
// rows with one identity task, against the run without a transform (whose batches travel
// undecoded from the reader to the sink). Best of three of each, interleaved.
func BenchmarkPythonIdentity(b *testing.B) {
	e := setup(b)
	python := "python3"
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		python = "/usr/bin/python3" // Debian's, as in the image
	}
	runs := 0
	nextRun := func() string { runs++; return fmt.Sprintf("py-%d", runs) }
	tasks := map[string]any{
		"mode": "Full",
		"source": map[string]any{"connection": "main",
			"cursor": map[string]any{"column": "updated_at", "keyColumns": []string{"id"}}},
		"tasks": []map[string]any{
			{"name": "read", "sql": "SELECT * FROM src"},
			{"name": "identity", "python": "def transform(row):\n    return row\n"},
		},
		"target":    map[string]any{"name": "analytics.items"},
		"batchSize": batchSize,
	}
	var base, py []time.Duration
	for range 3 {
		e.fresh("items")
		base = append(base, e.runner("Full", "SELECT * FROM src", nextRun()).wall)
		e.fresh("items")
		py = append(py, e.runSpec(tasks, nextRun(), "--python", python).wall)
	}
	var same int64
	if err := e.conn.QueryRow(context.Background(), `SELECT count(*) FROM analytics.items i JOIN src s USING (id)
		WHERE (i.updated_at, i.name, i.amount, i.qty, i.payload) = (s.updated_at, s.name, s.amount, s.qty, s.payload)`).Scan(&same); err != nil {
		b.Fatal(err)
	}
	if same != bigRows {
		b.Fatalf("the python run wrote %d rows equal to the source, want %d", same, bigRows)
	}
	b.Logf("no transform %v, identity python task %v", base, py)
	rate := func(d time.Duration) float64 { return bigRows / d.Seconds() }
	report("python_identity_1m", rate(slices.Min(py)), rate(slices.Min(base)), "rows/s")
}
