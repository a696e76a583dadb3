package runner

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/state"
)

func TestBackoffSchedule(t *testing.T) {
	cases := []struct {
		name    string
		initial time.Duration
		want    []time.Duration
	}{
		{"default doubles from one second", time.Second, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}},
		{"short initial", 100 * time.Millisecond, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}},
		{"capped", 2 * time.Minute, []time.Duration{2 * time.Minute, 4 * time.Minute, maxBackoff, maxBackoff}},
		{"zero waits nothing", 0, []time.Duration{0, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := retryPolicy{attempts: len(tc.want), initial: tc.initial}
			for i, want := range tc.want {
				if got := p.backoff(i + 1); got != want {
					t.Fatalf("backoff(%d) = %s, want %s", i+1, got, want)
				}
			}
		})
	}
}

func TestRetryFromSpec(t *testing.T) {
	d := func(x time.Duration) *metav1.Duration { return &metav1.Duration{Duration: x} }
	cases := []struct {
		name string
		spec etlv1.RetrySpec
		want retryPolicy
	}{
		{"defaulted by the API server", etlv1.RetrySpec{Attempts: 3, InitialBackoff: d(time.Second)}, retryPolicy{3, time.Second}},
		{"never defaulted", etlv1.RetrySpec{}, retryPolicy{3, time.Second}},
		{"explicit zero attempts", etlv1.RetrySpec{InitialBackoff: d(time.Second)}, retryPolicy{0, time.Second}},
		{"custom", etlv1.RetrySpec{Attempts: 5, InitialBackoff: d(250 * time.Millisecond)}, retryPolicy{5, 250 * time.Millisecond}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryFromSpec(tc.spec); got != tc.want {
				t.Fatalf("retryFromSpec = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMakePlan(t *testing.T) {
	main, other := &testDB{name: "main", dsn: "postgres://main"}, &testDB{name: "analytics", dsn: "postgres://analytics"}
	cfg := testConfig(main, other)
	env := envOf(main, other)
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	base := specOpts{sourceConn: "main", batch: 100}
	cases := []struct {
		name  string
		spec  func(o specOpts) string
		err   string
		check func(t *testing.T, p *plan)
	}{
		{name: "sink defaults to the source connection, which is the state database",
			spec: func(o specOpts) string { return specJSON(t, o) },
			check: func(t *testing.T, p *plan) {
				if !p.shared || p.sinkConn != "main" || p.target.Object != "items" || p.batchSize != 100 ||
					strings.Join(p.order, ",") != "updated_at,id" || strings.Join(p.sinkKey, ",") != "id" {
					t.Fatalf("plan %+v", p)
				}
			}},
		{name: "sink in another database",
			spec: func(o specOpts) string { o.targetConn = "analytics"; return specJSON(t, o) },
			check: func(t *testing.T, p *plan) {
				if p.shared || p.sinkConn != "analytics" || p.dsns["analytics"] != "postgres://analytics" {
					t.Fatalf("plan %+v", p)
				}
			}},
		{name: "full mode orders by the keys only",
			spec: func(o specOpts) string { o.mode = etlv1.ModeFull; return specJSON(t, o) },
			check: func(t *testing.T, p *plan) {
				if p.cursor != "" || strings.Join(p.order, ",") != "id" {
					t.Fatalf("plan %+v", p)
				}
			}},
		{name: "batch size defaults",
			spec: func(o specOpts) string { o.batch = 0; return specJSON(t, o) },
			check: func(t *testing.T, p *plan) {
				if p.batchSize != defaultBatchSize {
					t.Fatalf("batch size %d", p.batchSize)
				}
			}},
		{name: "malformed", spec: func(specOpts) string { return "{" }, err: "decode spec snapshot"},
		{name: "empty", spec: func(specOpts) string { return "" }, err: "is empty"},
		{name: "unknown mode", spec: func(o specOpts) string { o.mode = "Sometimes"; return specJSON(t, o) }, err: `mode "Sometimes"`},
		{name: "unknown target connection", spec: func(o specOpts) string { o.targetConn = "elsewhere"; return specJSON(t, o) },
			err: `target connection "elsewhere" is not a Postgres connection`},
		{name: "not whitelisted", spec: func(o specOpts) string { o.target = "analytics.secrets"; return specJSON(t, o) },
			err: "not in the operator's whitelist"},
		{name: "bad target name", spec: func(o specOpts) string { o.target = "public.items"; return specJSON(t, o) },
			err: "want analytics.<table> or es:<index>"},
		{name: "elasticsearch index not whitelisted", spec: func(o specOpts) string { o.target = "es:items"; return specJSON(t, o) },
			err: "target es:items is not in the operator's whitelist (allowedTargets.elasticsearchIndexes)"},
		{name: "python tasks are refused by the transform builder, not the plan",
			spec: func(o specOpts) string {
				return strings.Replace(specJSON(t, o), `"batchSize"`, `"tasks":[{"name":"read","sql":"SELECT 1"},{"name":"py","python":"x"}],"batchSize"`, 1)
			},
			check: func(t *testing.T, p *plan) {
				if p.query != "SELECT 1" {
					t.Fatalf("tasks mode reads with the first task's SQL, got %q", p.query)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := makePlan(cfg, tc.spec(base), "7", lookup)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || failure.Classify(err) != etlv1.ErrorBusiness {
					t.Fatalf("makePlan = %v, want a business error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("makePlan: %v", err)
			}
			if p.generation != 7 {
				t.Fatalf("generation %d", p.generation)
			}
			tc.check(t, p)
		})
	}
	if _, err := makePlan(cfg, specJSON(t, base), "seven", lookup); err == nil {
		t.Fatal("a malformed generation must fail")
	}
	if _, err := makePlan(&configv1.OperatorConfig{StateConnection: "gone"}, specJSON(t, base), "", lookup); err == nil ||
		!strings.Contains(err.Error(), `state connection "gone"`) {
		t.Fatalf("a state connection missing from the configuration: %v", err)
	}
}

func TestStartPosition(t *testing.T) {
	inc := &plan{mode: etlv1.ModeIncremental, order: []string{"updated_at", "id"}, generation: 3}
	full := &plan{mode: etlv1.ModeFull, order: []string{"id"}, generation: 3}
	incPos := &state.Position{Columns: []string{"updated_at", "id"}, Values: []string{"t", "9"}}
	fullPos := func(run string, gen int64) *state.FullPosition {
		return &state.FullPosition{Position: state.Position{Columns: []string{"id"}, Values: []string{"500"}}, RunID: run, Generation: gen}
	}
	cases := []struct {
		name    string
		pl      *plan
		trigger etlv1.RunTrigger
		claim   state.Claim
		want    []string
	}{
		{"incremental without checkpoint starts at the beginning", inc, etlv1.TriggerSchedule, state.Claim{}, nil},
		{"incremental continues across runs", inc, etlv1.TriggerSchedule, state.Claim{Incremental: incPos}, []string{"t", "9"}},
		{"incremental with other order columns starts over", inc, etlv1.TriggerSpecChanged,
			state.Claim{Incremental: &state.Position{Columns: []string{"created_at", "id"}, Values: []string{"t", "9"}}}, nil},
		{"incremental ignores a full checkpoint", inc, etlv1.TriggerResume, state.Claim{Full: fullPos("run-1", 3)}, nil},
		{"full replacement pod continues its run", full, etlv1.TriggerCreated, state.Claim{Full: fullPos("run-1", 3)}, []string{"500"}},
		{"full resume of the same generation continues", full, etlv1.TriggerResume, state.Claim{Full: fullPos("run-0", 3)}, []string{"500"}},
		{"full resume after a pause bumped the generation continues", full, etlv1.TriggerResume, state.Claim{Full: fullPos("run-0", 2)}, []string{"500"}},
		{"a new full run starts over", full, etlv1.TriggerAnnotation, state.Claim{Full: fullPos("run-0", 3)}, nil},
		{"full ignores the incremental checkpoint", full, etlv1.TriggerCreated, state.Claim{Incremental: incPos}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, note := startPosition(tc.pl, "run-1", tc.trigger, tc.claim)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") || (got == nil) != (tc.want == nil) {
				t.Fatalf("startPosition = %v (%s), want %v", got, note, tc.want)
			}
		})
	}
}

func TestScrub(t *testing.T) {
	s := newScrubber(map[string]string{
		"a": "postgres://etl:s3cr%40t@db.internal:5432/app?sslmode=require",
		"b": "host=db2 user=etl password='kv secret' dbname=x",
	})
	cases := []struct{ in, want string }{
		{`connect to "a": postgres://etl:s3cr%40t@db.internal:5432/app?sslmode=require refused`, `connect to "a": **** refused`},
		{"password s3cr@t appeared", "password **** appeared"},
		{"dial postgres://u:p@h/db failed", "dial postgres://****@h/db failed"},
		{"options password=hunter2 user=x", "options password=**** user=x"},
		{"nothing secret here", "nothing secret here"},
	}
	for _, tc := range cases {
		if got := s.scrub(tc.in); got != tc.want {
			t.Errorf("scrub(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestStreamFingerprints(t *testing.T) {
	base := func() etlv1.ETLPipelineSpec {
		return etlv1.ETLPipelineSpec{
			Mode: etlv1.ModeIncremental,
			Source: etlv1.SourceSpec{Connection: "main", Query: "SELECT * FROM t",
				Cursor: etlv1.CursorSpec{Column: "updated_at", KeyColumns: []string{"id"}}},
			Target: etlv1.TargetSpec{Name: "analytics.items", Connection: "main"}, BatchSize: 100,
		}
	}
	cases := []struct {
		name                 string
		change               func(*etlv1.ETLPipelineSpec)
		streamSame, fullSame bool
	}{
		{"nothing", func(*etlv1.ETLPipelineSpec) {}, true, true},
		{"pause", func(s *etlv1.ETLPipelineSpec) { s.DesiredState = etlv1.DesiredPaused }, true, true},
		{"batch size and schedule", func(s *etlv1.ETLPipelineSpec) { s.BatchSize = 7; s.Schedule = "@hourly" }, true, true},
		{"the query", func(s *etlv1.ETLPipelineSpec) { s.Source.Query = "SELECT * FROM t WHERE x" }, true, false},
		{"a transform", func(s *etlv1.ETLPipelineSpec) {
			s.Tasks = []etlv1.Task{{Name: "r", SQL: "SELECT * FROM t"}, {Name: "p", Python: "def transform(r): return r"}}
		}, true, false},
		{"the source connection", func(s *etlv1.ETLPipelineSpec) { s.Source.Connection = "other" }, false, false},
		{"the cursor", func(s *etlv1.ETLPipelineSpec) { s.Source.Cursor.Column = "ts" }, false, false},
		{"the keys", func(s *etlv1.ETLPipelineSpec) { s.Source.Cursor.KeyColumns = []string{"id", "region"} }, false, false},
		{"the target", func(s *etlv1.ETLPipelineSpec) { s.Target.Name = "analytics.other" }, false, false},
		{"the target connection", func(s *etlv1.ETLPipelineSpec) { s.Target.Connection = "dw" }, false, false},
		{"the sink key", func(s *etlv1.ETLPipelineSpec) { s.Target.Key = []string{"code"} }, false, false},
		{"fullSync Upsert said out loud", func(s *etlv1.ETLPipelineSpec) { s.Target.FullSync = etlv1.FullSyncUpsert }, true, true},
		{"the delete ratio", func(s *etlv1.ETLPipelineSpec) { r := 0.9; s.Target.MaxDeleteRatio = &r }, true, true},
		{"Mirror", func(s *etlv1.ETLPipelineSpec) { s.Target.FullSync = etlv1.FullSyncMirror }, true, false},
		{"a soft-delete marker", func(s *etlv1.ETLPipelineSpec) {
			s.Target.DeleteWhen = &etlv1.DeleteWhenSpec{Column: "deleted_at"}
		}, true, false},
	}
	a := base()
	for _, tc := range cases {
		b := base()
		tc.change(&b)
		if got := streamFingerprint(&a) == streamFingerprint(&b); got != tc.streamSame {
			t.Errorf("%s: same stream = %v, want %v", tc.name, got, tc.streamSame)
		}
		if got := fullFingerprint(&a) == fullFingerprint(&b); got != tc.fullSame {
			t.Errorf("%s: same full run = %v, want %v", tc.name, got, tc.fullSame)
		}
	}
}

// The runner judges the grants again, from the configuration it reads and the namespace
// labels the manager passed, before it reads anything.
func TestMakePlanChecksGrants(t *testing.T) {
	main, other := &testDB{name: "main", dsn: "postgres://main"}, &testDB{name: "analytics", dsn: "postgres://analytics"}
	cfg := testConfig(main, other)
	cfg.Tenancy.DefaultGrant = configv1.GrantNoNamespaces
	cfg.Postgres[0].Namespaces = []string{"team-a"}
	cfg.Postgres[1].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"analytics": "on"}}
	cfg.AllowedTargets.Grants = []configv1.TargetGrant{{Targets: []string{"analytics.items"}, Grant: configv1.Grant{NamespaceSelector: &metav1.LabelSelector{}}}}
	for _, tc := range []struct {
		name, ns, labels, targetConn, err string
	}{
		{name: "granted", ns: "team-a"},
		{name: "source not granted", ns: "team-b", err: `ConnectionNotGranted: namespace "team-b" is not granted the postgres connection "main"`},
		{name: "no namespace", ns: "", err: "ConnectionNotGranted"},
		{name: "sink not granted", ns: "team-a", targetConn: "analytics", err: `connection "analytics"`},
		{name: "sink granted by label", ns: "team-a", targetConn: "analytics", labels: `{"analytics":"on"}`},
		{name: "labels that do not parse", ns: "team-a", labels: `["x"]`, err: configv1.EnvNamespaceLabels},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := envOf(main, other)
			env[configv1.EnvPipelineNamespace] = tc.ns
			if tc.labels != "" {
				env[configv1.EnvNamespaceLabels] = tc.labels
			}
			lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
			_, err := makePlan(cfg, specJSON(t, specOpts{sourceConn: "main", targetConn: tc.targetConn, batch: 100}), "1", lookup)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || failure.Classify(err) != etlv1.ErrorBusiness):
				t.Fatalf("got %v, want a business error containing %q", err, tc.err)
			}
		})
	}
}

// A CDC pipeline into Elasticsearch indexes whole documents: Index by default, Update refused.
func TestPlanCDCIntoElasticsearchIndexesWholeDocuments(t *testing.T) {
	main := &testDB{name: "main", dsn: "postgres://main"}
	cfg := esConfig("http://127.0.0.1:1", main, "items")
	env := envOf(main)
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tc := range []struct {
		action etlv1.ElasticsearchAction
		want   etlv1.ElasticsearchAction
		err    string
	}{
		{"", etlv1.ActionIndex, ""},
		{etlv1.ActionIndex, etlv1.ActionIndex, ""},
		{etlv1.ActionUpdate, "", "target.action Update does not apply to CDC mode"},
	} {
		t.Run(string(tc.action), func(t *testing.T) {
			spec := cdcSpec(t, "es:items", "", 100, false, func(s map[string]any) {
				if tc.action != "" {
					s["target"].(map[string]any)["action"] = tc.action
				}
			})
			p, err := makePlan(cfg, spec, "1", lookup)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || failure.Classify(err) != etlv1.ErrorBusiness):
				t.Fatalf("makePlan = %v, want a business error containing %q", err, tc.err)
			case tc.err == "" && err != nil:
				t.Fatalf("makePlan: %v", err)
			case tc.err == "" && p.spec.Target.Action != tc.want:
				t.Fatalf("action %q, want %q", p.spec.Target.Action, tc.want)
			}
		})
	}
}
