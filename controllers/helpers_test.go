package controllers

import (
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/test/testenv"
)

// testConfig is an operator configuration with a Postgres source, a second Postgres database,
// two Elasticsearch clusters (one with credentials) and a small whitelist.
func testConfig() *configv1.OperatorConfig {
	cfg := &configv1.OperatorConfig{
		APIVersion: configv1.APIVersion,
		Kind:       configv1.Kind,
		Runner: configv1.RunnerConfig{
			Image: "ghcr.io/sluice-dev/sluice:test",

			ConfigMapName: "sluice-config",
		},
		StateConnection: "state",
		Postgres: []configv1.PostgresConnection{
			{Name: "warehouse", DSNSecret: configv1.SecretKeyRef{Name: "warehouse-dsn", Key: "dsn"}},
			{Name: "state", DSNSecret: configv1.SecretKeyRef{Name: "state-dsn", Key: "url"}},
			{Name: "mart", DSNSecret: configv1.SecretKeyRef{Name: "mart-dsn", Key: "dsn"}},
		},
		Elasticsearch: []configv1.ElasticsearchConnection{
			{Name: "default", URLs: []string{"https://es:9200"}, CredentialsSecret: "es-creds"},
			{Name: "plain", URLs: []string{"http://es2:9200"}},
		},
		AllowedTargets: configv1.AllowedTargets{
			PostgresTables:       []string{"analytics.orders", "analytics.customers"},
			ElasticsearchIndexes: []string{"orders", "customers"},
		},
	}
	cfg.Default()
	return cfg
}

// legacySpec is a valid legacy-mode spec into analytics.orders, with the API server's defaults.
func legacySpec() etlv1.ETLPipelineSpec {
	return etlv1.ETLPipelineSpec{
		DesiredState: etlv1.DesiredRunning,
		Mode:         etlv1.ModeIncremental,
		Source: etlv1.SourceSpec{
			Connection: "warehouse",
			Query:      "SELECT id, total, updated_at FROM public.orders",
			Cursor:     etlv1.CursorSpec{Column: "updated_at", KeyColumns: []string{"id"}},
		},
		Target:           etlv1.TargetSpec{Name: "analytics.orders"},
		BatchSize:        5000,
		Retry:            etlv1.RetrySpec{Attempts: 3, InitialBackoff: &metav1.Duration{Duration: 1e9}},
		TransformTimeout: &metav1.Duration{Duration: 60e9},
	}
}

// tasksSpec is a valid tasks-mode spec (sql then python) into an Elasticsearch index.
func tasksSpec() etlv1.ETLPipelineSpec {
	s := legacySpec()
	s.Source.Query = ""
	s.Tasks = []etlv1.Task{
		{Name: "read", SQL: "SELECT id, email, updated_at FROM public.customers"},
		{Name: "shape", Python: "def transform(row):\n    return row\n"},
	}
	s.Target = etlv1.TargetSpec{Name: "es:customers"}
	return s
}

// cdcSpec is a valid CDC spec: public.orders, keyed by its primary key, into analytics.orders,
// streaming continuously (no schedule).
func cdcSpec() etlv1.ETLPipelineSpec {
	s := legacySpec()
	s.Mode = etlv1.ModeCDC
	s.Source.Query = ""
	s.Source.Table = "public.orders"
	s.Source.Cursor = etlv1.CursorSpec{KeyColumns: []string{"id"}}
	return s
}

func newPipeline(namespace, name string, spec etlv1.ETLPipelineSpec) *etlv1.ETLPipeline {
	return &etlv1.ETLPipeline{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Generation: 1, UID: types.UID("uid-" + namespace + "-" + name)},
		Spec:       spec,
	}
}

// fataler is the part of testing.TB and GinkgoT() the fixtures need.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// repoFile returns the path of a file of the repository.
func repoFile(rel string) string { return filepath.Join(testenv.RepoRoot(), filepath.FromSlash(rel)) }

// exampleConfig loads the OperatorConfig of config/manager/config.yaml, the one the samples
// are written against.
func exampleConfig(t fataler) *configv1.OperatorConfig {
	t.Helper()
	data, err := os.ReadFile(repoFile("config/manager/config.yaml"))
	if err != nil {
		t.Fatalf("read example config: %v", err)
	}
	cm := &corev1.ConfigMap{}
	if err := yaml.UnmarshalStrict(data, cm); err != nil {
		t.Fatalf("decode example ConfigMap: %v", err)
	}
	cfg, err := configv1.Parse([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("parse example OperatorConfig: %v", err)
	}
	return cfg
}

// samplePipelines loads the ETLPipelines of config/samples, by file name.
func samplePipelines(t fataler) map[string]*etlv1.ETLPipeline {
	t.Helper()
	files, err := filepath.Glob(repoFile("config/samples/*.yaml"))
	if err != nil {
		t.Fatalf("list samples: %v", err)
	}
	out := map[string]*etlv1.ETLPipeline{}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read sample %s: %v", f, err)
		}
		p := &etlv1.ETLPipeline{}
		if err := yaml.UnmarshalStrict(data, p); err != nil {
			t.Fatalf("decode sample %s: %v", f, err)
		}
		out[filepath.Base(f)] = p
	}
	if len(out) != 4 {
		t.Fatalf("want 4 sample pipelines in config/samples, found %d", len(out))
	}
	return out
}
