package helm

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
)

// kustomizeOnly are the objects of the kustomize bases that the chart does not render, and why.
var kustomizeOnly = map[string]string{
	// Helm stores the release in its namespace, so the namespace exists before the chart's
	// objects do: the chart's README says to create it with the Pod Security label.
	"Namespace sluice-system.": "the release namespace is made before the install",
}

// chartOnlyLabels are the objects to which the chart gives its labels where the kustomize base
// gives none: the manager's roles, which controller-gen writes without labels (config/rbac).
var chartOnlyLabels = map[string]bool{
	"ClusterRole sluice-manager.rbac.authorization.k8s.io":        true,
	"Role sluice-system/sluice-manager.rbac.authorization.k8s.io": true,
}

// clusterScoped are the kinds of the chart and the bases that live in no namespace: kustomize
// sets its namespace on those it does not know (the admission policies), the API server
// ignores it there.
var clusterScoped = map[string]bool{
	"Namespace": true, "CustomResourceDefinition": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true,
}

// everythingOn are the values that render what config/prometheus, config/networkpolicy and
// config/prometheus/networkpolicy.yaml add to config/default.
var everythingOn = []string{
	"metrics.service.enabled=true",
	"metrics.serviceMonitor.enabled=true",
	"metrics.podMonitor.enabled=true",
	"metrics.prometheusRule.enabled=true",
	"networkPolicy.runner.enabled=true",
	"networkPolicy.runnerMetrics.enabled=true",
}

// helmLabels are the labels the chart adds to every object, as Helm charts do; config/default
// has none of them. managed-by is one when it names the tool (the runner pods' selectors say
// managed-by: sluice, which counts).
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// normalize removes what may differ between a Helm and a kustomize rendering of the same
// object: the tools' labels (on the object, the pod template and in selectors), comments are
// already gone, and the metadata the tools never set alike. The operator configuration is
// compared as the manager reads it (see compareConfig), so its text is set aside.
func normalize(o *unstructured.Unstructured) map[string]any {
	obj := o.DeepCopy().Object
	if md, ok := obj["metadata"].(map[string]any); ok {
		for k := range md {
			if k != "name" && k != "namespace" && k != "labels" && k != "annotations" {
				delete(md, k)
			}
		}
	}
	stripLabels(obj)
	return obj
}

// stripLabels removes helmLabels from every label map and selector of v, recursively.
func stripLabels(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			if labels, ok := sub.(map[string]any); ok && (k == "labels" || k == "matchLabels" || k == "selector") {
				for _, l := range helmLabels {
					delete(labels, l)
				}
				if m := labels["app.kubernetes.io/managed-by"]; m == "Helm" || m == "kustomize" {
					delete(labels, "app.kubernetes.io/managed-by")
				}
				if len(labels) == 0 {
					delete(x, k)
					continue
				}
			}
			stripLabels(sub)
		}
	case []any:
		for _, sub := range x {
			stripLabels(sub)
		}
	}
}

// compare fails for every object that only one side renders, and for every difference of the
// objects both render.
func compare(t *testing.T, chart, kust []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range slices.Concat(chart, kust) {
		if clusterScoped[o.GetKind()] {
			o.SetNamespace("")
		}
	}
	c, k := byKey(t, "the chart", chart), byKey(t, "kustomize", kust)
	for _, name := range sortedKeys(k) {
		if _, ok := c[name]; !ok {
			if why, ok := kustomizeOnly[name]; ok {
				t.Logf("%s: kustomize only (%s)", name, why)
				continue
			}
			t.Errorf("%s: in the kustomize bases, not in the chart", name)
		}
	}
	for _, name := range sortedKeys(c) {
		ko, ok := k[name]
		if !ok {
			t.Errorf("%s: in the chart, not in the kustomize bases", name)
			continue
		}
		co := c[name]
		if co.GetKind() == "ConfigMap" {
			compareConfig(t, name, co, ko)
		}
		if chartOnlyLabels[name] && ko.GetLabels() == nil {
			co = co.DeepCopy()
			co.SetLabels(nil)
		}
		if d := diffs(name, normalize(co), normalize(ko), 20); len(d) > 0 {
			t.Errorf("the chart and the kustomize bases differ:\n  %s", strings.Join(d, "\n  "))
		}
	}
}

// compareConfig compares the operator configuration of two ConfigMaps as the manager reads it
// (strictly decoded, validated and defaulted), and then sets the text aside: YAML formatting
// and comments are no drift.
func compareConfig(t *testing.T, name string, chart, kust *unstructured.Unstructured) {
	t.Helper()
	parse := func(side string, o *unstructured.Unstructured) *configv1.OperatorConfig {
		text, _, _ := unstructured.NestedString(o.Object, "data", "config.yaml")
		cfg, err := configv1.Parse([]byte(text))
		if err != nil {
			t.Errorf("%s: the %s's operator configuration does not load: %v\n%s", name, side, err, text)
			return nil
		}
		if err := unstructured.SetNestedField(o.Object, "<compared as OperatorConfig>", "data", "config.yaml"); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cc, kc := parse("chart", chart), parse("kustomize base", kust)
	if cc != nil && kc != nil && !reflect.DeepEqual(cc, kc) {
		t.Errorf("%s: the operator configurations differ:\n  chart:     %+v\n  kustomize: %+v", name, *cc, *kc)
	}
}

func TestChartDefaultsRenderConfigDefault(t *testing.T) {
	chart := decode(t, "helm template", helmTemplate(t))
	kust := decode(t, "kubectl kustomize config/default", kustomize(t, "default"))
	compare(t, chart, kust)
}

func TestChartRendersPrometheusAndNetworkPolicyBases(t *testing.T) {
	chart := decode(t, "helm template", helmTemplate(t, everythingOn...))
	var kust []*unstructured.Unstructured
	for _, dir := range []string{"default", "prometheus", "networkpolicy"} {
		kust = append(kust, decode(t, "kubectl kustomize config/"+dir, kustomize(t, dir))...)
	}
	// Kept out of config/prometheus on purpose (it needs config/networkpolicy): applied alone.
	kust = append(kust, decode(t, "config/prometheus/networkpolicy.yaml", readConfig(t, "prometheus", "networkpolicy.yaml"))...)
	compare(t, chart, kust)
}

// TestChartRendersEachOptionAlone checks that each value turns on its own objects and no other.
func TestChartRendersEachOptionAlone(t *testing.T) {
	base := byKey(t, "the chart", decode(t, "helm template", helmTemplate(t)))
	want := map[string][]string{
		"metrics.service.enabled=true":             {"Service sluice-system/sluice-manager-metrics."},
		"metrics.serviceMonitor.enabled=true":      {"Service sluice-system/sluice-manager-metrics.", "ServiceMonitor sluice-system/sluice-manager.monitoring.coreos.com"},
		"metrics.podMonitor.enabled=true":          {"PodMonitor sluice-system/sluice-runner.monitoring.coreos.com"},
		"metrics.prometheusRule.enabled=true":      {"PrometheusRule sluice-system/sluice.monitoring.coreos.com"},
		"networkPolicy.runner.enabled=true":        {"NetworkPolicy sluice-system/sluice-runner.networking.k8s.io"},
		"networkPolicy.runnerMetrics.enabled=true": {"NetworkPolicy sluice-system/sluice-runner-metrics.networking.k8s.io"},
	}
	for _, set := range everythingOn {
		got := byKey(t, "the chart", decode(t, "helm template --set "+set, helmTemplate(t, set)))
		var added []string
		for _, k := range sortedKeys(got) {
			if _, ok := base[k]; !ok {
				added = append(added, k)
			}
		}
		if !slices.Equal(added, want[set]) {
			t.Errorf("--set %s adds %v, want %v", set, added, want[set])
		}
	}
}

// TestRunnerSelectorsCarryNoReleaseLabel: the runner pods are the manager's, not Helm's, so the
// PodMonitor and the NetworkPolicies must select them by the manager's labels alone (compare
// cannot see a release label there: it removes them everywhere).
func TestRunnerSelectorsCarryNoReleaseLabel(t *testing.T) {
	runner := map[string]any{
		"app.kubernetes.io/name":       "sluice",
		"app.kubernetes.io/component":  "runner",
		"app.kubernetes.io/managed-by": "sluice",
	}
	seen := 0
	for _, o := range decode(t, "helm template", helmTemplate(t, everythingOn...)) {
		var path []string
		switch o.GetKind() {
		case "PodMonitor":
			path = []string{"spec", "selector", "matchLabels"}
		case "NetworkPolicy":
			path = []string{"spec", "podSelector", "matchLabels"}
		default:
			continue
		}
		seen++
		got, _, _ := unstructured.NestedMap(o.Object, path...)
		if !maps.Equal(got, runner) {
			t.Errorf("%s selects %v, want the runner pods' labels %v", key(o), got, runner)
		}
	}
	if seen != 3 {
		t.Errorf("%d runner selectors, want 3 (a PodMonitor, two NetworkPolicies)", seen)
	}
}

// TestChartCopiesMatchTheirSources: the chart cannot read outside its directory, so it holds
// copies of the files it shares with the kustomize bases; make manifests refreshes them.
func TestChartCopiesMatchTheirSources(t *testing.T) {
	for copyOf, source := range map[string]string{
		"crds/etl.sluice.dev_etlpipelines.yaml": "crd/bases/etl.sluice.dev_etlpipelines.yaml",
		"files/manager-role.yaml":               "rbac/role.yaml",
		"files/runner-policy.yaml":              "rbac/runner_policy.yaml",
		"files/checkpoint-policy.yaml":          "rbac/checkpoint_policy.yaml",
		"files/prometheus-rules.yaml":           "prometheus/rules.yaml",
	} {
		got, err := os.ReadFile(filepath.Join(chartDir(), copyOf)) // #nosec G304 -- the repository's own files
		if err != nil {
			t.Errorf("%v (run make manifests)", err)
			continue
		}
		if string(got) != readConfig(t, filepath.FromSlash(source)) {
			t.Errorf("config/helm/sluice/%s differs from config/%s: run make manifests", copyOf, source)
		}
	}
	// Nothing else lies in crds/ or files/ unchecked.
	for _, dir := range []string{"crds", "files"} {
		entries, err := os.ReadDir(filepath.Join(chartDir(), dir))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int{"crds": 1, "files": 4}[dir]
		if len(entries) != want {
			t.Errorf("config/helm/sluice/%s holds %d files, want %d", dir, len(entries), want)
		}
	}
}

// TestChartNamesObjectsAfterTheRelease: a second release (in its own namespace) names its
// cluster-scoped objects apart from the first's, so Helm never finds another's object.
func TestChartNamesObjectsAfterTheRelease(t *testing.T) {
	out, err := helmCmd(t, "template", "analytics", chartDir(), "--namespace", "analytics-etl")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range decode(t, "helm template analytics", out) {
		if !strings.HasPrefix(o.GetName(), "analytics-sluice") {
			t.Errorf("%s: the name does not start with the release's prefix analytics-sluice", key(o))
		}
		if ns := o.GetNamespace(); ns != "" && ns != "analytics-etl" {
			t.Errorf("%s: not in the release namespace", key(o))
		}
		if o.GetKind() == "ConfigMap" {
			text, _, _ := unstructured.NestedString(o.Object, "data", "config.yaml")
			cfg, err := configv1.Parse([]byte(text))
			if err != nil {
				t.Fatalf("the operator configuration does not load: %v", err)
			}
			if cfg.Runner.ConfigMapName != o.GetName() {
				t.Errorf("runner.configMapName is %q, want the ConfigMap's own name %q", cfg.Runner.ConfigMapName, o.GetName())
			}
		}
	}
	if t.Failed() {
		t.Logf("rendered:\n%s", out)
	}
}
