package controllers

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestTestConfigIsValid(t *testing.T) {
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("fixture: %v", err)
	}
}

func TestValidateSpec(t *testing.T) {
	cfg := testConfig()
	cases := []struct {
		name       string
		mutate     func(s *etlv1.ETLPipelineSpec)
		base       func() etlv1.ETLPipelineSpec
		wantReason string // "" for a valid spec
		wantInMsg  string
	}{
		{name: "legacy into an allowed table", base: legacySpec},
		{name: "tasks into an allowed index", base: tasksSpec},
		{name: "schedule descriptor", base: legacySpec, mutate: func(s *etlv1.ETLPipelineSpec) { s.Schedule = "@every 2m" }},
		{name: "schedule at the minimum interval", base: legacySpec, mutate: func(s *etlv1.ETLPipelineSpec) { s.Schedule = "* * * * *" }},
		{name: "schedule five fields", base: legacySpec, mutate: func(s *etlv1.ETLPipelineSpec) { s.Schedule = "*/5 * * * 1-5" }},
		{name: "explicit postgres target connection", base: legacySpec, mutate: func(s *etlv1.ETLPipelineSpec) { s.Target.Connection = "mart" }},
		{name: "explicit es connection", base: tasksSpec, mutate: func(s *etlv1.ETLPipelineSpec) { s.Target.Connection = "plain" }},

		{"schedule out of range", func(s *etlv1.ETLPipelineSpec) { s.Schedule = "61 * * * *" }, legacySpec, etlv1.ReasonInvalidSpec, "spec.schedule"},
		{"schedule more frequent than the operator's minimum", func(s *etlv1.ETLPipelineSpec) { s.Schedule = "@every 10s" }, legacySpec,
			etlv1.ReasonInvalidSpec, "every 10s; the operator's minimum is 1m0s"},
		{"an uneven schedule with two ticks too close", func(s *etlv1.ETLPipelineSpec) { s.Schedule = "0,30 0-23 * * *" }, legacySpec,
			"", ""},
		{"schedule garbage", func(s *etlv1.ETLPipelineSpec) { s.Schedule = "@fortnightly" }, legacySpec, etlv1.ReasonInvalidSpec, "spec.schedule"},
		{"bad target", func(s *etlv1.ETLPipelineSpec) { s.Target.Name = "public.orders" }, legacySpec, etlv1.ReasonInvalidSpec, "spec.target.name"},
		{"action on a postgres target", func(s *etlv1.ETLPipelineSpec) { s.Target.Action = etlv1.ActionIndex }, legacySpec, etlv1.ReasonInvalidSpec, "spec.target.action"},
		{"first task python", func(s *etlv1.ETLPipelineSpec) { s.Tasks[0], s.Tasks[1] = s.Tasks[1], s.Tasks[0] }, tasksSpec, etlv1.ReasonInvalidSpec, "first task must be an sql task"},
		{"second sql task", func(s *etlv1.ETLPipelineSpec) { s.Tasks[1] = etlv1.Task{Name: "again", SQL: "SELECT 1"} }, tasksSpec, etlv1.ReasonInvalidSpec, "only the first task"},
		{"task with both", func(s *etlv1.ETLPipelineSpec) { s.Tasks[1].SQL = "SELECT 1" }, tasksSpec, etlv1.ReasonInvalidSpec, "exactly one of sql or python"},
		{"task with neither", func(s *etlv1.ETLPipelineSpec) { s.Tasks[1].Python = "" }, tasksSpec, etlv1.ReasonInvalidSpec, "exactly one of sql or python"},
		{"duplicate task names", func(s *etlv1.ETLPipelineSpec) { s.Tasks[1].Name = s.Tasks[0].Name }, tasksSpec, etlv1.ReasonInvalidSpec, "duplicate task name"},
		{"neither query nor tasks", func(s *etlv1.ETLPipelineSpec) { s.Source.Query = "  " }, legacySpec, etlv1.ReasonInvalidSpec, "spec.source.query"},
		{"incremental without cursor", func(s *etlv1.ETLPipelineSpec) { s.Source.Cursor.Column = "" }, legacySpec, etlv1.ReasonInvalidSpec, "spec.source.cursor.column"},
		{"no key columns", func(s *etlv1.ETLPipelineSpec) { s.Source.Cursor.KeyColumns = nil }, legacySpec, etlv1.ReasonInvalidSpec, "keyColumns"},
		{"duplicate key columns", func(s *etlv1.ETLPipelineSpec) { s.Source.Cursor.KeyColumns = []string{"id", "id"} }, legacySpec, etlv1.ReasonInvalidSpec, "duplicate column"},
		{"batch size too large", func(s *etlv1.ETLPipelineSpec) { s.BatchSize = 1000000 }, legacySpec, etlv1.ReasonInvalidSpec, "spec.batchSize"},
		{"zero transform timeout", func(s *etlv1.ETLPipelineSpec) { s.TransformTimeout = &metav1.Duration{} }, legacySpec, etlv1.ReasonInvalidSpec, "transformTimeout"},

		{"table not whitelisted", func(s *etlv1.ETLPipelineSpec) { s.Target.Name = "analytics.secrets" }, legacySpec, etlv1.ReasonTargetNotAllowed, "analytics.secrets"},
		{"index not whitelisted", func(s *etlv1.ETLPipelineSpec) { s.Target.Name = "es:logs" }, tasksSpec, etlv1.ReasonTargetNotAllowed, "es:logs"},

		{"unknown source connection", func(s *etlv1.ETLPipelineSpec) { s.Source.Connection = "nope" }, legacySpec, etlv1.ReasonUnknownConnection, "spec.source.connection"},
		{"unknown postgres target connection", func(s *etlv1.ETLPipelineSpec) { s.Target.Connection = "nope" }, legacySpec, etlv1.ReasonUnknownConnection, "spec.target.connection"},
		{"es target on a postgres connection", func(s *etlv1.ETLPipelineSpec) { s.Target.Connection = "warehouse" }, tasksSpec, etlv1.ReasonUnknownConnection, "not an elasticsearch connection"},
		{"postgres target on an es connection", func(s *etlv1.ETLPipelineSpec) { s.Target.Connection = "plain" }, legacySpec, etlv1.ReasonUnknownConnection, "not a postgres connection"},

		{name: "cdc", base: cdcSpec},
		{name: "cdc with a schedule", base: cdcSpec, mutate: func(s *etlv1.ETLPipelineSpec) { s.Schedule = "@hourly" }},
		{name: "cdc of a table without schema", base: cdcSpec, mutate: func(s *etlv1.ETLPipelineSpec) { s.Source.Table = "orders" }},
		{name: "cdc with python tasks", base: cdcSpec, mutate: func(s *etlv1.ETLPipelineSpec) {
			s.Tasks = []etlv1.Task{{Name: "shape", Python: "def transform(row):\n    return row\n"}, {Name: "again", Python: "def transform(row):\n    return row\n"}}
		}},
		{name: "cdc with columns that hold the key", base: cdcSpec, mutate: func(s *etlv1.ETLPipelineSpec) { s.Source.Columns = []string{"total", "id"} }},
		{name: "cdc with a composite key among its columns", base: cdcSpec, mutate: func(s *etlv1.ETLPipelineSpec) {
			s.Source.Cursor.KeyColumns = []string{"tenant", "id"}
			s.Source.Columns = []string{"id", "tenant", "total"}
		}},
		{name: "cdc into elasticsearch", base: cdcSpec, mutate: func(s *etlv1.ETLPipelineSpec) { s.Target = etlv1.TargetSpec{Name: "es:orders"} }},
		{name: "cdc into elasticsearch with Index", base: cdcSpec, mutate: func(s *etlv1.ETLPipelineSpec) {
			s.Target = etlv1.TargetSpec{Name: "es:orders", Action: etlv1.ActionIndex}
		}},
		{"cdc into elasticsearch with Update", func(s *etlv1.ETLPipelineSpec) {
			s.Target = etlv1.TargetSpec{Name: "es:orders", Action: etlv1.ActionUpdate}
		}, cdcSpec, etlv1.ReasonInvalidSpec, "spec.target.action: Update does not apply to CDC mode"},
		{"cdc without a table", func(s *etlv1.ETLPipelineSpec) { s.Source.Table = "" }, cdcSpec, etlv1.ReasonInvalidSpec, "spec.source.table: required when mode is CDC"},
		{"cdc with a query", func(s *etlv1.ETLPipelineSpec) { s.Source.Query = "SELECT 1" }, cdcSpec, etlv1.ReasonInvalidSpec, "spec.source.query: a CDC pipeline reads source.table"},
		{"cdc with an sql task", func(s *etlv1.ETLPipelineSpec) {
			s.Tasks = []etlv1.Task{{Name: "read", SQL: "SELECT 1"}, {Name: "shape", Python: "def transform(row):\n    return row\n"}}
		}, cdcSpec, etlv1.ReasonInvalidSpec, "spec.tasks[0] (read): a CDC pipeline reads source.table: sql tasks do not apply"},
		{"cdc with an sql task after python", func(s *etlv1.ETLPipelineSpec) {
			s.Tasks = []etlv1.Task{{Name: "shape", Python: "def transform(row):\n    return row\n"}, {Name: "read", SQL: "SELECT 1"}}
		}, cdcSpec, etlv1.ReasonInvalidSpec, "spec.tasks[1] (read): a CDC pipeline"},
		{"cdc task with neither", func(s *etlv1.ETLPipelineSpec) { s.Tasks = []etlv1.Task{{Name: "shape"}} }, cdcSpec, etlv1.ReasonInvalidSpec, "exactly one of sql or python"},
		{"cdc with a cursor column", func(s *etlv1.ETLPipelineSpec) { s.Source.Cursor.Column = "updated_at" }, cdcSpec, etlv1.ReasonInvalidSpec, "spec.source.cursor.column: does not apply to CDC"},
		{"cdc without key columns", func(s *etlv1.ETLPipelineSpec) { s.Source.Cursor.KeyColumns = nil }, cdcSpec, etlv1.ReasonInvalidSpec, "keyColumns"},
		{"cdc columns without the key", func(s *etlv1.ETLPipelineSpec) { s.Source.Columns = []string{"total"} }, cdcSpec, etlv1.ReasonInvalidSpec, `must include the key column "id"`},
		{"cdc columns without one key column", func(s *etlv1.ETLPipelineSpec) {
			s.Source.Cursor.KeyColumns = []string{"tenant", "id"}
			s.Source.Columns = []string{"id", "total"}
		}, cdcSpec, etlv1.ReasonInvalidSpec, `must include the key column "tenant"`},
		{"cdc duplicate columns", func(s *etlv1.ETLPipelineSpec) { s.Source.Columns = []string{"id", "total", "total"} }, cdcSpec, etlv1.ReasonInvalidSpec, `spec.source.columns: duplicate column "total"`},
		{"table on an incremental pipeline", func(s *etlv1.ETLPipelineSpec) { s.Source.Table = "public.orders" }, legacySpec, etlv1.ReasonInvalidSpec, "apply only to CDC mode"},
		{"columns on a full pipeline", func(s *etlv1.ETLPipelineSpec) { s.Mode = etlv1.ModeFull; s.Source.Columns = []string{"id"} }, tasksSpec, etlv1.ReasonInvalidSpec, "apply only to CDC mode"},
		{"cdc from an unknown connection", func(s *etlv1.ETLPipelineSpec) { s.Source.Connection = "nope" }, cdcSpec, etlv1.ReasonUnknownConnection, "spec.source.connection"},

		{"invalid wins over not allowed", func(s *etlv1.ETLPipelineSpec) { s.Target.Name = "analytics.secrets"; s.Schedule = "99 * * * *" }, legacySpec, etlv1.ReasonInvalidSpec, "schedule"},
		{"not allowed wins over unknown connection", func(s *etlv1.ETLPipelineSpec) { s.Target.Name = "analytics.secrets"; s.Source.Connection = "nope" }, legacySpec, etlv1.ReasonTargetNotAllowed, "whitelist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.base()
			if tc.mutate != nil {
				tc.mutate(&s)
			}
			got := validateSpec(&s, cfg, tenant{Name: "team"})
			switch {
			case tc.wantReason == "" && got != nil:
				t.Fatalf("valid spec refused: %v", got)
			case tc.wantReason == "":
				return
			case got == nil:
				t.Fatalf("want %s, spec accepted", tc.wantReason)
			case got.Reason != tc.wantReason:
				t.Fatalf("reason = %s (%s), want %s", got.Reason, got.Message, tc.wantReason)
			case !strings.Contains(got.Message, tc.wantInMsg):
				t.Fatalf("message %q does not mention %q", got.Message, tc.wantInMsg)
			}
		})
	}
}

func TestValidateSpecNoSingleESConnection(t *testing.T) {
	cfg := testConfig()
	cfg.Elasticsearch[0].Name = "first" // neither the only one nor `default`
	s := tasksSpec()
	got := validateSpec(&s, cfg, tenant{Name: "team"})
	if got == nil || got.Reason != etlv1.ReasonUnknownConnection {
		t.Fatalf("validateSpec = %v, want UnknownConnection", got)
	}
}

func TestCheckTarget(t *testing.T) {
	cfg := testConfig()
	for name, want := range map[string]bool{
		"analytics.orders": true, "analytics.customers": true, "es:orders": true, "es:customers": true,
		"analytics.other": false, "es:other": false, "es:analytics.orders": false, "bogus": false,
	} {
		s := legacySpec()
		s.Target.Name = name
		if got := checkTarget(&s, cfg); got.Allowed != want {
			t.Errorf("checkTarget(%s).Allowed = %v, want %v (%s)", name, got.Allowed, want, got.Message)
		}
	}
}

// The samples of config/samples must run under the example configuration of config/manager.
func TestSamplesValidAgainstExampleConfig(t *testing.T) {
	cfg := exampleConfig(t)
	for file, p := range samplePipelines(t) {
		if prob := validateSpec(&p.Spec, cfg, tenant{Name: p.Namespace}); prob != nil {
			t.Errorf("%s: %v", file, prob)
		}
		job, err := BuildRunnerJob(RunnerJobParams{Pipeline: p, Run: &etlv1.RunStatus{ID: "sample01", Generation: 1}, Config: cfg, Namespace: "sluice-system"})
		if err != nil {
			t.Errorf("%s: build job: %v", file, err)
			continue
		}
		if job.Spec.Template.Spec.ServiceAccountName != RunnerServiceAccount(p) {
			t.Errorf("%s: runner service account = %q", file, job.Spec.Template.Spec.ServiceAccountName)
		}
	}
}

// A CDC pipeline's source connection must let it replicate source.table
// (PostgresConnection.ReplicationRefusal); other modes never ask.
func TestValidateSpecReplicationTables(t *testing.T) {
	cdcOf := func(table string) func() etlv1.ETLPipelineSpec {
		return func() etlv1.ETLPipelineSpec { s := cdcSpec(); s.Source.Table = table; return s }
	}
	listed := func(c *configv1.OperatorConfig) {
		c.Postgres[0].ReplicationTables = []string{"public.orders", "sales.lines"}
	}
	shared := func(c *configv1.OperatorConfig) { c.Postgres[0].Namespaces = []string{"team"} }
	for _, tc := range []struct {
		name       string
		config     func(c *configv1.OperatorConfig)
		spec       func() etlv1.ETLPipelineSpec
		wantReason string
		wantInMsg  string
	}{
		{name: "no list, no grant: any table", spec: cdcOf("public.orders")},
		{name: "listed", config: listed, spec: cdcOf("public.orders")},
		{name: "listed, schema public by default", config: listed, spec: cdcOf("orders")},
		{name: "listed in another schema", config: listed, spec: cdcOf("sales.lines")},
		{name: "not listed", config: listed, spec: cdcOf("public.customers"),
			wantReason: etlv1.ReasonTableNotReplicable, wantInMsg: `table public.customers is not among connection "warehouse"'s replicationTables`},
		{name: "shared connection without a list", config: shared, spec: cdcOf("public.orders"),
			wantReason: etlv1.ReasonTableNotReplicable, wantInMsg: `connection "warehouse" is shared (it has a grant) and lists no replicationTables`},
		{name: "shared connection listing the table", config: func(c *configv1.OperatorConfig) { listed(c); shared(c) }, spec: cdcOf("public.orders")},
		{name: "incremental on a shared connection without a list", config: shared, spec: legacySpec},
		{name: "full on a connection listing other tables", config: listed, spec: tasksSpec},
		{name: "not granted wins over not replicable", config: func(c *configv1.OperatorConfig) { c.Postgres[0].Namespaces = []string{"other"} }, spec: cdcOf("public.orders"),
			wantReason: etlv1.ReasonConnectionNotGranted, wantInMsg: `"warehouse"`},
		{name: "invalid wins over not replicable", config: listed, spec: func() etlv1.ETLPipelineSpec { s := cdcOf("public.customers")(); s.Source.Cursor.Column = "x"; return s },
			wantReason: etlv1.ReasonInvalidSpec, wantInMsg: "cursor.column"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			if tc.config != nil {
				tc.config(cfg)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			s := tc.spec()
			got := validateSpec(&s, cfg, tenant{Name: "team"})
			switch {
			case tc.wantReason == "" && got != nil:
				t.Fatalf("refused: %v", got)
			case tc.wantReason == "":
			case got == nil || got.Reason != tc.wantReason:
				t.Fatalf("got %v, want %s", got, tc.wantReason)
			case !strings.Contains(got.Message, tc.wantInMsg):
				t.Fatalf("message %q does not say %q", got.Message, tc.wantInMsg)
			}
		})
	}
}

// A pipeline failed for its table stays Failed and Stalled like one failed for its grants,
// and a change of the operator configuration that lifts the refusal may run it again.
func TestTableNotReplicableIsASpecReason(t *testing.T) {
	if !isSpecReason(etlv1.ReasonTableNotReplicable) {
		t.Fatal("TableNotReplicable is not a spec problem's reason")
	}
}

func TestValidateSpecGrants(t *testing.T) {
	cfg := testConfig()
	cfg.Tenancy.DefaultGrant = configv1.GrantNoNamespaces
	cfg.Postgres[0].Namespaces = []string{"team-a"}                                                          // warehouse
	cfg.Postgres[2].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"mart": "yes"}} // mart
	cfg.Elasticsearch[0].NamespaceSelector = &metav1.LabelSelector{}                                         // default: everyone
	cfg.AllowedTargets.Grants = []configv1.TargetGrant{{Targets: []string{"analytics.orders", "es:customers"}, Grant: configv1.Grant{Namespaces: []string{"team-a", "team-b"}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	mart := func(s *etlv1.ETLPipelineSpec) { s.Target.Connection = "mart" }
	for _, tc := range []struct {
		name       string
		base       func() etlv1.ETLPipelineSpec
		mutate     func(s *etlv1.ETLPipelineSpec)
		ns         tenant
		wantReason string
		wantInMsg  string
	}{
		{name: "granted by name", base: legacySpec, ns: tenant{Name: "team-a"}},
		{name: "source not granted", base: legacySpec, ns: tenant{Name: "team-b"}, wantReason: etlv1.ReasonConnectionNotGranted, wantInMsg: `namespace "team-b" is not granted the postgres connection "warehouse"`},
		{name: "sink connection not granted", base: legacySpec, mutate: mart, ns: tenant{Name: "team-a"}, wantReason: etlv1.ReasonConnectionNotGranted, wantInMsg: `"mart"`},
		{name: "sink connection granted by label", base: legacySpec, mutate: mart, ns: tenant{Name: "team-a", Labels: map[string]string{"mart": "yes"}}},
		{name: "target not granted", base: legacySpec, mutate: func(s *etlv1.ETLPipelineSpec) { s.Target.Name = "analytics.customers" }, ns: tenant{Name: "team-a"},
			wantReason: etlv1.ReasonTargetNotGranted, wantInMsg: `namespace "team-a" is not granted the target analytics.customers`},
		{name: "es target and its default connection", base: tasksSpec, ns: tenant{Name: "team-a"}},
		{name: "es connection not granted", base: tasksSpec, mutate: func(s *etlv1.ETLPipelineSpec) { s.Target.Connection = "plain" }, ns: tenant{Name: "team-a"},
			wantReason: etlv1.ReasonConnectionNotGranted, wantInMsg: `elasticsearch connection "plain"`},
		{name: "unknown connection wins", base: legacySpec, mutate: func(s *etlv1.ETLPipelineSpec) { s.Source.Connection = "nope" }, ns: tenant{Name: "team-b"},
			wantReason: etlv1.ReasonUnknownConnection, wantInMsg: "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.base()
			if tc.mutate != nil {
				tc.mutate(&s)
			}
			got := validateSpec(&s, cfg, tc.ns)
			switch {
			case tc.wantReason == "" && got != nil:
				t.Fatalf("refused: %v", got)
			case tc.wantReason == "":
			case got == nil || got.Reason != tc.wantReason:
				t.Fatalf("got %v, want %s", got, tc.wantReason)
			case !strings.Contains(got.Message, tc.wantInMsg):
				t.Fatalf("message %q does not say %q", got.Message, tc.wantInMsg)
			}
		})
	}
}
