package runner

import (
	"context"
	"fmt"
	"math/rand"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/source"
)

// stampedSource makes src as createSource does, with updated_at stamped by now() in a trigger,
// as applications do: the writing transaction's start, not its commit.
func stampedSource(t *testing.T, src *testDB, n int) {
	t.Helper()
	createSource(t, src, n)
	src.exec(t, `CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN NEW.updated_at := now(); RETURN NEW; END $$`)
	src.exec(t, `CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON src FOR EACH ROW EXECUTE FUNCTION stamp()`)
}

// session opens a connection of its own to db, named app in pg_stat_activity.
func (d *testDB) session(t *testing.T, app string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(d.dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = app
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("exec %q: %v", firstLine(sql), err)
	}
}

// TestLateCommitIsNotLost is the lost-row scenario of a live database: transaction A stamps a
// row and stays open, transaction B stamps another later and commits, a run completes, then A
// commits. The next run must bring A's row, although its stamp is older than B's.
func TestLateCommitIsNotLost(t *testing.T) {
	db := newTestDB(t, "main")
	stampedSource(t, db, 100)
	createTarget(t, db, "items")
	r := &inProcess{cfg: testConfig(db), env: envOf(db), spec: specJSON(t, specOpts{sourceConn: "main", batch: 10})}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)

	a := db.session(t, "writer-a")
	mustExec(t, a, "BEGIN")
	mustExec(t, a, "UPDATE src SET name = 'late' WHERE id = 1")
	time.Sleep(20 * time.Millisecond) // B's stamp is clearly later than A's
	db.exec(t, "UPDATE src SET name = 'early' WHERE id = 2")

	r.runID = "run-2"
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	mustExec(t, a, "COMMIT")
	r.runID = "run-3"
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	sinkMatchesSource(t, db, db, "items")
}

// TestSequenceCursorWaitsForOpenTransactions: a sequence value is taken long before its row
// commits. Transaction A takes id 101 and stays open, B takes 102 and commits: a run must not
// move past 101 while A is open, and the next one brings both.
func TestSequenceCursorWaitsForOpenTransactions(t *testing.T) {
	db := newTestDB(t, "main")
	db.exec(t, `CREATE TABLE src (id bigserial PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT now(), name text,
		amount numeric(14,2), doc jsonb)`)
	db.exec(t, `INSERT INTO src (name, amount, doc) SELECT 'row ' || g, g, '{}' FROM generate_series(1, 100) g`)
	createTarget(t, db, "items")
	spec := specJSON(t, specOpts{sourceConn: "main", batch: 10})
	spec = strings.Replace(spec, `"column":"updated_at"`, `"column":"id"`, 1)
	cfg := testConfig(db)
	cfg.Runner.HorizonHeldAfter = &metav1.Duration{Duration: time.Second}
	rep := &fakeReporter{}
	r := &inProcess{cfg: cfg, env: envOf(db), spec: spec, rep: rep}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)

	a := db.session(t, "writer-a")
	mustExec(t, a, "BEGIN")
	mustExec(t, a, "INSERT INTO src (name, amount, doc) VALUES ('late', 1, '{}')")
	db.exec(t, "INSERT INTO src (name, amount, doc) VALUES ('early', 2, '{}')")

	rep2 := &fakeReporter{}
	r.runID, r.rep = "run-2", rep2
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	if c := lastCondition(rep2, etlv1.ConditionHorizonHeld); c == nil || c.Status != metav1.ConditionTrue ||
		!strings.Contains(c.Message, `"writer-a"`) {
		t.Fatalf("HorizonHeld = %+v, want True naming writer-a", c)
	}
	if n := db.queryInt(t, "SELECT count(*) FROM analytics.items WHERE id > 100"); n != 0 {
		t.Fatalf("the run read %d rows past the open transaction's sequence value", n)
	}
	mustExec(t, a, "COMMIT")
	r.runID, r.rep = "run-3", &fakeReporter{}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	sinkMatchesSource(t, db, db, "items")
}

func lastCondition(rep *fakeReporter, typ string) *metav1.Condition {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	var found *metav1.Condition
	for _, p := range rep.progress {
		for i := range p.Conditions {
			if p.Conditions[i].Type == typ {
				found = &p.Conditions[i]
			}
		}
	}
	for _, e := range rep.ends {
		for i := range e.Conditions {
			if e.Conditions[i].Type == typ {
				found = &e.Conditions[i]
			}
		}
	}
	return found
}

// TestIdleInTransactionHoldsTheHorizonVisibly: a session left idle in transaction holds the
// horizon back; the run still ends, and the status names the session.
func TestIdleInTransactionHoldsTheHorizonVisibly(t *testing.T) {
	db := newTestDB(t, "main")
	stampedSource(t, db, 50)
	createTarget(t, db, "items")
	idle := db.session(t, "forgotten-console")
	mustExec(t, idle, "BEGIN")
	mustExec(t, idle, "SELECT 1")
	var pid uint32
	if err := idle.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	db.exec(t, "UPDATE src SET name = 'after' WHERE id <= 5")

	cfg := testConfig(db)
	cfg.Runner.HorizonHeldAfter = &metav1.Duration{Duration: time.Second}
	rep := &fakeReporter{}
	r := &inProcess{cfg: cfg, env: envOf(db), spec: specJSON(t, specOpts{sourceConn: "main", batch: 10}), rep: rep}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	c := lastCondition(rep, etlv1.ConditionHorizonHeld)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != etlv1.ReasonTransactionOpen ||
		!strings.Contains(c.Message, fmt.Sprintf("pid %d", pid)) || !strings.Contains(c.Message, `"forgotten-console"`) ||
		!strings.Contains(c.Message, "idle in transaction") {
		t.Fatalf("HorizonHeld = %+v, want True naming pid %d (forgotten-console, idle in transaction)", c, pid)
	}
	// The 45 rows stamped before the session began are in; the 5 stamped after wait for it.
	if n := db.queryInt(t, "SELECT count(*) FROM analytics.items"); n != 45 {
		t.Fatalf("sink holds %d rows, want 45", n)
	}
	mustExec(t, idle, "COMMIT")
	r.runID, r.rep = "run-2", &fakeReporter{}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	if c := lastCondition(r.rep, etlv1.ConditionHorizonHeld); c == nil || c.Status != metav1.ConditionFalse {
		t.Fatalf("HorizonHeld after the session ended = %+v, want False", c)
	}
	sinkMatchesSource(t, db, db, "items")
}

// TestHorizonNeedsToSeeOtherSessions: a source role without pg_read_all_stats sees no other
// role's transactions; the run fails at once, naming the privilege, and reads nothing.
func TestHorizonNeedsToSeeOtherSessions(t *testing.T) {
	db := newTestDB(t, "main")
	stampedSource(t, db, 20)
	createTarget(t, db, "items")
	role := "reader_" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "_"))[:12] + fmt.Sprint(rand.Intn(1e6))
	db.exec(t, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'pw'`, role))
	t.Cleanup(func() { _, _ = db.conn.Exec(context.Background(), "DROP OWNED BY "+role+"; DROP ROLE IF EXISTS "+role) })
	db.exec(t, fmt.Sprintf(`GRANT SELECT ON src TO %s`, role))
	u, err := url.Parse(db.dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, "pw")
	reader := &testDB{name: "reader", dsn: u.String()}
	r := &inProcess{cfg: testConfig(db, reader), env: envOf(db, reader),
		spec: specJSON(t, specOpts{sourceConn: "reader", targetConn: "main", batch: 10})}
	res := r.run(t)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
	if !strings.Contains(res.Message, "pg_read_all_stats") {
		t.Fatalf("message %q does not name pg_read_all_stats", res.Message)
	}
	if n := db.queryInt(t, "SELECT count(*) FROM analytics.items"); n != 0 {
		t.Fatalf("the run wrote %d rows", n)
	}
	db.exec(t, fmt.Sprintf(`GRANT pg_read_all_stats TO %s`, role))
	r.runID = "run-2"
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	sinkMatchesSource(t, db, db, "items")
}

// writeLoad updates random rows of src from several connections until ctx ends: short
// transactions, and now and then one that stays open for seconds, so that commits land
// far out of updated_at order. It returns how many transactions committed.
func writeLoad(ctx context.Context, t *testing.T, db *testDB, writers, rows int) func() int64 {
	t.Helper()
	return writeLoadOf(ctx, t, db, writers, rows, `UPDATE src SET name = $2, amount = $3, doc = jsonb_build_object('w', $4::int)
		WHERE id = $1`)
}

// writeLoadOf is writeLoad with its own update of row $1 ($2 a name, $3 an amount, $4 the
// writer).
func writeLoadOf(ctx context.Context, t *testing.T, db *testDB, writers, rows int, update string) func() int64 {
	t.Helper()
	var wg sync.WaitGroup
	var commits atomic.Int64
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		conn := db.session(t, fmt.Sprintf("writer-%d", w))
		wg.Add(1)
		go func(w int, conn *pgx.Conn) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w) + time.Now().UnixNano()))
			bg := context.Background()
			for ctx.Err() == nil {
				tx, err := conn.Begin(bg)
				if err != nil {
					errs <- err
					return
				}
				for i := 0; i < 1+rng.Intn(5); i++ {
					id := 1 + rng.Intn(rows)
					if _, err := tx.Exec(bg, update, id, fmt.Sprintf("w%d-%d", w, rng.Int63()), rng.Intn(1e6), w); err != nil {
						_ = tx.Rollback(bg)
						errs <- err
						return
					}
				}
				hold := time.Duration(rng.Intn(50)) * time.Millisecond
				if rng.Intn(40) == 0 {
					hold = time.Duration(1500+rng.Intn(2500)) * time.Millisecond
				}
				time.Sleep(hold)
				if err := tx.Commit(bg); err != nil {
					errs <- err
					return
				}
				commits.Add(1)
			}
		}(w, conn)
	}
	return func() int64 {
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("writer: %v", err)
		}
		return commits.Load()
	}
}

// converge runs the pipeline again and again while writers change the source, then once more
// after they stopped: the sink must then equal the source.
func converge(t *testing.T, db *testDB, r *inProcess, load time.Duration, check func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), load)
	defer cancel()
	wait := writeLoad(ctx, t, db, 4, 100000)
	runs := 0
	for ctx.Err() == nil {
		runs++
		r.runID = fmt.Sprintf("run-%d", runs)
		requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
		time.Sleep(300 * time.Millisecond)
	}
	commits := wait()
	runs++
	r.runID = fmt.Sprintf("run-%d", runs)
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	t.Logf("%d runs while %d write transactions committed", runs, commits)
	check()
}

// TestConcurrentWritersConvergeOnPostgres is the convergence check of the read horizon with a
// Postgres sink: the sink equals the source, by count and a checksum over every column.
func TestConcurrentWritersConvergeOnPostgres(t *testing.T) {
	t.Parallel() // with its Elasticsearch twin: each has a database of its own
	db := newTestDB(t, "main")
	stampedSource(t, db, 100000)
	createTarget(t, db, "items")
	r := &inProcess{cfg: testConfig(db), env: envOf(db), spec: specJSON(t, specOpts{sourceConn: "main", batch: 2000})}
	converge(t, db, r, 15*time.Second, func() { sinkMatchesSource(t, db, db, "items") })
}

// TestConcurrentWritersConvergeOnElasticsearch is the same check with an Elasticsearch sink.
func TestConcurrentWritersConvergeOnElasticsearch(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, "main")
	stampedSource(t, db, 100000)
	ix := newESIndex(t, srcMappings)
	r := &inProcess{cfg: esConfig(ix.url, db, ix.name), env: envOf(db),
		spec: esSpec(t, specOpts{sourceConn: "main", target: "es:" + ix.name, batch: 2000}, etlv1.ActionIndex)}
	converge(t, db, r, 15*time.Second, func() { indexMatchesSource(t, db, ix) })
}

func TestHorizonCondition(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	holder := &source.Holder{PID: 42, Application: "psql", State: "idle in transaction", Since: now.Add(-5 * time.Minute)}
	young := &source.Holder{PID: 43, Application: "app", State: "active", Since: now.Add(-time.Second)}
	cases := []struct {
		name   string
		h      source.Horizon
		status metav1.ConditionStatus
		reason string
		has    string
	}{
		{"no open transaction", source.Horizon{Value: "2026-12-01 10:00:00Z"}, metav1.ConditionFalse, etlv1.ReasonHorizonCurrent, "2026-12-01 10:00:00Z"},
		{"a young transaction is normal", source.Horizon{Value: "x", Holder: young}, metav1.ConditionFalse, etlv1.ReasonHorizonCurrent, "read horizon is at x"},
		{"an old transaction holds it", source.Horizon{Value: "x", Holder: holder}, metav1.ConditionTrue, etlv1.ReasonTransactionOpen, "pid 42"},
		{"a closed barrier holds it whatever the age", source.Horizon{Empty: true, Holder: young}, metav1.ConditionTrue, etlv1.ReasonTransactionOpen, "no row after the checkpoint"},
		{"an empty source", source.Horizon{Empty: true}, metav1.ConditionFalse, etlv1.ReasonHorizonCurrent, "no row"},
		{"a barrier names the cursor value", source.Horizon{Value: "1000", Inclusive: true}, metav1.ConditionFalse, etlv1.ReasonHorizonCurrent, "cursor value 1000"},
	}
	for _, tc := range cases {
		c := horizonCondition(tc.h, time.Minute, now)
		if c.Type != etlv1.ConditionHorizonHeld || c.Status != tc.status || c.Reason != tc.reason || !strings.Contains(c.Message, tc.has) {
			t.Errorf("%s: %+v, want %s %s containing %q", tc.name, c, tc.status, tc.reason, tc.has)
		}
	}
}

// TestKilledRunnersUnderConcurrentWritersConverge joins the two threats: writers committing
// out of updated_at order, and runner processes killed with SIGKILL at random moments (mid-
// batch included), a killed run carried on by a new process as the Job would. Once the
// writers stop and one more run completes, the sink equals the source by count and checksum.
func TestKilledRunnersUnderConcurrentWritersConverge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs it many times")
	}
	bin := buildSluice(t)
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			main, dst := dbsFor(t, tp)
			stampedSource(t, main, 100000)
			createTarget(t, dst, "items")
			cfg := writeConfig(t, testConfig(main, dst))
			spec := specJSON(t, specOpts{sourceConn: "main", targetConn: dst.name, batch: 2000, attempts: 3, backoff: 200 * time.Millisecond})
			killUnderLoad(t, bin, main, envOf(main, dst), spec, cfg, "")
			sinkMatchesSource(t, main, dst, "items")
		})
	}
}

// killUnderLoad starts runners of spec one after the other for 15 seconds while writers run
// update (writeLoad's when empty) on db's src, and SIGKILLs each at a random moment, a killed
// run carried on by a new process as the Job would; then it runs the pipeline once more after
// the writers stopped.
func killUnderLoad(t *testing.T, bin string, db *testDB, env map[string]string, spec, cfg, update string) {
	t.Helper()
	args := []string{"--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn"}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var wait func() int64
	if update == "" {
		wait = writeLoad(ctx, t, db, 4, 100000)
	} else {
		wait = writeLoadOf(ctx, t, db, 4, 100000, update)
	}
	seed := time.Now().UnixNano() ^ int64(len(t.Name()))<<32
	t.Logf("kill seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	runs, kills, completions := 1, 0, 0
	for ctx.Err() == nil {
		p := startRunner(t, bin, runEnv(env, spec, fmt.Sprintf("run-%d", runs)), args...)
		select {
		case <-p.done:
			if code := p.wait(t, time.Second); code != configv1.ExitOK {
				t.Fatalf("runner exited %d; its log:\n%s", code, p.log)
			}
			completions++
			runs++ // the next process is a new run; a killed one is carried on
		case <-time.After(time.Duration(rng.Intn(600)) * time.Millisecond):
			_ = p.cmd.Process.Kill()
			<-p.done
			kills++
		}
	}
	commits := wait()
	p := startRunner(t, bin, runEnv(env, spec, fmt.Sprintf("run-%d", runs+1)), args...)
	if code := p.wait(t, 2*time.Minute); code != configv1.ExitOK {
		t.Fatalf("last runner exited %d; its log:\n%s", code, p.log)
	}
	t.Logf("%d kills and %d completed runs while %d write transactions committed", kills, completions, commits)
	if kills < 3 {
		t.Fatalf("only %d kills: the test did not exercise crashes", kills)
	}
}
