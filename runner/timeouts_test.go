package runner

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// TestLockedSourceDoesNotHangTheRun: a source table held by LOCK TABLE ... ACCESS EXCLUSIVE
// makes each attempt end at runner.postgres.lockTimeout, an infrastructure error that is
// retried and, when the lock outlives the retries, fails the run naming the lock wait. A lock
// released in time lets the run complete.
func TestLockedSourceDoesNotHangTheRun(t *testing.T) {
	db := newTestDB(t, "main")
	createSource(t, db, 50)
	createTarget(t, db, "items")
	cfg := testConfig(db)
	cfg.Runner.Postgres.LockTimeout = &metav1.Duration{Duration: 300 * time.Millisecond}
	r := &inProcess{cfg: cfg, env: envOf(db), spec: specJSON(t, specOpts{sourceConn: "main", batch: 10, attempts: 2, backoff: time.Second})}

	locker := db.session(t, "locker")
	mustExec(t, locker, "BEGIN")
	mustExec(t, locker, "LOCK TABLE src IN ACCESS EXCLUSIVE MODE")
	start := time.Now()
	res := r.run(t)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitInfra)
	if res.ErrorClass != etlv1.ErrorInfra || !strings.Contains(res.Message, "lock timeout") || !strings.Contains(res.Message, "after 2 retries") {
		t.Fatalf("run failed with %s: %q, want an infra error naming the lock timeout after 2 retries", res.ErrorClass, res.Message)
	}
	if len(r.sleeps) != 2 || r.sleeps[0] != time.Second || r.sleeps[1] != 2*time.Second {
		t.Fatalf("backoffs %v, want [1s 2s]", r.sleeps)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("the run took %s against a held lock", took)
	}

	cfg.Runner.Postgres.LockTimeout = &metav1.Duration{Duration: 5 * time.Second}
	go func() {
		time.Sleep(time.Second)
		_, _ = locker.Exec(t.Context(), "COMMIT")
	}()
	r.runID, r.sleeps = "run-2", nil
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	sinkMatchesSource(t, db, db, "items")
}

// TestReplacementTakesOverTheSessionOfALostPod: the backend of a pod lost with its node keeps
// the pipeline's lock until the server notices the dead peer. The replacement pod of the same
// run fences it and ends it instead of waiting (and being fenced itself); a runner that is not
// a replacement still waits and stops without writing.
func TestReplacementTakesOverTheSessionOfALostPod(t *testing.T) {
	db := newTestDB(t, "main")
	createSource(t, db, 200)
	createTarget(t, db, "items")
	r := &inProcess{cfg: testConfig(db), env: envOf(db), spec: specJSON(t, specOpts{sourceConn: "main", batch: 50}),
		opts: Options{LockWait: 20 * time.Second}}
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)

	lost := db.session(t, appName(r.pipeline))
	mustExec(t, lost, `SELECT pg_advisory_lock(hashtextextended('sluice/pipeline/tenant/items', 0))`)
	var pid uint32
	if err := lost.QueryRow(t.Context(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	epoch := db.queryInt(t, `SELECT epoch FROM etl.etl_state`)
	db.exec(t, "UPDATE src SET updated_at = updated_at + interval '1 day' WHERE id <= 20")

	r.runID, r.rep = "run-2", &fakeReporter{again: true}
	start := time.Now()
	requireOutcome(t, r.run(t), OutcomeIdle, configv1.ExitOK)
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the replacement took %s: it waited for the lost session", took)
	}
	if n := db.queryInt(t, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid); n != 0 {
		t.Fatalf("the lost pod's session is still there")
	}
	if got := db.queryInt(t, `SELECT epoch FROM etl.etl_state`); got < epoch+2 {
		t.Fatalf("epoch %d after the takeover, want at least %d (fenced, then claimed)", got, epoch+2)
	}
	sinkMatchesSource(t, db, db, "items")
}
