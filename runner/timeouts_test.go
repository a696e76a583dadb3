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
	res := r.run(t)
	requireOutcome(t, res, OutcomeFailed, configv1.ExitInfra)
	if res.ErrorClass != etlv1.ErrorInfra || !strings.Contains(res.Message, "lock timeout") || !strings.Contains(res.Message, "after 2 retries") {
		t.Fatalf("run failed with %s: %q, want an infra error naming the lock timeout after 2 retries", res.ErrorClass, res.Message)
	}
	if len(r.sleeps) != 2 || r.sleeps[0] != time.Second || r.sleeps[1] != 2*time.Second {
		t.Fatalf("backoffs %v, want [1s 2s]", r.sleeps)
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

// TestWideRowsMakeSmallerBatches: rows of about a megabyte with batchSize 1000 and
// maxBatchBytes 4Mi are written in batches of a few rows, and the sink is exact.
func TestWideRowsMakeSmallerBatches(t *testing.T) {
	db := newTestDB(t, "main")
	createSource(t, db, 0)
	db.exec(t, `INSERT INTO src SELECT g, timestamptz '2024-01-01' + g * interval '1s', repeat(md5(g::text), 32768), g, '{}'
		FROM generate_series(1, 60) g`)
	createTarget(t, db, "items")
	spec := strings.Replace(specJSON(t, specOpts{sourceConn: "main", batch: 1000}), `"batchSize":1000`, `"batchSize":1000,"maxBatchBytes":"4Mi"`, 1)
	r := &inProcess{cfg: testConfig(db), env: envOf(db), spec: spec}
	res := r.run(t)
	requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
	if res.RowsRead != 60 || res.Batches < 15 {
		t.Fatalf("read %d rows in %d batches, want 60 rows in batches of at most 4 rows", res.RowsRead, res.Batches)
	}
	sinkMatchesSource(t, db, db, "items")
}

// TestSessionsCarryTheirSettings: every runner session asks the server for the timeouts of
// runner.postgres and for TCP keepalives, so that the backend of a runner whose node died
// ends (and frees the pipeline's lock) within about a minute; a DSN's own setting wins.
func TestSessionsCarryTheirSettings(t *testing.T) {
	db := newTestDB(t, "main")
	cfg := testConfig(db)
	cfg.Runner.Postgres.LockTimeout = &metav1.Duration{Duration: 7 * time.Second}
	sep := "?"
	if strings.Contains(db.dsn, "?") {
		sep = "&"
	}
	conn, err := connect(t.Context(), "main", db.dsn+sep+"options=-c%20statement_timeout%3D5min", "sluice-runner test", true,
		cfg.Runner.Postgres.SessionParams())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(t.Context()) }()
	for name, want := range map[string]string{
		"lock_timeout": "7s", "idle_in_transaction_session_timeout": "10min", "statement_timeout": "5min",
		"tcp_keepalives_idle": "15", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "6",
		"default_transaction_read_only": "on",
	} {
		var got string
		if err := conn.QueryRow(t.Context(), "SELECT current_setting($1)", name).Scan(&got); err != nil || got != want {
			t.Errorf("%s = %q (%v), want %q", name, got, err, want)
		}
	}
}
