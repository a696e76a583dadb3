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
