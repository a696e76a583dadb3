package testenv_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/test/testenv"
)

// fakeManager serves what the manager's metrics endpoint would for two pipelines: a/p Failed,
// a/q Idle. With token set it answers only to that bearer token, as the manager does.
func fakeManager(token string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		var b strings.Builder
		b.WriteString("# HELP sluice_pipeline_phase The pipeline's phase: 1 for the current one.\n")
		b.WriteString("# TYPE sluice_pipeline_phase gauge\n")
		for _, phase := range []string{"Idle", "RunRequested", "Running", "PauseRequested", "Paused", "Failed"} {
			p, q := 0, 0
			if phase == "Failed" {
				p = 1
			}
			if phase == "Idle" {
				q = 1
			}
			fmt.Fprintf(&b, "sluice_pipeline_phase{namespace=\"a\",name=\"p\",phase=%q} %d\n", phase, p)
			fmt.Fprintf(&b, "sluice_pipeline_phase{namespace=\"a\",name=\"q\",phase=%q} %d\n", phase, q)
		}
		_, _ = w.Write([]byte(b.String()))
	})
}

func rulesPath() string {
	return filepath.Join(testenv.RepoRoot(), "config", "prometheus", "rules.yaml")
}

// TestPrometheusRulesAsShipped loads config/prometheus/rules.yaml unchanged: PipelineFailed has
// `for: 1m`, so within seconds it is pending (and would fire a minute later).
func TestPrometheusRulesAsShipped(t *testing.T) {
	srv := httptest.NewServer(fakeManager(""))
	defer srv.Close()

	prom := testenv.StartPrometheus(t, testenv.PrometheusConfig{
		Scrapes: []testenv.ScrapeTarget{{
			JobName:     "sluice-manager",
			Targets:     []string{strings.TrimPrefix(srv.URL, "http://")},
			HonorLabels: true,
		}},
		RuleFiles: []string{rulesPath()},
	})

	a := prom.WaitForAlert(t, "PipelineFailed", map[string]string{"namespace": "a", "name": "p"}, 30*time.Second, "pending", "firing")
	if a.Labels["severity"] != "warning" {
		t.Errorf("PipelineFailed labels = %v, want severity=warning", a.Labels)
	}
	if want := "Sluice pipeline a/p has failed."; a.Annotations["summary"] != want {
		t.Errorf("summary = %q, want %q", a.Annotations["summary"], want)
	}

	got := prom.Query(t, `sluice_pipeline_phase{phase="Failed"} == 1`)
	if len(got) != 1 || got[0].Labels["namespace"] != "a" || got[0].Labels["name"] != "p" || got[0].Value != 1 {
		t.Errorf("Failed pipelines = %+v, want a/p only", got)
	}
	if up := prom.Query(t, `up{job="sluice-manager"}`); len(up) != 1 || up[0].Value != 1 {
		t.Errorf("up = %+v, want one target up", up)
	}
	if s := prom.Query(t, `scalar(count(sluice_pipeline_phase))`); len(s) != 1 || s[0].Value != 12 {
		t.Errorf("count of phase series = %+v, want 12", s)
	}

	for _, a := range prom.Alerts(t) {
		if a.Name != "PipelineFailed" || a.Labels["name"] != "p" {
			t.Errorf("unexpected alert %s %s %v", a.Name, a.State, a.Labels)
		}
	}
}

// TestPrometheusAlertFires shortens the rules' `for:` (MaxFor) so PipelineFailed fires, and
// scrapes the fake manager over HTTPS with a bearer token, as the ServiceMonitor does.
func TestPrometheusAlertFires(t *testing.T) {
	const token = "test-token"
	srv := httptest.NewTLSServer(fakeManager(token))
	defer srv.Close()

	prom := testenv.StartPrometheus(t, testenv.PrometheusConfig{
		ScrapeInterval:     500 * time.Millisecond,
		EvaluationInterval: 500 * time.Millisecond,
		Scrapes: []testenv.ScrapeTarget{{
			JobName:            "sluice-manager",
			Targets:            []string{strings.TrimPrefix(srv.URL, "https://")},
			Scheme:             "https",
			BearerToken:        token,
			InsecureSkipVerify: true,
			HonorLabels:        true,
		}},
		RuleFiles: []string{rulesPath()},
		MaxFor:    time.Second,
	})

	a := prom.WaitForAlert(t, "PipelineFailed", map[string]string{"namespace": "a", "name": "p"}, 30*time.Second, "firing")
	if a.Value != "1e+00" && a.Value != "1" {
		t.Errorf("PipelineFailed value = %q, want 1", a.Value)
	}
	for _, a := range prom.Alerts(t) {
		if a.Labels["name"] == "q" || a.Name == "OperatorDown" {
			t.Errorf("unexpected alert %s %s %v", a.Name, a.State, a.Labels)
		}
	}
}

// TestExtractRuleGroups turns a PrometheusRule into a plain rule file and keeps a plain one.
func TestExtractRuleGroups(t *testing.T) {
	manifest := []byte(`apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: x}
spec:
  groups:
    - name: g
      rules:
        - {alert: A, expr: up == 0, for: 5m}
`)
	plain, err := testenv.ExtractRuleGroups(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(plain); !strings.HasPrefix(s, "groups:") || strings.Contains(s, "apiVersion") || !strings.Contains(s, "alert: A") {
		t.Errorf("extracted:\n%s", s)
	}
	again, err := testenv.ExtractRuleGroups(plain)
	if err != nil || string(again) != string(plain) {
		t.Errorf("a plain rule file changed: %v\n%s", err, again)
	}
	if _, err := testenv.ExtractRuleGroups([]byte("kind: ConfigMap\nspec: {groups: []}\n")); err == nil {
		t.Error("a ConfigMap was taken for a PrometheusRule")
	}
}
