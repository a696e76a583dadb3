// Package observability tests config/prometheus and config/grafana: the alerting rules with
// promtool (its checks and the unit tests of rules_test.yaml), every PromQL expression of the
// rules and the dashboard against the metrics Sluice exports, and the monitoring manifests
// against the Prometheus Operator's types.
package observability

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/sluice-dev/sluice/controllers"
	runnermetrics "github.com/sluice-dev/sluice/runner/metrics"
	"github.com/sluice-dev/sluice/test/testenv"
)

// metricType is what a contract metric is.
type metricType int

const (
	counter metricType = iota
	gauge
	histogram
)

type contractMetric struct {
	typ metricType
	// labels are the metric's own labels (the target's, job and instance, come on top).
	labels []string
}

// contract lists the metrics Sluice exports: the manager's sluice_pipeline_* and sluice_cdc_*,
// and the runner's sluice_runner_*. It must equal what the code exports; it is written out here until this test
// takes the list from the exporting packages instead.
var contract = map[string]contractMetric{
	// The manager, per pipeline.
	"sluice_pipeline_phase":                           {gauge, []string{"namespace", "name", "phase"}},
	"sluice_pipeline_rows_read_total":                 {counter, []string{"namespace", "name"}},
	"sluice_pipeline_rows_written_total":              {counter, []string{"namespace", "name"}},
	"sluice_pipeline_rows_deleted_total":              {counter, []string{"namespace", "name"}},
	"sluice_pipeline_rows_rejected_total":             {counter, []string{"namespace", "name"}},
	"sluice_pipeline_unresolved_rejects":              {gauge, []string{"namespace", "name"}},
	"sluice_pipeline_batches_total":                   {counter, []string{"namespace", "name"}},
	"sluice_pipeline_runs_total":                      {counter, []string{"namespace", "name", "outcome"}},
	"sluice_pipeline_last_success_timestamp_seconds":  {gauge, []string{"namespace", "name"}},
	"sluice_pipeline_consecutive_failures":            {gauge, []string{"namespace", "name"}},
	"sluice_pipeline_freshness_seconds":               {gauge, []string{"namespace", "name"}},
	"sluice_pipeline_run_seconds":                     {gauge, []string{"namespace", "name"}},
	"sluice_pipeline_last_progress_timestamp_seconds": {gauge, []string{"namespace", "name"}},
	// The manager, per CDC pipeline (status.replication).
	"sluice_cdc_slot_retained_bytes": {gauge, []string{"namespace", "name"}},
	"sluice_cdc_lag_seconds":         {gauge, []string{"namespace", "name"}},
	// The runner, while a run is in flight.
	"sluice_runner_batch_duration_seconds":                 {histogram, []string{"namespace", "name", "stage"}},
	"sluice_runner_rows_read_total":                        {counter, []string{"namespace", "name"}},
	"sluice_runner_rows_written_total":                     {counter, []string{"namespace", "name"}},
	"sluice_runner_rows_deleted_total":                     {counter, []string{"namespace", "name"}},
	"sluice_runner_batches_total":                          {counter, []string{"namespace", "name"}},
	"sluice_runner_bytes_read_total":                       {counter, []string{"namespace", "name"}},
	"sluice_runner_rows_per_second":                        {gauge, []string{"namespace", "name"}},
	"sluice_runner_retries_total":                          {counter, []string{"namespace", "name", "class"}},
	"sluice_runner_python_seconds_total":                   {counter, []string{"namespace", "name"}},
	"sluice_runner_elasticsearch_bulk_item_failures_total": {counter, []string{"namespace", "name", "status"}},
	"sluice_runner_run_start_timestamp_seconds":            {gauge, []string{"namespace", "name"}},
}

// labelValues are the values a contract label can take, where the contract enumerates them.
var labelValues = map[string][]string{
	"phase":   {"Idle", "RunRequested", "Running", "PauseRequested", "Paused", "Failed"},
	"outcome": {"succeeded", "failed", "paused"},
	"stage":   {"read", "transform", "write", "checkpoint"},
}

// targetLabels are the labels Prometheus (or the Prometheus Operator) adds to every series of
// a target.
var targetLabels = []string{"job", "instance", "pod", "container", "endpoint", "service"}

// Series that are not Sluice's but that the rules and the dashboard may read.
var prometheusSeries = map[string]bool{"up": true, "ALERTS": true, "ALERTS_FOR_STATE": true}

// requiredAlerts are the alerts docs/runbook.md documents.
var requiredAlerts = []string{"PipelineFailed", "PipelineStale", "RunStuck", "RepeatedInfraFailures", "OperatorDown", "SluiceCDCSlotRetainingWAL"}

// clusterAlerts concern no one pipeline: their annotations cannot name one.
var clusterAlerts = map[string]bool{"OperatorDown": true}

const runbookURL = "https://github.com/sluice-dev/sluice/blob/main/docs/runbook.md#"

func repoPath(parts ...string) string {
	return filepath.Join(append([]string{testenv.RepoRoot()}, parts...)...)
}

func readFile(t *testing.T, parts ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoPath(parts...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// strict decodes a YAML or JSON manifest into out, refusing fields out does not know.
func strict(t *testing.T, name string, data []byte, out any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(data, out); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func loadRules(t *testing.T) *monitoringv1.PrometheusRule {
	t.Helper()
	var pr monitoringv1.PrometheusRule
	strict(t, "config/prometheus/rules.yaml", readFile(t, "config", "prometheus", "rules.yaml"), &pr)
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		t.Fatalf("rules.yaml is %s %s, want monitoring.coreos.com/v1 PrometheusRule", pr.APIVersion, pr.Kind)
	}
	return &pr
}

// TestPromtool extracts the rule groups of rules.yaml and runs promtool's checks and the unit
// tests of rules_test.yaml on them.
func TestPromtool(t *testing.T) {
	promtool := testenv.Promtool(t)
	manifest := readFile(t, "config", "prometheus", "rules.yaml")
	groups, err := testenv.ExtractRuleGroups(manifest)
	if err != nil {
		t.Fatal(err)
	}
	unitTests := readFile(t, "config", "prometheus", "rules_test.yaml")
	var header struct {
		RuleFiles []string `json:"rule_files"`
	}
	if err := yaml.Unmarshal(unitTests, &header); err != nil {
		t.Fatalf("rules_test.yaml: %v", err)
	}
	if len(header.RuleFiles) != 1 || header.RuleFiles[0] != "rules.groups.yaml" {
		t.Fatalf("rules_test.yaml: rule_files = %v, want [rules.groups.yaml] (the groups of rules.yaml, extracted by this test)", header.RuleFiles)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.groups.yaml"), groups, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules_test.yaml"), unitTests, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
	run("check", "rules", "rules.groups.yaml")
	run("test", "rules", "rules_test.yaml")
}

// expression is a PromQL expression and where it comes from.
type expression struct {
	where string
	expr  string
}

func ruleExpressions(pr *monitoringv1.PrometheusRule) (exprs []expression, records map[string]bool) {
	records = map[string]bool{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if r.Record != "" {
				name = r.Record
				records[r.Record] = true
			}
			exprs = append(exprs, expression{where: fmt.Sprintf("rules.yaml: group %s, rule %s", g.Name, name), expr: r.Expr.String()})
		}
	}
	return exprs, records
}

// dashboard is the part of a Grafana dashboard this test reads.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readFile(t, "config", "grafana", "sluice.json"), &d); err != nil {
		t.Fatalf("config/grafana/sluice.json: %v", err)
	}
	return &d
}

func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// grafanaIntervals are Grafana's built-in interval variables, replaced by a duration before
// an expression is parsed.
var grafanaIntervals = regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`)

// labelValuesQuery is Grafana's label_values(selector, label) variable query.
var labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.*),\s*(\w+)\s*\)\s*$`)

func dashboardExpressions(t *testing.T, d *dashboard) []expression {
	t.Helper()
	var exprs []expression
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("sluice.json: panel %q, target %s has no expr", p.Title, tg.RefID)
				continue
			}
			exprs = append(exprs, expression{
				where: fmt.Sprintf("sluice.json: panel %q, target %s", p.Title, tg.RefID),
				expr:  grafanaIntervals.ReplaceAllString(tg.Expr, "5m"),
			})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		var s string
		switch {
		case json.Unmarshal(v.Query, &s) == nil:
			q.Query = s
		case json.Unmarshal(v.Query, &q) == nil:
		default:
			t.Errorf("sluice.json: variable %s: query %s is neither a string nor an object", v.Name, v.Query)
			continue
		}
		where := fmt.Sprintf("sluice.json: variable %s", v.Name)
		if m := labelValuesQuery.FindStringSubmatch(q.Query); m != nil {
			exprs = append(exprs, expression{where: where, expr: m[1]})
		} else {
			exprs = append(exprs, expression{where: where, expr: q.Query})
		}
	}
	return exprs
}

// selectorName returns the metric name of a vector selector, or "" when it has none.
func selectorName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// contractName maps a series name to the contract metric it belongs to: a histogram's
// _bucket, _count and _sum series to the histogram.
func contractName(name string) (string, contractMetric, bool) {
	if m, ok := contract[name]; ok && m.typ != histogram {
		return name, m, true
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		base, found := strings.CutSuffix(name, suffix)
		if m, ok := contract[base]; found && ok && m.typ == histogram {
			return base, m, true
		}
	}
	return "", contractMetric{}, false
}

// alternatives returns the values a matcher's regular expression lists, when it is a plain
// alternation of literal values (a|b|c), and false otherwise.
func alternatives(re string) ([]string, bool) {
	values := strings.Split(re, "|")
	for _, v := range values {
		if v == "" || regexp.QuoteMeta(v) != v {
			return nil, false
		}
	}
	return values, true
}

// checkSelectors parses e and checks that every series it selects is a contract metric,
// a series of Prometheus' own or a recording rule of rules.yaml; that a contract metric's
// matchers use its labels; and that enumerated labels match values that exist.
func checkSelectors(e expression, records map[string]bool) (selected []*parser.VectorSelector, problems []string) {
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(e.expr)
	if err != nil {
		return nil, []string{fmt.Sprintf("%s: %v\n%s", e.where, err, e.expr)}
	}
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		selected = append(selected, vs)
		name := selectorName(vs)
		if name == "" {
			problems = append(problems, fmt.Sprintf("%s: selector %s names no metric", e.where, vs))
			return nil
		}
		if prometheusSeries[name] || records[name] {
			return nil
		}
		base, m, ok := contractName(name)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: %s is not a metric Sluice exports, nor a recording rule of rules.yaml", e.where, name))
			return nil
		}
		allowed := append(append([]string{model.MetricNameLabel}, targetLabels...), m.labels...)
		if m.typ == histogram && strings.HasSuffix(name, "_bucket") {
			allowed = append(allowed, "le")
		}
		for _, lm := range vs.LabelMatchers {
			if !slices.Contains(allowed, lm.Name) {
				problems = append(problems, fmt.Sprintf("%s: %s has no label %q (it has %v)", e.where, base, lm.Name, m.labels))
				continue
			}
			known, enumerated := labelValues[lm.Name]
			if !enumerated || strings.Contains(lm.Value, "$") {
				continue
			}
			var values []string
			switch lm.Type {
			case labels.MatchEqual, labels.MatchNotEqual:
				values = []string{lm.Value}
			case labels.MatchRegexp, labels.MatchNotRegexp:
				values, _ = alternatives(lm.Value)
			}
			for _, v := range values {
				if !slices.Contains(known, v) {
					problems = append(problems, fmt.Sprintf("%s: %s{%s}: %q is not one of %v", e.where, base, lm.Name, v, known))
				}
			}
		}
		return nil
	})
	return selected, problems
}

// TestExpressionsUseContractMetrics parses every PromQL expression of rules.yaml and of the
// dashboard, and checks the series they select against the contract.
func TestExpressionsUseContractMetrics(t *testing.T) {
	exprs, records := ruleExpressions(loadRules(t))
	d := loadDashboard(t)
	exprs = append(exprs, dashboardExpressions(t, d)...)
	if len(exprs) < 20 {
		t.Fatalf("only %d expressions found in rules.yaml and sluice.json", len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		selected, problems := checkSelectors(e, records)
		for _, p := range problems {
			t.Error(p)
		}
		for _, vs := range selected {
			if base, _, ok := contractName(selectorName(vs)); ok {
				used[base] = true
			}
		}
	}
	t.Logf("%d expressions parsed; %d of the %d contract metrics used", len(exprs), len(used), len(contract))
}

// TestCheckSelectorsCatchesMistakes makes sure the check above fails where it should.
func TestCheckSelectorsCatchesMistakes(t *testing.T) {
	records := map[string]bool{"sluice:pipeline_freshness_threshold_seconds": true}
	for _, tc := range []struct {
		expr string
		ok   bool
	}{
		{`sluice_pipeline_phase{phase="Failed"} == 1`, true},
		{`histogram_quantile(0.9, sum by (le) (rate(sluice_runner_batch_duration_seconds_bucket{stage="write"}[5m])))`, true},
		{`rate(sluice_runner_batch_duration_seconds_sum[5m]) / rate(sluice_runner_batch_duration_seconds_count[5m])`, true},
		{`sluice:pipeline_freshness_threshold_seconds > 0 or absent(up{job="sluice-manager"})`, true},
		{`sluice_pipeline_phase{phase=~"Paused|PauseRequested"}`, true},
		{`sluice_pipeline_phase{phase="Pasued"}`, false},
		{`sluice_pipeline_phase{phase=~"Paused|Stopped"}`, false},
		{`sluice_pipeline_phase{state="Failed"}`, false},
		{`sluice_pipeline_rows_written`, false},
		{`sluice_pipeline_rows_written_total_bucket`, false},
		{`sluice_runner_batch_duration_seconds`, false},
		{`rate(sluice_runner_rows_written_total[5m]`, false},
		{`sluice:unknown_record`, false},
	} {
		_, problems := checkSelectors(expression{where: "case", expr: tc.expr}, records)
		if ok := len(problems) == 0; ok != tc.ok {
			t.Errorf("%s: ok = %v, want %v (%v)", tc.expr, ok, tc.ok, problems)
		}
	}
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// TestAlerts checks that the documented alerts exist, with a severity, annotations that name
// the pipeline, and a runbook_url whose anchor is a heading of docs/runbook.md.
func TestAlerts(t *testing.T) {
	pr := loadRules(t)
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(readFile(t, "docs", "runbook.md")), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			anchors[githubAnchor(strings.TrimLeft(h, "#"))] = true
		}
	}
	var alerts []string
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			if !clusterAlerts[r.Alert] {
				for _, a := range []string{"summary", "description"} {
					if !strings.Contains(r.Annotations[a], "{{ $labels.namespace }}/{{ $labels.name }}") {
						t.Errorf("%s: %s does not name the pipeline ({{ $labels.namespace }}/{{ $labels.name }}): %q", r.Alert, a, r.Annotations[a])
					}
				}
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookURL)
			if !ok || !anchors[anchor] {
				t.Errorf("%s: runbook_url %q is not %s<a heading of docs/runbook.md>", r.Alert, r.Annotations["runbook_url"], runbookURL)
			}
			if anchor != strings.ToLower(r.Alert) {
				t.Errorf("%s: runbook_url anchor %q, want its own section #%s", r.Alert, anchor, strings.ToLower(r.Alert))
			}
		}
	}
	for _, want := range requiredAlerts {
		if !slices.Contains(alerts, want) {
			t.Errorf("rules.yaml has no alert %s (it has %v)", want, alerts)
		}
	}
}

// TestDashboard checks the dashboard's variables, data sources and filters, and that it shows
// what it promises: phase, throughput, freshness, batch latency by stage, failures, retries.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q, title %q: both are needed", d.UID, d.Title)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s: datasource %+v, want the ${datasource} variable", v.Name, v.Datasource)
		}
	}
	for _, v := range []string{"datasource", "namespace", "name"} {
		if !vars[v] {
			t.Errorf("no template variable %s", v)
		}
	}

	ids := map[int]string{}
	var exprs []string
	for _, p := range allPanels(d.Panels) {
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want the ${datasource} variable", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
			e := expression{where: fmt.Sprintf("panel %q, target %s", p.Title, tg.RefID), expr: grafanaIntervals.ReplaceAllString(tg.Expr, "5m")}
			selected, _ := checkSelectors(e, map[string]bool{"sluice:pipeline_freshness_threshold_seconds": true})
			for _, vs := range selected {
				if !strings.HasPrefix(selectorName(vs), "sluice") {
					continue
				}
				if !hasMatcher(vs, "namespace", "$namespace") || !hasMatcher(vs, "name", "$name") {
					t.Errorf("%s: %s does not filter on the variables (namespace=~\"$namespace\", name=~\"$name\")", e.where, vs)
				}
			}
		}
	}

	all := strings.Join(exprs, "\n")
	for what, re := range map[string]string{
		"pipeline health (phase)":           `sluice_pipeline_phase`,
		"throughput (rate of rows written)": `rate\(sluice_(runner|pipeline)_rows_written_total`,
		"freshness":                         `sluice_pipeline_freshness_seconds`,
		"batch latency by stage":            `histogram_quantile\([^,]+, sum by \(le, stage\) \(rate\(sluice_runner_batch_duration_seconds_bucket`,
		"failures":                          `sluice_pipeline_(consecutive_failures|runs_total)`,
		"retries":                           `sluice_runner_retries_total`,
	} {
		if !regexp.MustCompile(re).MatchString(all) {
			t.Errorf("the dashboard shows no %s (no expression matches %s)", what, re)
		}
	}
}

func hasMatcher(vs *parser.VectorSelector, name, value string) bool {
	for _, m := range vs.LabelMatchers {
		if m.Name == name && m.Type == labels.MatchRegexp && m.Value == value {
			return true
		}
	}
	return false
}

// TestManifests decodes the monitoring manifests strictly into the Prometheus Operator's types
// (an unknown or misspelt field fails), and checks what they select.
func TestManifests(t *testing.T) {
	wantRunner := map[string]string{
		"app.kubernetes.io/name":       "sluice",
		"app.kubernetes.io/component":  "runner",
		"app.kubernetes.io/managed-by": "sluice",
	}
	wantManager := map[string]string{
		"app.kubernetes.io/name":      "sluice",
		"app.kubernetes.io/component": "manager",
	}

	var pm monitoringv1.PodMonitor
	strict(t, "podmonitor.yaml", readFile(t, "config", "prometheus", "podmonitor.yaml"), &pm)
	if pm.Kind != "PodMonitor" || pm.APIVersion != "monitoring.coreos.com/v1" || pm.Namespace != "sluice-system" {
		t.Errorf("podmonitor.yaml: %s %s in %q", pm.APIVersion, pm.Kind, pm.Namespace)
	}
	if !maps.Equal(pm.Spec.Selector.MatchLabels, wantRunner) || !slices.Equal(pm.Spec.NamespaceSelector.MatchNames, []string{"sluice-system"}) {
		t.Errorf("podmonitor.yaml selects %v in %v, want %v in sluice-system", pm.Spec.Selector.MatchLabels, pm.Spec.NamespaceSelector.MatchNames, wantRunner)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("podmonitor.yaml: %d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	if ep := pm.Spec.PodMetricsEndpoints[0]; ep.Port == nil || *ep.Port != "metrics" || !ep.HonorLabels {
		t.Errorf("podmonitor.yaml: endpoint port %v, honorLabels %v; want port metrics and honorLabels (the series' namespace is the pipeline's)", ep.Port, ep.HonorLabels)
	}

	var sm monitoringv1.ServiceMonitor
	strict(t, "servicemonitor.yaml", readFile(t, "config", "prometheus", "servicemonitor.yaml"), &sm)
	if sm.Kind != "ServiceMonitor" || sm.APIVersion != "monitoring.coreos.com/v1" || sm.Namespace != "sluice-system" {
		t.Errorf("servicemonitor.yaml: %s %s in %q", sm.APIVersion, sm.Kind, sm.Namespace)
	}
	if !maps.Equal(sm.Spec.Selector.MatchLabels, wantManager) {
		t.Errorf("servicemonitor.yaml selects %v, want %v", sm.Spec.Selector.MatchLabels, wantManager)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("servicemonitor.yaml: %d endpoints, want 1", len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	// bearerTokenFile is deprecated in favour of authorization, which takes the token from a
	// Secret; kubebuilder's scaffold sends Prometheus' own service-account token this way.
	tokenFile := ep.BearerTokenFile //nolint:staticcheck // see above
	if ep.Scheme == nil || string(*ep.Scheme) != "https" || tokenFile == "" || ep.TLSConfig == nil ||
		ep.TLSConfig.InsecureSkipVerify == nil || !*ep.TLSConfig.InsecureSkipVerify || !ep.HonorLabels {
		t.Errorf("servicemonitor.yaml: endpoint %+v: want https, a bearer token file, insecureSkipVerify and honorLabels", ep)
	}
	job := ""
	for _, rc := range ep.RelabelConfigs {
		if rc.TargetLabel == "job" && rc.Replacement != nil {
			job = *rc.Replacement
		}
	}
	if job != "sluice-manager" {
		t.Errorf("servicemonitor.yaml: job %q, want sluice-manager (OperatorDown's up{job=\"sluice-manager\"})", job)
	}

	var svc corev1.Service
	strict(t, "metrics_service.yaml", readFile(t, "config", "prometheus", "metrics_service.yaml"), &svc)
	wantService := maps.Clone(wantManager)
	wantService["app.kubernetes.io/managed-by"] = "kustomize"
	if !maps.Equal(svc.Labels, wantService) || !maps.Equal(svc.Spec.Selector, wantManager) {
		t.Errorf("metrics_service.yaml: labels %v, selector %v", svc.Labels, svc.Spec.Selector)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != ep.Port {
		t.Errorf("metrics_service.yaml: ports %+v, want one named %q (the ServiceMonitor's)", svc.Spec.Ports, ep.Port)
	}

	var np networkingv1.NetworkPolicy
	strict(t, "networkpolicy.yaml", readFile(t, "config", "prometheus", "networkpolicy.yaml"), &np)
	if !maps.Equal(np.Spec.PodSelector.MatchLabels, wantRunner) {
		t.Errorf("networkpolicy.yaml selects %v, want the runner pods %v", np.Spec.PodSelector.MatchLabels, wantRunner)
	}

	// rules.yaml: strict too (loadRules), and each group's rules well formed.
	for _, g := range loadRules(t).Spec.Groups {
		for _, r := range g.Rules {
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("group %s: a rule needs exactly one of alert and record: %+v", g.Name, r)
			}
		}
	}

	// Every manifest of the directory is either in kustomization.yaml or said to be left out.
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(readFile(t, "config", "prometheus", "kustomization.yaml"), &k); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(repoPath("config", "prometheus", "*.yaml"))
	var left []string
	for _, f := range files {
		base := filepath.Base(f)
		if base == "kustomization.yaml" || base == "rules_test.yaml" || base == "networkpolicy.yaml" {
			continue
		}
		if !slices.Contains(k.Resources, base) {
			left = append(left, base)
		}
	}
	sort.Strings(left)
	if len(left) > 0 {
		t.Errorf("config/prometheus/kustomization.yaml leaves out %v", left)
	}
}

// TestKustomize builds config/prometheus and config/grafana with kubectl's kustomize.
func TestKustomize(t *testing.T) {
	kubectl := testenv.Kubectl(t)
	for _, dir := range []string{"prometheus", "grafana"} {
		out, err := exec.Command(kubectl, "kustomize", repoPath("config", dir)).CombinedOutput()
		if err != nil {
			t.Errorf("kubectl kustomize config/%s: %v\n%s", dir, err, out)
			continue
		}
		if dir == "grafana" {
			var cm corev1.ConfigMap
			strict(t, "config/grafana (built)", out, &cm)
			var d map[string]any
			if err := json.Unmarshal([]byte(cm.Data["sluice.json"]), &d); err != nil || d["uid"] == nil {
				t.Errorf("config/grafana: the ConfigMap does not hold the dashboard: %v", err)
			}
			continue
		}
		if n := bytes.Count(out, []byte("\n---\n")) + 1; n != 4 {
			t.Errorf("kubectl kustomize config/prometheus: %d objects, want 4:\n%s", n, out)
		}
	}
}

// The contract is what the code exports: the manager's and the runner's names, no more, no
// less.
func TestContractIsWhatSluiceExports(t *testing.T) {
	exported := append(controllers.MetricNames(), runnermetrics.Names()...)
	slices.Sort(exported)
	var listed []string
	for name := range contract {
		listed = append(listed, name)
	}
	slices.Sort(listed)
	if !slices.Equal(exported, listed) {
		t.Fatalf("the contract lists\n  %v\nthe code exports\n  %v", listed, exported)
	}
}
