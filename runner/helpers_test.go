package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/status"
	"github.com/sluice-dev/sluice/test/testenv"
)

// testDB is one test's database on the real Postgres.
type testDB struct {
	name string // connection name in the operator configuration
	dsn  string
	conn *pgx.Conn
}

func newTestDB(t *testing.T, name string) *testDB {
	t.Helper()
	dsn := testenv.NewPostgresDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return &testDB{name: name, dsn: dsn, conn: conn}
}

func (d *testDB) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := d.conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec %q: %v", firstLine(sql), err)
	}
}

func (d *testDB) queryInt(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := d.conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("query %q: %v", firstLine(sql), err)
	}
	return n
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i > 0 {
		return s[:i]
	}
	return s
}

// createSource makes src(id, updated_at, name, amount, doc) with n rows, indexed for keyset
// reads on (updated_at, id), and an analytics table of the same shape.
func createSource(t *testing.T, src *testDB, n int) {
	t.Helper()
	src.exec(t, `CREATE TABLE src (
		id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, name text, amount numeric(14,2), doc jsonb)`)
	src.exec(t, `CREATE INDEX src_keyset ON src (updated_at, id)`)
	insertRows(t, src, 1, n)
}

// insertRows adds rows from..to; several rows share an updated_at so that ties on the cursor
// are exercised.
func insertRows(t *testing.T, src *testDB, from, to int) {
	t.Helper()
	src.exec(t, `INSERT INTO src
		SELECT g, timestamptz '2024-01-01 00:00:00+00' + (g / 3) * interval '1 second',
		       'row ' || g, g * 1.25, jsonb_build_object('g', g, 'big', 12345678901234567890)
		FROM generate_series($1::int, $2::int) g`, from, to)
}

func createTarget(t *testing.T, db *testDB, table string) {
	t.Helper()
	db.exec(t, `CREATE SCHEMA IF NOT EXISTS analytics`)
	db.exec(t, fmt.Sprintf(`CREATE TABLE analytics.%s (
		id bigint PRIMARY KEY, updated_at timestamptz, name text, amount numeric(14,2), doc jsonb)`, table))
}

// sinkMatchesSource compares the whole target with the source, row by row.
func sinkMatchesSource(t *testing.T, src, dst *testDB, table string) {
	t.Helper()
	ctx := context.Background()
	digest := func(db *testDB, from string) (int64, string) {
		var n int64
		var h string
		err := db.conn.QueryRow(ctx, `SELECT count(*), coalesce(md5(string_agg(
			id::text || '|' || updated_at::text || '|' || coalesce(name, '') || '|' || amount::text || '|' || doc::text,
			',' ORDER BY id)), '') FROM `+from).Scan(&n, &h)
		if err != nil {
			t.Fatalf("digest %s: %v", from, err)
		}
		return n, h
	}
	ns, hs := digest(src, "src")
	nd, hd := digest(dst, "analytics."+table)
	if ns != nd || hs != hd {
		t.Fatalf("sink differs from source: source %d rows (%s), sink %d rows (%s); %s", ns, hs, nd, hd,
			rowDiff(t, src, dst, "analytics."+table))
	}
}

// rowDiff says which rows of src differ from the sink's, for a failure message: at most 5.
func rowDiff(t *testing.T, src, dst *testDB, sink string) string {
	t.Helper()
	rows := func(db *testDB, from string) map[int64]string {
		r, err := db.conn.Query(context.Background(), `SELECT id, row(updated_at, name, amount, doc)::text FROM `+from)
		if err != nil {
			t.Fatalf("rows of %s: %v", from, err)
		}
		out := map[int64]string{}
		for r.Next() {
			var id int64
			var v string
			if err := r.Scan(&id, &v); err != nil {
				t.Fatalf("rows of %s: %v", from, err)
			}
			out[id] = v
		}
		return out
	}
	a, b := rows(src, "src"), rows(dst, sink)
	var diffs []string
	for id, v := range a {
		if w, ok := b[id]; !ok || w != v {
			diffs = append(diffs, fmt.Sprintf("id %d: source %s, sink %q (present %v)", id, v, w, ok))
		}
	}
	for id, w := range b {
		if _, ok := a[id]; !ok {
			diffs = append(diffs, fmt.Sprintf("id %d: not in the source, sink %s", id, w))
		}
	}
	sort.Strings(diffs)
	return fmt.Sprintf("%d rows differ: %v", len(diffs), diffs[:min(5, len(diffs))])
}

// testConfig is an operator configuration naming the given databases; the first is the state
// database.
func testConfig(dbs ...*testDB) *configv1.OperatorConfig {
	cfg := &configv1.OperatorConfig{
		APIVersion:      configv1.APIVersion,
		Kind:            configv1.Kind,
		Runner:          configv1.RunnerConfig{Image: "sluice:test", ServiceAccountName: "runner", ConfigMapName: "cfg"},
		StateConnection: dbs[0].name,
		AllowedTargets:  configv1.AllowedTargets{PostgresTables: []string{"analytics.items", "analytics.other"}},
	}
	seen := map[string]bool{}
	for _, d := range dbs {
		if seen[d.name] {
			continue
		}
		seen[d.name] = true
		cfg.Postgres = append(cfg.Postgres, configv1.PostgresConnection{
			Name: d.name, DSNSecret: configv1.SecretKeyRef{Name: d.name, Key: "dsn"}})
	}
	cfg.Default()
	return cfg
}

func envOf(dbs ...*testDB) map[string]string {
	env := map[string]string{}
	for _, d := range dbs {
		env[configv1.PostgresDSNEnv(d.name)] = d.dsn
	}
	return env
}

type specOpts struct {
	mode       etlv1.Mode
	query      string
	sourceConn string
	targetConn string
	target     string
	batch      int32
	attempts   int32
	backoff    time.Duration
}

func specJSON(t *testing.T, o specOpts) string {
	t.Helper()
	if o.query == "" {
		o.query = "SELECT id, updated_at, name, amount, doc FROM src"
	}
	if o.target == "" {
		o.target = "analytics.items"
	}
	if o.mode == "" {
		o.mode = etlv1.ModeIncremental
	}
	spec := map[string]any{
		"mode": o.mode,
		"source": map[string]any{
			"connection": o.sourceConn,
			"query":      o.query,
			"cursor":     map[string]any{"column": "updated_at", "keyColumns": []string{"id"}},
		},
		"target":    map[string]any{"name": o.target, "connection": o.targetConn},
		"batchSize": o.batch,
		"retry":     map[string]any{"attempts": o.attempts, "initialBackoff": o.backoff.String()},
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatalf("marshal spec: %v", err)
	}
	return string(b)
}

// fakeReporter records what the executor reports and plays back signals.
type fakeReporter struct {
	mu       sync.Mutex
	trigger  etlv1.RunTrigger
	claimErr error
	// signal returns the answer to the n-th Check (0-based).
	signal   func(n int) status.Signal
	checks   int
	progress []status.Progress
	ends     []status.End
}

func (f *fakeReporter) Claim(context.Context) (status.Claim, error) {
	return status.Claim{Trigger: f.trigger}, f.claimErr
}

func (f *fakeReporter) Check(context.Context) (status.Signal, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.checks
	f.checks++
	if f.signal == nil {
		return status.Continue, nil
	}
	return f.signal(n), nil
}

func (f *fakeReporter) Progress(_ context.Context, p status.Progress) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.progress = append(f.progress, p)
	return nil
}

func (f *fakeReporter) Finish(_ context.Context, e status.End) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ends = append(f.ends, e)
	return nil
}

func (f *fakeReporter) lastEnd(t *testing.T) status.End {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ends) != 1 {
		t.Fatalf("want exactly one end report, got %d: %+v", len(f.ends), f.ends)
	}
	return f.ends[0]
}

// runInProcess runs the executor with a fake reporter; sleeps are recorded, not slept.
type inProcess struct {
	cfg      *configv1.OperatorConfig
	env      map[string]string
	spec     string
	runID    string
	pipeline state.Pipeline
	rep      *fakeReporter
	opts     Options
	sleeps   []time.Duration
	// termination is the file the run leaves its termination message in ("" for none).
	termination string
}

// pipelineOrDefault is the pipeline the runs of r use.
func (r *inProcess) pipelineOrDefault() state.Pipeline {
	if r.pipeline.Name == "" {
		return state.Pipeline{Namespace: "tenant", Name: "items"}
	}
	return r.pipeline
}

func (r *inProcess) run(t *testing.T) Result {
	t.Helper()
	if r.rep == nil {
		r.rep = &fakeReporter{}
	}
	if r.pipeline.Name == "" {
		r.pipeline = state.Pipeline{Namespace: "tenant", Name: "items"}
	}
	if r.runID == "" {
		r.runID = "run-1"
	}
	opts := r.opts
	opts.Sleep = func(ctx context.Context, d time.Duration) error {
		r.sleeps = append(r.sleeps, d)
		return ctx.Err()
	}
	if opts.LockWait == 0 {
		opts.LockWait = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	return Run(ctx, Params{
		Config:     r.cfg,
		Pipeline:   r.pipeline,
		RunID:      r.runID,
		Generation: "1",
		SpecJSON:   r.spec,
		LookupEnv: func(k string) (string, bool) {
			v, ok := r.env[k]
			return v, ok
		},
		Reporter:       r.rep,
		Log:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		Options:        opts,
		TerminationLog: r.termination,
	})
}

func requireOutcome(t *testing.T, res Result, want Outcome, code int) {
	t.Helper()
	if res.Outcome != want || res.ExitCode != code {
		t.Fatalf("run ended %s (exit %d, %s: %s), want %s (exit %d)",
			res.Outcome, res.ExitCode, res.ErrorClass, res.Message, want, code)
	}
}

func batchOf(cols []string, rows [][]any) *batch.Batch {
	b := &batch.Batch{Rows: rows}
	for _, c := range cols {
		b.Columns = append(b.Columns, batch.Column{Name: c})
	}
	return b
}
