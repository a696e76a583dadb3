package helm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/sluice-dev/sluice/test/testenv"
)

// TestKubeAPIServerAcceptsTheChart applies what the chart renders (its CRD, the manager, RBAC,
// the admission policy, the metrics Service and the NetworkPolicies) in a server-side dry run
// to a real kube-apiserver: every field is checked against the server's own schemas.
func TestKubeAPIServerAcceptsTheChart(t *testing.T) {
	_, env := testenv.StartAPIServer(t)
	user, err := env.AddUser(envtest.User{Name: "chart-test", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatalf("add a user to the API server: %v", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(testenv.Kubectl(t), append([]string{"--kubeconfig", kubeconfig}, args...)...) // #nosec G204 -- the test bed's own kubectl
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("kubectl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String()
	}
	kubectl("", "create", "namespace", namespace)

	// The Prometheus Operator's kinds are not served here (no CRDs of theirs): the rest of
	// everythingOn goes to the server; the monitors are decoded strictly below.
	manifest := helmTemplate(t, "metrics.service.enabled=true", "networkPolicy.runner.enabled=true", "networkPolicy.runnerMetrics.enabled=true")
	out := kubectl(manifest, "apply", "--dry-run=server", "-f", "-")
	// The API server of testenv has the CRD installed already: it is configured, not created.
	for _, want := range []string{
		"customresourcedefinition.apiextensions.k8s.io/etlpipelines.etl.sluice.dev configured (server dry run)",
		"deployment.apps/sluice-manager created (server dry run)",
		"configmap/sluice-config created (server dry run)",
		"clusterrole.rbac.authorization.k8s.io/sluice-manager created (server dry run)",
		"role.rbac.authorization.k8s.io/sluice-leader-election created (server dry run)",
		"validatingadmissionpolicy.admissionregistration.k8s.io/sluice-runner-status created (server dry run)",
		"validatingadmissionpolicybinding.admissionregistration.k8s.io/sluice-runner-status created (server dry run)",
		"service/sluice-manager-metrics created (server dry run)",
		"networkpolicy.networking.k8s.io/sluice-runner-metrics created (server dry run)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply --dry-run=server does not say %q:\n%s", want, out)
		}
	}
	if n, want := strings.Count(out, "(server dry run)"), len(decode(t, "helm template", manifest)); n != want {
		t.Errorf("the server took %d objects, the chart rendered %d:\n%s", n, want, out)
	}
}

// TestMonitorsDecodeStrictly decodes the chart's monitors and rules into the Prometheus
// Operator's own types: an unknown or misspelt field fails.
func TestMonitorsDecodeStrictly(t *testing.T) {
	seen := map[string]bool{}
	for _, o := range decode(t, "helm template", helmTemplate(t, everythingOn...)) {
		if o.GroupVersionKind().Group != monitoringv1.SchemeGroupVersion.Group {
			continue
		}
		raw, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		var into any
		switch o.GetKind() {
		case monitoringv1.ServiceMonitorsKind:
			into = &monitoringv1.ServiceMonitor{}
		case monitoringv1.PodMonitorsKind:
			into = &monitoringv1.PodMonitor{}
		case monitoringv1.PrometheusRuleKind:
			into = &monitoringv1.PrometheusRule{}
		default:
			t.Errorf("%s: a kind of the Prometheus Operator this test does not know", key(o))
			continue
		}
		if err := yaml.UnmarshalStrict(raw, into); err != nil {
			t.Errorf("%s: %v", key(o), err)
		}
		seen[o.GetKind()] = true
	}
	if len(seen) != 3 {
		t.Errorf("decoded %v, want a ServiceMonitor, a PodMonitor and a PrometheusRule", seen)
	}
}

// TestFreshnessThresholdsAreRecorded: each value of metrics.prometheusRule.freshnessThresholds
// is one override rule in the group PipelineStale reads its threshold from.
func TestFreshnessThresholdsAreRecorded(t *testing.T) {
	out := helmTemplate(t, "metrics.prometheusRule.enabled=true",
		"metrics.prometheusRule.freshnessThresholds[0].namespace=team-a",
		"metrics.prometheusRule.freshnessThresholds[0].name=orders-nightly",
		"metrics.prometheusRule.freshnessThresholds[0].seconds=93600")
	for _, o := range decode(t, "helm template", out) {
		if o.GetKind() != monitoringv1.PrometheusRuleKind {
			continue
		}
		raw, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		var pr monitoringv1.PrometheusRule
		if err := yaml.UnmarshalStrict(raw, &pr); err != nil {
			t.Fatal(err)
		}
		g := pr.Spec.Groups[0]
		if g.Name != "sluice.freshness-thresholds" {
			t.Fatalf("the first group is %s, want sluice.freshness-thresholds", g.Name)
		}
		last := g.Rules[len(g.Rules)-1]
		if last.Record != "sluice:pipeline_freshness_threshold_seconds:override" || last.Expr.String() != "vector(93600)" ||
			last.Labels["namespace"] != "team-a" || last.Labels["name"] != "orders-nightly" {
			t.Errorf("the last rule of %s is %+v, want the override of team-a/orders-nightly at 93600", g.Name, last)
		}
		return
	}
	t.Fatal("no PrometheusRule rendered")
}
