package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	"github.com/sluice-dev/sluice/test/testenv"
)

// The CDC benchmark's knobs.
const (
	// cdcRows is the size of the source table the stream starts from (its copy takes a few
	// seconds).
	cdcRows = 200_000
	// cdcClients are pgbench's clients (-c), cdcThreads its threads (-j).
	cdcClients = 4
	cdcThreads = 2
	// cdcProbes are the single-row transactions of the lag baseline, one every 100-400 ms.
	cdcProbes = 30
	// cdcCatchUp is the most time the sink may take to catch up with the source.
	cdcCatchUp = 60 * time.Second
)

// cdcScript is pgbench's transaction: a delete and an update of random rows of the initial
// table (lower key first, so that two clients never wait for each other in a cycle: a
// deadlock would abort a client), then an insert of a new row. Every row written carries
// committed_at = clock_timestamp(), taken by the statement itself: the insert, the last
// statement, takes it just before COMMIT.
var cdcScript = fmt.Sprintf(`\set d random(1, %[1]d)
\set u random(1, %[1]d)
BEGIN;
\if :d < :u
DELETE FROM src WHERE id = :d;
UPDATE src SET v = v + 1, amount = amount + 0.01, name = 'upd ' || :client_id::text, committed_at = clock_timestamp() WHERE id = :u;
\else
UPDATE src SET v = v + 1, amount = amount + 0.01, name = 'upd ' || :client_id::text, committed_at = clock_timestamp() WHERE id = :u;
DELETE FROM src WHERE id = :d;
\endif
INSERT INTO src (id, v, name, amount, payload, committed_at)
  VALUES (nextval('src_ids'), :u, 'ins ' || :client_id::text, :u * 0.01, md5(:u::text) || md5(:d::text), clock_timestamp());
END;
`, cdcRows)

// cdcColumns are the replicated columns, in the order of the checksums.
const cdcColumns = "id, v, name, amount, payload, committed_at"

// BenchmarkCDC measures a continuous CDC run (spec.mode CDC, no schedule) streaming the
// changes of pgbench, run for a fixed time on the source table with a few clients, into a
// Postgres table of the same database (the state database: each batch commits with its
// checkpoint):
//
//   - cdc_apply: the row changes the source committed during the pgbench run (inserts,
//     updates and deletes, pg_stat_user_tables), all of which the sink applied, over the time
//     from pgbench's start until the sink's commit of the batch that made it equal to the
//     source (changes/s). This counts the catch-up after pgbench stopped, and is bounded by
//     what pgbench offers: while the stream keeps up, it is pgbench's change rate, a little
//     less for the tail. The baseline is pgbench's tps in the same run, so the ratio is
//     changes per source transaction when the stream keeps up (logged: under 3, since the
//     updates and deletes of rows already deleted change nothing), and less when it falls
//     behind.
//
//   - cdc_lag_p50, cdc_lag_p99: per change, the time from the source transaction's commit
//     to the sink's commit of the batch that holds it (s). The source's commit time is the
//     commit timestamp of the source row's transaction when the server already tracks them
//     (track_commit_timestamp; turning it on needs a restart, and the benchmark does not).
//     Otherwise, as on the test server, it is approximated by committed_at, which each
//     statement sets to clock_timestamp(): at most the rest of its transaction (two short
//     statements, well under a millisecond) before the commit, which overstates the lag by as
//     much. The sink's commit time is recorded by a deferred constraint trigger on the sink
//     table, which fires at COMMIT, after the batch's rows and checkpoint were written: once
//     per sink transaction it stores the transaction's xid and clock_timestamp() in
//     sink_commits, and the rows' xmin names their transaction (it costs the sink a trigger
//     call per row at commit, a few milliseconds a batch). The samples are the changes the
//     sink still holds at the end: the last insert or update of each row pgbench wrote
//     (deletes leave nothing to time). The baseline is the lag of an idle stream in the same
//     run, after the catch-up: single-row transactions, one every 100-400 ms, that the runner
//     applies one at a time: the floor that the stream's batching (a batch waits 100 ms for
//     more changes), a sink commit and the source's WAL flush set, without load. (With
//     synchronous_commit off, as on the test server, a commit reaches the walsender once the
//     WAL writer flushed it, up to wal_writer_delay later: both figures include that.)
//
// The sink must equal the source (count and md5 checksum) once caught up, else the benchmark
// fails. It needs pgbench (PATH, else /usr/lib/postgresql/15/bin/pgbench):
//
//	go test -run '^$' -bench CDC -benchtime=1x ./test/bench/
//
// SLUICE_BENCH_CDC_SECONDS sets how long pgbench runs (20 s).
func BenchmarkCDC(b *testing.B) {
	pgbench := findPgbench(b)
	seconds := 20
	if v := os.Getenv("SLUICE_BENCH_CDC_SECONDS"); v != "" {
		var err error
		if seconds, err = strconv.Atoi(v); err != nil || seconds < 1 {
			b.Fatalf("SLUICE_BENCH_CDC_SECONDS=%q: want a positive number of seconds", v)
		}
	}
	e := setupCDC(b)
	ctx := context.Background()

	// The copy: a bounded run (a schedule) copies the table from its slot's snapshot and
	// ends once it streamed the WAL current at its start; the continuous run streams from
	// its checkpoint, the same slot (the schedule is not part of the stream's identity).
	copyStart := time.Now()
	if r := e.startCDC("copy", true); r.wait(5*time.Minute) != 0 {
		b.Fatalf("the copy run failed:\n%s", r.log.String())
	}
	b.Logf("copy of %d rows: %s", cdcRows, time.Since(copyStart).Round(time.Millisecond))
	e.requireSinkMatches("after the copy")

	e.exec(`CREATE TABLE sink_commits (xid bigint PRIMARY KEY, at timestamptz NOT NULL)`)
	e.exec(`CREATE FUNCTION stamp_sink_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		DECLARE x bigint := txid_current();
		BEGIN
			IF current_setting('sluice_bench.stamped', true) IS DISTINCT FROM x::text THEN
				PERFORM set_config('sluice_bench.stamped', x::text, true);
				INSERT INTO sink_commits VALUES (x % 4294967296, clock_timestamp());
			END IF;
			RETURN NULL;
		END $$`)
	e.exec(`CREATE CONSTRAINT TRIGGER stamp_commit AFTER INSERT OR UPDATE OR DELETE ON analytics.items
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION stamp_sink_commit()`)
	e.exec(`VACUUM ANALYZE src`)
	e.exec(`VACUUM ANALYZE analytics.items`)
	e.exec(`CHECKPOINT`)

	if e.commitTimestamps {
		b.Logf("source commits timed by their commit timestamps (track_commit_timestamp on)")
	} else {
		b.Logf("source commits timed by committed_at (track_commit_timestamp off): an approximation")
	}
	run := e.startCDC("stream", false)
	e.waitSlotActive(run)

	changesBefore := e.srcChanges()
	start := e.dbNow()
	tps, txns := e.pgbench(pgbench, seconds)
	end := e.dbNow()
	e.waitCaughtUp(run, "after pgbench")
	changes := e.srcChanges() - changesBefore
	var caughtUp time.Time
	var batches int64
	if err := e.conn.QueryRow(ctx, `SELECT max(at), count(*) FROM sink_commits WHERE at >= $1`, start).Scan(&caughtUp, &batches); err != nil {
		b.Fatal(err)
	}
	apply := float64(changes) / caughtUp.Sub(start).Seconds()
	b.Logf("pgbench: %d transactions, %d row changes in %s (%.0f changes/s, %.2f a transaction); sink caught up %s after pgbench ended, in %d batches",
		txns, changes, end.Sub(start).Round(time.Millisecond), float64(changes)/end.Sub(start).Seconds(),
		float64(changes)/float64(txns), caughtUp.Sub(end).Round(time.Millisecond), batches)
	e.logBatchIntervals(start)
	loaded := e.lags("under load", `i.committed_at >= $1`, start)

	// The baseline: single-row transactions on the idle stream, on rows pgbench inserted.
	ids, err := pgx.CollectRows(e.query(`SELECT id FROM src ORDER BY id DESC LIMIT $1`, cdcProbes), pgx.RowTo[int64])
	if err != nil || len(ids) != cdcProbes {
		b.Fatalf("probe rows: %v (%d)", err, len(ids))
	}
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for _, id := range ids {
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
		e.exec(`UPDATE src SET v = v + 1, committed_at = clock_timestamp() WHERE id = $1`, id)
	}
	e.waitCaughtUp(run, "after the probes")
	idle := e.lags("idle stream", `i.id = ANY($1)`, ids)

	// SIGTERM aborts the run (ExitInfra, nothing reported); the sink keeps what it committed.
	code := run.stop()
	if code != 0 && code != configv1.ExitInfra {
		b.Fatalf("the stream exited %d on SIGTERM:\n%s", code, run.log.String())
	}
	var slot, confirmed, checkpoint string
	if err := e.conn.QueryRow(ctx, `SELECT s.slot_name, coalesce(s.confirmed_flush_lsn::text, ''),
		coalesce((SELECT array_to_string(incremental_checkpoint, ',') FROM etl.etl_state WHERE namespace = 'bench' AND name = 'cdc'), '')
		FROM pg_replication_slots s WHERE s.database = current_database()`).Scan(&slot, &confirmed, &checkpoint); err != nil {
		b.Fatal(err)
	}
	b.Logf("stream stopped (exit %d); slot %s confirmed %s, checkpoint %s; runner's last progress: %s",
		code, slot, confirmed, checkpoint, lastProgress(run.log.String()))
	e.requireSinkMatches("at the end")

	fmt.Printf("bench: %s value=%.6g %s baseline=%.6g %s ratio=%.3f\n", "cdc_apply", apply, "changes/s", tps, "tps", apply/tps)
	report("cdc_lag_p50", loaded[0], idle[0], "s")
	report("cdc_lag_p99", loaded[1], idle[1], "s")
}

// findPgbench returns pgbench's path; without one the benchmark is skipped (a failure in CI).
func findPgbench(b *testing.B) string {
	b.Helper()
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p
	}
	const debian = "/usr/lib/postgresql/15/bin/pgbench"
	if _, err := os.Stat(debian); err == nil {
		return debian
	}
	msg := "pgbench not available: neither in PATH nor at " + debian
	if testenv.InCI() {
		b.Fatalf("%s; CI=true, so this is a failure", msg)
	}
	b.Skip(msg)
	return ""
}

// cdcEnv is the CDC benchmark's database, binary and configuration.
type cdcEnv struct {
	*env
	uid string
	// commitTimestamps: the server tracks commit timestamps (track_commit_timestamp), which
	// then time the source's commits.
	commitTimestamps bool
}

// setupCDC creates the source table and the sink table, and builds the runner meanwhile.
func setupCDC(b *testing.B) *cdcEnv {
	b.Helper()
	e := &cdcEnv{env: &env{b: b, dsn: testenv.NewPostgresDB(b)}, uid: testenv.UniqueName("bench-cdc-")}
	ctx := context.Background()
	var err error
	if e.conn, err = pgx.Connect(ctx, e.dsn); err != nil {
		b.Fatalf("connect: %v", err)
	}
	b.Cleanup(func() { _ = e.conn.Close(context.Background()) })
	if err := e.conn.QueryRow(ctx, `SELECT current_setting('track_commit_timestamp') = 'on'`).Scan(&e.commitTimestamps); err != nil {
		b.Fatal(err)
	}
	// Registered after the database's cleanup, so run before it: a database with a slot
	// cannot be dropped. The runners are gone by then (their cleanups run first).
	b.Cleanup(e.dropSlots)

	dir := b.TempDir()
	e.bin = filepath.Join(dir, "sluice")
	built := make(chan error, 1)
	go func() {
		build := exec.Command("go", "build", "-o", e.bin, ".")
		build.Dir = testenv.RepoRoot()
		if out, err := build.CombinedOutput(); err != nil {
			built <- fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		built <- nil
	}()
	cfg := configv1.OperatorConfig{
		APIVersion: configv1.APIVersion, Kind: configv1.Kind,
		Runner:          configv1.RunnerConfig{Image: "sluice:bench", ServiceAccountName: "runner", ConfigMapName: "cfg"},
		StateConnection: "main",
		Postgres: []configv1.PostgresConnection{{Name: "main", DSNSecret: configv1.SecretKeyRef{Name: "main", Key: "dsn"},
			ReplicationTables: []string{"public.src"}}},
		AllowedTargets: configv1.AllowedTargets{PostgresTables: []string{"analytics.items"}},
	}
	data, _ := json.Marshal(cfg)
	e.cfg = filepath.Join(dir, "config.json")
	if err := os.WriteFile(e.cfg, data, 0o600); err != nil {
		b.Fatal(err)
	}

	e.exec(`CREATE TABLE src (id bigint PRIMARY KEY, v bigint NOT NULL, name text NOT NULL,
		amount numeric(14,2) NOT NULL, payload text NOT NULL, committed_at timestamptz NOT NULL)`)
	e.exec(`INSERT INTO src SELECT g, g, 'customer number ' || g, (g % 100000) * 1.37, repeat(md5(g::text), 2),
		timestamptz '2024-01-01 00:00:00+00' FROM generate_series(1, $1::int) g`, cdcRows)
	e.exec(fmt.Sprintf(`CREATE SEQUENCE src_ids START %d`, cdcRows+1))
	e.exec(`CREATE SCHEMA analytics`)
	e.exec(`CREATE TABLE analytics.items (id bigint PRIMARY KEY, v bigint, name text,
		amount numeric(14,2), payload text, committed_at timestamptz)`)
	if err := <-built; err != nil {
		b.Fatal(err)
	}
	return e
}

func (e *cdcEnv) query(sql string, args ...any) pgx.Rows {
	e.b.Helper()
	rows, err := e.conn.Query(context.Background(), sql, args...)
	if err != nil {
		e.b.Fatalf("%s: %v", sql, err)
	}
	return rows
}

func (e *cdcEnv) dbNow() time.Time {
	e.b.Helper()
	var t time.Time
	if err := e.conn.QueryRow(context.Background(), `SELECT clock_timestamp()`).Scan(&t); err != nil {
		e.b.Fatal(err)
	}
	return t
}

// srcChanges is how many rows were inserted, updated and deleted in src, as the statistics
// count them (aborted transactions included: pgbench must report none).
func (e *cdcEnv) srcChanges() int64 {
	e.b.Helper()
	var n int64
	if err := e.conn.QueryRow(context.Background(), `SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables
		WHERE relid = 'public.src'::regclass`).Scan(&n); err != nil {
		e.b.Fatal(err)
	}
	return n
}

// dropSlots drops the database's replication slots once their walsenders are gone.
func (e *cdcEnv) dropSlots() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		return
	}
	defer func() { _ = c.Close(context.Background()) }()
	for range 100 {
		_, err := c.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE database = current_database() AND NOT active`)
		var left int64
		if err == nil {
			_ = c.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&left)
			if left == 0 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.b.Errorf("the benchmark's replication slots could not be dropped")
}

// syncBuffer is a runner's output, read while the runner writes it.
type syncBuffer struct {
	mu sync.Mutex
	sb strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sb.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sb.String()
}

// cdcRunner is a runner process.
type cdcRunner struct {
	b    *testing.B
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	code int
}

// startCDC starts a runner of the CDC pipeline (bounded: with a schedule).
func (e *cdcEnv) startCDC(runID string, bounded bool) *cdcRunner {
	e.b.Helper()
	spec := map[string]any{
		"mode": "CDC",
		"source": map[string]any{"connection": "main", "table": "src",
			"cursor": map[string]any{"keyColumns": []string{"id"}}},
		"target":    map[string]any{"name": "analytics.items"},
		"batchSize": batchSize,
	}
	if bounded {
		spec["schedule"] = "@every 1h"
	}
	js, _ := json.Marshal(spec)
	cmd := exec.Command(e.bin, "runner", "--config", e.cfg, "--no-status", "--termination-log", "",
		"--log-level", "info", "--metrics-bind-address", "0")
	cmd.Env = append(os.Environ(),
		configv1.PostgresDSNEnv("main")+"="+e.dsn,
		configv1.EnvPipelineNamespace+"=bench", configv1.EnvPipelineName+"=cdc", configv1.EnvPipelineUID+"="+e.uid,
		configv1.EnvRunID+"="+runID, configv1.EnvSpec+"="+string(js), configv1.EnvGeneration+"=1")
	r := &cdcRunner{b: e.b, cmd: cmd, log: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = r.log, r.log
	if err := cmd.Start(); err != nil {
		e.b.Fatalf("start the runner: %v", err)
	}
	go func() {
		err := cmd.Wait()
		var exit *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exit):
			r.code = exit.ExitCode()
		default:
			r.code = -1
		}
		close(r.done)
	}()
	e.b.Cleanup(func() {
		if !r.exited() {
			_ = cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

func (r *cdcRunner) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// wait waits for the runner to end by itself, and returns its exit code.
func (r *cdcRunner) wait(timeout time.Duration) int {
	r.b.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(timeout):
		r.b.Fatalf("the runner did not end within %s:\n%s", timeout, r.log.String())
		return 0
	}
}

// stop ends the runner with SIGTERM, and returns its exit code.
func (r *cdcRunner) stop() int {
	r.b.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil && !r.exited() {
		r.b.Fatalf("SIGTERM: %v", err)
	}
	return r.wait(30 * time.Second)
}

// waitSlotActive waits until the continuous run streams its slot.
func (e *cdcEnv) waitSlotActive(r *cdcRunner) {
	e.b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var active bool
		err := e.conn.QueryRow(context.Background(), `SELECT coalesce(bool_or(active), false) FROM pg_replication_slots
			WHERE database = current_database() AND slot_name LIKE 'sluice\_%'`).Scan(&active)
		if err != nil {
			e.b.Fatal(err)
		}
		if active {
			return
		}
		if r.exited() || time.Now().After(deadline) {
			e.b.Fatalf("the stream did not start (exited: %v):\n%s", r.exited(), r.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pgbench runs the workload, and returns its tps and the transactions it committed.
func (e *cdcEnv) pgbench(bin string, seconds int) (float64, int64) {
	e.b.Helper()
	script := filepath.Join(e.b.TempDir(), "cdc.sql")
	if err := os.WriteFile(script, []byte(cdcScript), 0o600); err != nil {
		e.b.Fatal(err)
	}
	cmd := exec.Command(bin, "-n", "-M", "prepared", "-f", script, "-c", strconv.Itoa(cdcClients), "-j", strconv.Itoa(cdcThreads),
		"-T", strconv.Itoa(seconds), e.dsn)
	out, err := cmd.CombinedOutput()
	if err != nil {
		e.b.Fatalf("pgbench: %v\n%s", err, out)
	}
	text := string(out)
	tps := regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`).FindStringSubmatch(text)
	txns := regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`).FindStringSubmatch(text)
	failed := regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`).FindStringSubmatch(text)
	if tps == nil || txns == nil || (failed != nil && failed[1] != "0") {
		e.b.Fatalf("pgbench's output has no tps and transaction count, or failed transactions:\n%s", text)
	}
	t, _ := strconv.ParseFloat(tps[1], 64)
	n, _ := strconv.ParseInt(txns[1], 10, 64)
	return t, n
}

// checksums returns the count and md5 checksum of src and of the sink.
func (e *cdcEnv) checksums() (src, sink string) {
	e.b.Helper()
	sum := func(table string) string {
		var n int64
		var md5 string
		err := e.conn.QueryRow(context.Background(), `SELECT count(*), coalesce(md5(string_agg(t::text, E'\n' ORDER BY t.id)), '')
			FROM (SELECT `+cdcColumns+` FROM `+table+`) t`).Scan(&n, &md5)
		if err != nil {
			e.b.Fatal(err)
		}
		return fmt.Sprintf("%d rows, md5 %s", n, md5)
	}
	return sum("src"), sum("analytics.items")
}

func (e *cdcEnv) requireSinkMatches(when string) {
	e.b.Helper()
	if src, sink := e.checksums(); src != sink {
		e.b.Fatalf("%s the sink differs from the source: source %s, sink %s", when, src, sink)
	}
}

// waitCaughtUp waits until the sink equals the source: first their counts and latest
// committed_at (cheap, polled), then their checksums.
func (e *cdcEnv) waitCaughtUp(r *cdcRunner, when string) {
	e.b.Helper()
	deadline := time.Now().Add(cdcCatchUp)
	for {
		var same bool
		err := e.conn.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM src) = (SELECT count(*) FROM analytics.items) AND
			(SELECT max(committed_at) FROM src) IS NOT DISTINCT FROM (SELECT max(committed_at) FROM analytics.items)`).Scan(&same)
		if err != nil {
			e.b.Fatal(err)
		}
		if same {
			if src, sink := e.checksums(); src == sink {
				return
			}
		}
		if r.exited() {
			e.b.Fatalf("%s the stream ended (exit %d) before the sink caught up:\n%s", when, r.code, r.log.String())
		}
		if time.Now().After(deadline) {
			src, sink := e.checksums()
			e.b.Fatalf("%s the sink did not catch up within %s: source %s, sink %s; runner:\n%s",
				when, cdcCatchUp, src, sink, r.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lags returns the p50 and p99 of the lag (s) of the sink rows that match where ($1: arg):
// their sink transaction's commit, minus their source commit (committed_at, or the commit
// timestamp of the source row's transaction when track_commit_timestamp is on). Every row
// must have its sink transaction, and its source commit, recorded.
func (e *cdcEnv) lags(what, where string, arg any) [2]float64 {
	e.b.Helper()
	source := `i.committed_at`
	if e.commitTimestamps {
		source = `(SELECT pg_xact_commit_timestamp(s.xmin) FROM src s WHERE s.id = i.id)`
	}
	var n, unmatched int64
	var p50, p99, maxLag float64
	err := e.conn.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE lag IS NULL),
		coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), 0),
		coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), 0), coalesce(max(lag), 0)
		FROM (SELECT extract(epoch FROM c.at - `+source+`) AS lag
		      FROM analytics.items i LEFT JOIN sink_commits c ON c.xid = i.xmin::text::bigint
		      WHERE `+where+`) l`, arg).Scan(&n, &unmatched, &p50, &p99, &maxLag)
	if err != nil {
		e.b.Fatal(err)
	}
	if n == 0 || unmatched > 0 {
		e.b.Fatalf("lag %s: %d samples, %d of them without a recorded sink commit or source commit", what, n, unmatched)
	}
	e.b.Logf("lag %s: %d samples, p50 %.3f s, p99 %.3f s, max %.3f s", what, n, p50, p99, maxLag)
	return [2]float64{p50, p99}
}

// logBatchIntervals logs the time between the sink's commits since start.
func (e *cdcEnv) logBatchIntervals(start time.Time) {
	e.b.Helper()
	var p50, p99 float64
	err := e.conn.QueryRow(context.Background(), `SELECT
		coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY d), 0), coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY d), 0)
		FROM (SELECT extract(epoch FROM at - lag(at) OVER (ORDER BY at)) AS d FROM sink_commits WHERE at >= $1) s
		WHERE d IS NOT NULL`, start).Scan(&p50, &p99)
	if err != nil {
		e.b.Fatal(err)
	}
	e.b.Logf("time between sink commits: p50 %.3f s, p99 %.3f s", p50, p99)
}

var progressLine = regexp.MustCompile(`"msg":"progress".*`)

// lastProgress is the runner's last progress line.
func lastProgress(log string) string {
	all := progressLine.FindAllString(log, -1)
	if len(all) == 0 {
		return "(none)"
	}
	return all[len(all)-1]
}
