package runner

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// runnerOutputs is everything a runner process leaves outside the data plane.
type runnerOutputs struct {
	code        int
	log         string
	termination string
	pipeline    *etlv1.ETLPipeline
	events      []string
}

// all is every output as one text, each part labelled, for a failure message.
func (o runnerOutputs) all() map[string]string {
	st := o.pipeline.Status
	parts := map[string]string{"log": o.log, "termination message": o.termination,
		"events": strings.Join(o.events, "\n")}
	if st.Run != nil {
		parts["status.run.message"] = st.Run.Message
	}
	var conds []string
	for _, c := range st.Conditions {
		conds = append(conds, c.Type+" "+c.Reason+" "+c.Message)
	}
	parts["status.conditions"] = strings.Join(conds, "\n")
	if st.Checkpoint != nil {
		parts["status.checkpoint"] = strings.Join(st.Checkpoint.Values, ", ")
	}
	return parts
}

// runProcess runs one run of the pipeline key with the sluice binary, as a Job would, and
// collects its log, termination message, the pipeline's status and its events.
func runProcess(t *testing.T, bin string, api *apiServer, key types.NamespacedName, runID string,
	cfg *configv1.OperatorConfig, env map[string]string, spec string) runnerOutputs {
	t.Helper()
	termination := filepath.Join(t.TempDir(), "termination-log")
	e := runEnv(env, spec, runID)
	e[configv1.EnvPipelineName] = key.Name
	proc := startRunner(t, bin, e, "--config", writeConfig(t, cfg), "--kubeconfig", api.kubeconfig,
		"--termination-log", termination, "--log-level", "debug", "--progress-interval", "10ms", "--check-interval", "10ms")
	out := runnerOutputs{code: proc.wait(t, 2*time.Minute), log: proc.log.String(), pipeline: api.get(t, key)}
	if b, err := os.ReadFile(termination); err == nil {
		out.termination = string(b)
	}
	var events corev1.EventList
	if err := api.c.List(context.Background(), &events, client.InNamespace(key.Namespace)); err != nil {
		t.Fatalf("list events: %v", err)
	}
	for _, ev := range events.Items {
		if ev.InvolvedObject.Name == key.Name {
			out.events = append(out.events, ev.Reason+": "+ev.Message)
		}
	}
	return out
}

// requireAbsent fails when any output contains one of the words.
func requireAbsent(t *testing.T, out runnerOutputs, words ...string) {
	t.Helper()
	for where, text := range out.all() {
		for _, w := range words {
			if strings.Contains(text, w) {
				t.Errorf("%s contains %q:\n%s", where, w, text)
			}
		}
	}
}

func TestNoRowValuesLeaveTheRunner(t *testing.T) {
	api := startAPIServer(t)
	bin := buildSluice(t)

	// The sink table has a unique index on email besides its key: two source rows with
	// different keys and one email fail the upsert, and Postgres' DETAIL names the email.
	failing := []struct {
		name, sinkEmail, wantInMessage string
	}{
		{"a unique violation names its constraint, not the email", "text", "items_email_key"},
		{"a value quoted in a data exception is removed", "bigint", "SQLSTATE 22P02"},
	}
	for i, tc := range failing {
		t.Run(tc.name, func(t *testing.T) {
			db := newTestDB(t, "main")
			db.exec(t, `CREATE TABLE src (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, email text)`)
			db.exec(t, `INSERT INTO src VALUES
				(1, '2024-01-01 00:00:00+00', 'alice.liddell@example.com'),
				(2, '2024-01-01 00:00:01+00', 'alice.liddell@example.com')`)
			db.exec(t, `CREATE SCHEMA analytics`)
			db.exec(t, `CREATE TABLE analytics.items (id bigint PRIMARY KEY, updated_at timestamptz, email `+tc.sinkEmail+`)`)
			db.exec(t, `CREATE UNIQUE INDEX items_email_key ON analytics.items (email)`)
			spec := specJSON(t, specOpts{sourceConn: "main", batch: 100, query: "SELECT id, updated_at, email FROM src"})
			key := api.createPipeline(t, "unique-"+string(rune('a'+i)), spec)
			api.request(t, key, "run-1", etlv1.TriggerCreated)

			out := runProcess(t, bin, api, key, "run-1", testConfig(db), envOf(db), spec)
			if out.code != configv1.ExitBusiness || out.pipeline.Status.Phase != etlv1.PhaseFailed {
				t.Fatalf("exit %d, phase %s, want a business failure; log:\n%s", out.code, out.pipeline.Status.Phase, out.log)
			}
			requireAbsent(t, out, "alice.liddell@example.com", "alice.liddell", "example.com")
			for where, text := range map[string]string{"status.run.message": out.pipeline.Status.Run.Message,
				"termination message": out.termination} {
				if !strings.Contains(text, tc.wantInMessage) {
					t.Errorf("%s does not name %q: %s", where, tc.wantInMessage, text)
				}
			}
			if n := db.queryInt(t, `SELECT count(*) FROM analytics.items`); n != 0 {
				t.Errorf("the failed batch left %d rows in the sink", n)
			}
		})
	}

	t.Run("a redacted target shows **** for its checkpoint, and the next run resumes from the real one", func(t *testing.T) {
		db := newTestDB(t, "main")
		createSource(t, db, 3000)
		createTarget(t, db, "items")
		cfg := testConfig(db)
		cfg.Redaction.CheckpointTargets = []string{"analytics.items"}
		spec := specJSON(t, specOpts{sourceConn: "main", batch: 250})
		key := api.createPipeline(t, "redacted", spec)
		api.request(t, key, "run-1", etlv1.TriggerCreated)

		out := runProcess(t, bin, api, key, "run-1", cfg, envOf(db), spec)
		if out.code != configv1.ExitOK || out.pipeline.Status.Phase != etlv1.PhaseIdle {
			t.Fatalf("first run: exit %d, phase %s; log:\n%s", out.code, out.pipeline.Status.Phase, out.log)
		}
		requireMasked(t, db, out)

		// More rows, then a second run: it must continue after the committed checkpoint.
		insertRows(t, db, 3001, 4000)
		api.request(t, key, "run-2", etlv1.TriggerSchedule)
		out = runProcess(t, bin, api, key, "run-2", cfg, envOf(db), spec)
		if out.code != configv1.ExitOK || out.pipeline.Status.Phase != etlv1.PhaseIdle {
			t.Fatalf("second run: exit %d, phase %s; log:\n%s", out.code, out.pipeline.Status.Phase, out.log)
		}
		if got := out.pipeline.Status.Run.RowsRead; got != 1000 {
			t.Errorf("the second run read %d rows, want the 1000 after the checkpoint", got)
		}
		sinkMatchesSource(t, db, db, "items")
		requireMasked(t, db, out)
	})
}

// requireMasked checks that the status shows the checkpoint as one **** per value, and that
// neither it nor the log nor the termination message show the real checkpoint, which the
// state database keeps exact.
func requireMasked(t *testing.T, db *testDB, out runnerOutputs) {
	t.Helper()
	var real []string
	if err := db.conn.QueryRow(context.Background(), `SELECT incremental_checkpoint FROM etl.etl_state`).Scan(&real); err != nil {
		t.Fatal(err)
	}
	if len(real) != 2 || real[0] == "****" {
		t.Fatalf("state checkpoint %v, want the exact (updated_at, id)", real)
	}
	cp := out.pipeline.Status.Checkpoint
	if cp == nil || !slices.Equal(cp.Values, []string{"****", "****"}) || cp.Time == nil {
		t.Fatalf("status.checkpoint %+v, want two **** values and a time", cp)
	}
	// The id alone ("4000") could appear in a counter; the timestamp cannot.
	ts := real[0]
	requireAbsent(t, out, ts, strings.SplitN(ts, "+", 2)[0], `"`+real[1]+`"`)
	if !strings.Contains(out.log, `"checkpoint":["****","****"]`) || !strings.Contains(out.log, `"horizon":"****"`) {
		t.Errorf("the log shows no masked checkpoint or horizon:\n%s", out.log)
	}
	// The read horizon is a cursor value too.
	for _, c := range out.pipeline.Status.Conditions {
		if c.Type == etlv1.ConditionHorizonHeld && !strings.HasSuffix(c.Message, "****") {
			t.Errorf("the %s condition shows the horizon: %s", c.Type, c.Message)
		}
	}
}
