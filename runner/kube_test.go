package runner

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/status"
	"github.com/sluice-dev/sluice/test/testenv"
)

// apiServer is a real kube-apiserver with the ETLPipeline CRD.
type apiServer struct {
	c          client.Client
	kubeconfig string
}

func startAPIServer(t *testing.T) *apiServer {
	cfg, env := testenv.StartAPIServer(t)
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{etlv1.AddToScheme, corev1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	return &apiServer{c: c, kubeconfig: path}
}

// createPipeline creates the pipeline of a spec snapshot.
func (a *apiServer) createPipeline(t *testing.T, name, specJSON string) types.NamespacedName {
	t.Helper()
	p := &etlv1.ETLPipeline{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: name}}
	if err := json.Unmarshal([]byte(specJSON), &p.Spec); err != nil {
		t.Fatal(err)
	}
	if err := a.c.Create(context.Background(), p); err != nil {
		t.Fatalf("create pipeline: %v", err)
	}
	return client.ObjectKeyFromObject(p)
}

// request does what the manager does before it creates a runner Job.
func (a *apiServer) request(t *testing.T, key types.NamespacedName, runID string, trigger etlv1.RunTrigger) {
	t.Helper()
	a.setStatus(t, key, func(st *etlv1.ETLPipelineStatus) {
		now := metav1.Now()
		st.Phase = etlv1.PhaseRunRequested
		st.Run = &etlv1.RunStatus{ID: runID, JobName: key.Name + "-" + runID, Trigger: trigger, Generation: 1, StartTime: &now}
	})
}

// setStatus applies change with a resourceVersion-guarded update, retrying conflicts with the
// runner's own writes.
func (a *apiServer) setStatus(t *testing.T, key types.NamespacedName, change func(st *etlv1.ETLPipelineStatus)) {
	t.Helper()
	for {
		p := a.get(t, key)
		change(&p.Status)
		err := a.c.Status().Update(context.Background(), p)
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			t.Fatalf("update status: %v", err)
		}
	}
}

func (a *apiServer) get(t *testing.T, key types.NamespacedName) *etlv1.ETLPipeline {
	t.Helper()
	p := &etlv1.ETLPipeline{}
	if err := a.c.Get(context.Background(), key, p); err != nil {
		t.Fatalf("get pipeline: %v", err)
	}
	return p
}

func (a *apiServer) waitFor(t *testing.T, key types.NamespacedName, what string, cond func(p *etlv1.ETLPipeline) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if cond(a.get(t, key)) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// runWithKube runs the executor in-process against the API server.
func runWithKube(t *testing.T, a *apiServer, key types.NamespacedName, runID string, cfg *configv1.OperatorConfig,
	env map[string]string, spec string, opts Options) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return Run(ctx, Params{
		Config:     cfg,
		Pipeline:   state.Pipeline{Namespace: key.Namespace, Name: key.Name},
		RunID:      runID,
		Generation: "1",
		SpecJSON:   spec,
		LookupEnv:  func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		Reporter:   status.NewKube(a.c, key, runID),
		Log:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Options:    opts,
	})
}

func TestWithAPIServer(t *testing.T) {
	api := startAPIServer(t)

	t.Run("claim, progress, pause between batches, resume", func(t *testing.T) {
		db := newTestDB(t, "main")
		const rows = 20000
		createSource(t, db, rows)
		createTarget(t, db, "items")
		spec := specJSON(t, specOpts{sourceConn: "main", batch: 100})
		key := api.createPipeline(t, "paused", spec)
		api.request(t, key, "run-1", etlv1.TriggerCreated)

		// The manager's part: as soon as the runner has claimed the run and reported
		// progress, the user pauses.
		go func() {
			api.waitFor(t, key, "progress of a running run", func(p *etlv1.ETLPipeline) bool {
				return p.Status.Phase == etlv1.PhaseRunning && p.Status.Run.RowsRead > 0
			})
			api.setStatus(t, key, func(st *etlv1.ETLPipelineStatus) { st.Phase = etlv1.PhasePauseRequested })
		}()
		opts := Options{CheckInterval: 20 * time.Millisecond, ProgressInterval: 20 * time.Millisecond}
		res := runWithKube(t, api, key, "run-1", testConfig(db), envOf(db), spec, opts)
		requireOutcome(t, res, OutcomePaused, configv1.ExitOK)

		p := api.get(t, key)
		inSink := db.queryInt(t, `SELECT count(*) FROM analytics.items`)
		var cp []string
		if err := db.conn.QueryRow(context.Background(), `SELECT incremental_checkpoint FROM etl.etl_state`).Scan(&cp); err != nil {
			t.Fatal(err)
		}
		upToCheckpoint := db.queryInt(t, `SELECT count(*) FROM src WHERE (updated_at, id) <= ($1::timestamptz, $2::bigint)`, cp[0], cp[1])
		if p.Status.Phase != etlv1.PhasePaused || p.Status.Run.CompletionTime == nil {
			t.Fatalf("after the pause: phase %s, run %+v", p.Status.Phase, p.Status.Run)
		}
		t.Logf("paused after %d of %d rows", inSink, rows)
		if inSink == 0 || inSink == rows || inSink != upToCheckpoint || p.Status.Run.RowsWritten != inSink ||
			p.Status.Checkpoint == nil || !slices.Equal(p.Status.Checkpoint.Values, cp) {
			t.Fatalf("after the pause the sink has %d rows, the checkpoint %v covers %d, the status says %d rows and %+v",
				inSink, cp, upToCheckpoint, p.Status.Run.RowsWritten, p.Status.Checkpoint)
		}

		// Resume: a new run continues after the checkpoint.
		api.request(t, key, "run-2", etlv1.TriggerResume)
		res = runWithKube(t, api, key, "run-2", testConfig(db), envOf(db), spec, opts)
		requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
		sinkMatchesSource(t, db, db, "items")
		p = api.get(t, key)
		if p.Status.Phase != etlv1.PhaseIdle || p.Status.Run.ID != "run-2" || p.Status.Run.RowsRead != rows-inSink ||
			p.Status.Run.CompletionTime == nil || p.Status.Run.ErrorClass != "" {
			t.Fatalf("after the resumed run: phase %s, run %+v", p.Status.Phase, p.Status.Run)
		}
	})

	t.Run("a python run says in its status how its transforms are confined", func(t *testing.T) {
		db := newTestDB(t, "main")
		createSource(t, db, 50)
		createTarget(t, db, "items")
		spec := strings.Replace(specJSON(t, specOpts{sourceConn: "main", batch: 100}), `"batchSize"`,
			`"tasks":[{"name":"read","sql":"SELECT id, updated_at, name, amount, doc FROM src"},{"name":"same","python":"def transform(row):\n    return row\n"}],"batchSize"`, 1)
		key := api.createPipeline(t, "confined", spec)
		api.request(t, key, "run-1", etlv1.TriggerCreated)
		res := runWithKube(t, api, key, "run-1", testConfig(db), envOf(db), spec, Options{})
		requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
		c := meta.FindStatusCondition(api.get(t, key).Status.Conditions, etlv1.ConditionSandboxed)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != etlv1.ReasonConfined ||
			!strings.Contains(c.Message, "landlock") || !strings.Contains(c.Message, "seccomp") {
			t.Fatalf("Sandboxed condition: %+v", c)
		}
		t.Logf("on this kernel: %s", c.Message)
		sinkMatchesSource(t, db, db, "items")
	})

	t.Run("rejects reach the status: the count, the condition and the replay", func(t *testing.T) {
		db := newTestDB(t, "main")
		createSource(t, db, 3000)
		db.exec(t, `UPDATE src SET amount = -1 WHERE id IN (5, 2500)`)
		createTarget(t, db, "items")
		db.exec(t, `ALTER TABLE analytics.items ADD CONSTRAINT amount_positive CHECK (amount >= 0)`)
		spec := withErrors(t, specJSON(t, specOpts{sourceConn: "main", batch: 1000}), map[string]any{"maxRejectedRows": 10})
		key := api.createPipeline(t, "rejecting", spec)
		api.request(t, key, "run-1", etlv1.TriggerCreated)
		res := runWithKube(t, api, key, "run-1", testConfig(db), envOf(db), spec, Options{})
		requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
		p := api.get(t, key)
		c := meta.FindStatusCondition(p.Status.Conditions, etlv1.ConditionRowsRejected)
		if p.Status.Run.RowsRejected != 2 || p.Status.UnresolvedRejects != 2 || c == nil || c.Status != metav1.ConditionTrue ||
			!strings.Contains(c.Message, "2 rows") {
			t.Fatalf("after the run: %d rejected, %d unresolved, condition %+v", p.Status.Run.RowsRejected, p.Status.UnresolvedRejects, c)
		}
		if len(p.Status.RecentRejects) != 2 || p.Status.RecentRejects[1].Key != "id=5" && p.Status.RecentRejects[0].Key != "id=5" ||
			p.Status.RecentRejects[0].Class != "23514" || p.Status.RecentRejects[0].RunID != "run-1" {
			t.Fatalf("status.recentRejects %+v, want the two rejects of run-1", p.Status.RecentRejects)
		}

		db.exec(t, `ALTER TABLE analytics.items DROP CONSTRAINT amount_positive`)
		api.request(t, key, "run-2", etlv1.TriggerReplayRejects)
		res = runWithKube(t, api, key, "run-2", testConfig(db), envOf(db), spec, Options{})
		requireOutcome(t, res, OutcomeIdle, configv1.ExitOK)
		p = api.get(t, key)
		c = meta.FindStatusCondition(p.Status.Conditions, etlv1.ConditionRowsRejected)
		if p.Status.Run.RejectsReplayed != 2 || p.Status.UnresolvedRejects != 0 || c == nil || c.Status != metav1.ConditionFalse ||
			len(p.Status.RecentRejects) != 0 {
			t.Fatalf("after the replay: %d replayed, %d unresolved, condition %+v", p.Status.Run.RejectsReplayed, p.Status.UnresolvedRejects, c)
		}
		sinkMatchesSource(t, db, db, "items")
	})

	t.Run("a failure reaches the status", func(t *testing.T) {
		db := newTestDB(t, "main")
		createSource(t, db, 10)
		createTarget(t, db, "items")
		spec := specJSON(t, specOpts{sourceConn: "main", batch: 100, query: "SELECT id, updated_at, nope FROM src"})
		key := api.createPipeline(t, "failing", spec)
		api.request(t, key, "run-1", etlv1.TriggerCreated)
		res := runWithKube(t, api, key, "run-1", testConfig(db), envOf(db), spec, Options{})
		requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
		p := api.get(t, key)
		if p.Status.Phase != etlv1.PhaseFailed || p.Status.Run.ErrorClass != etlv1.ErrorBusiness ||
			p.Status.Run.Message != res.Message || p.Status.Run.CompletionTime == nil {
			t.Fatalf("failed run status: phase %s, run %+v", p.Status.Phase, p.Status.Run)
		}
	})

	t.Run("a runner of another run exits without writing", func(t *testing.T) {
		db := newTestDB(t, "main")
		createSource(t, db, 10)
		createTarget(t, db, "items")
		spec := specJSON(t, specOpts{sourceConn: "main", batch: 100})
		key := api.createPipeline(t, "cancelled", spec)
		api.request(t, key, "run-2", etlv1.TriggerAnnotation)
		rv := api.get(t, key).ResourceVersion
		res := runWithKube(t, api, key, "run-1", testConfig(db), envOf(db), spec, Options{})
		requireOutcome(t, res, OutcomeFenced, configv1.ExitFenced)
		if api.get(t, key).ResourceVersion != rv {
			t.Fatalf("the stale runner wrote the status")
		}
		if n := db.queryInt(t, `SELECT count(*) FROM pg_namespace WHERE nspname = 'etl'`); n != 0 {
			t.Fatalf("the stale runner touched the state database")
		}
	})

	t.Run("two runners of one run: exactly one proceeds", func(t *testing.T) {
		bin := buildSluice(t)
		db := newTestDB(t, "main")
		createSource(t, db, 20000)
		createTarget(t, db, "items")
		spec := specJSON(t, specOpts{sourceConn: "main", batch: 200})
		key := api.createPipeline(t, "twice", spec)
		api.request(t, key, "run-1", etlv1.TriggerCreated)
		cfg := writeConfig(t, testConfig(db))
		env := runEnv(envOf(db), spec, "run-1")
		env[configv1.EnvPipelineName] = key.Name
		var procs []*runnerProcess
		for range 2 {
			procs = append(procs, startRunner(t, bin, env, "--config", cfg, "--kubeconfig", api.kubeconfig,
				"--termination-log", "", "--lock-wait", "2s", "--log-level", "warn"))
		}
		codes := []int{procs[0].wait(t, 2*time.Minute), procs[1].wait(t, 2*time.Minute)}
		slices.Sort(codes)
		if !slices.Equal(codes, []int{configv1.ExitOK, configv1.ExitFenced}) {
			t.Fatalf("exit codes %v, want one %d and one %d; logs:\n%s\n---\n%s", codes, configv1.ExitOK, configv1.ExitFenced,
				procs[0].log, procs[1].log)
		}
		sinkMatchesSource(t, db, db, "items")
		if n := db.queryInt(t, `SELECT epoch FROM etl.etl_state`); n != 1 {
			t.Fatalf("epoch %d: the second runner claimed the pipeline too", n)
		}
		if n := db.queryInt(t, `SELECT rows_read FROM etl.etl_state`); n != 20000 {
			t.Fatalf("%d rows read: the work was done twice", n)
		}
		if p := api.get(t, key); p.Status.Phase != etlv1.PhaseIdle || p.Status.Run.RowsRead != 20000 {
			t.Fatalf("status after the runs: phase %s, run %+v", p.Status.Phase, p.Status.Run)
		}
	})
}
