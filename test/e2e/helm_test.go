package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/test/testenv"
)

// helmRelease is the chart's release in this spec: its objects are named sluice-helm-*, apart
// from config/default's sluice-* (cluster-scoped ones included).
const helmRelease = "sluice-helm"

// helmValues are the chart's values in this spec: the suite's database, a whitelist of the
// given tables, and the manager's endpoints off the host's ports (the node agent runs pods as
// host processes, beside the suite's manager and any `make demo` cluster).
func helmValues(tables ...string) string {
	return fmt.Sprintf(`manager:
  extraArgs:
    - --metrics-bind-address=0
    - --health-probe-bind-address=127.0.0.1:0
config:
  runner:
    image: %s
    startDeadline: 20s
  stateConnection: %s
  postgres:
    - name: %s
      dsnSecret: {name: warehouse-dsn, key: dsn}
  elasticsearch: []
  allowedTargets:
    postgresTables: [%s]
    elasticsearchIndexes: []
`, sluiceImage, connection, connection, strings.Join(tables, ", "))
}

// helmCmd runs the real helm against the suite's cluster, with helm's own directories under
// dir, and returns its stdout.
func helmCmd(dir string, args ...string) (string, error) {
	cmd := exec.Command(testenv.Helm(GinkgoT()), append([]string{"--kubeconfig", kubeconfig}, args...)...) // #nosec G204 -- the test bed's own helm
	cmd.Env = testenv.HelmEnv(dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// releaseObjects lists the objects of a release that kubectl finds by its instance label: in
// its namespace, and cluster-wide.
func releaseObjects(ns string) []string {
	GinkgoHelper()
	sel := "app.kubernetes.io/instance=" + helmRelease
	out := mustKubectl("get", "deployments,configmaps,serviceaccounts,roles,rolebindings", "-n", ns, "-l", sel, "-o", "name")
	out += mustKubectl("get", "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings", "-l", sel, "-o", "name")
	return strings.Fields(out)
}

// The suite's manager (config/default, in sluice-system) reconciles every pipeline in the
// cluster, as the chart's manager does: a manager watches all namespaces. So that only one of
// them acts, the spec scales the suite's manager to zero for its duration and back afterwards,
// once no pipeline of another spec is left. The chart is installed with --skip-crds: the CRD
// is config/default's, which Helm must not take over (nor delete).
var _ = Describe("The Helm chart on the local cluster", func() {
	It("installs the operator with helm install, runs a pipeline, applies a helm upgrade, and helm uninstall removes it", func() {
		chart := filepath.Join(testenv.RepoRoot(), "config", "helm", "sluice")
		helmDir := GinkgoT().TempDir()
		writeValues := func(name, content string) string {
			p := filepath.Join(helmDir, name)
			Expect(os.WriteFile(p, []byte(content), 0o600)).To(Succeed())
			return p
		}

		By("waiting until no pipeline of another spec is left, then scaling the suite's manager to zero")
		Eventually(func() (string, error) { return kubectl("get", "etlpipelines", "-A", "-o", "name") }).
			WithTimeout(60 * time.Second).WithPolling(500 * time.Millisecond).Should(BeEmpty())
		suiteManager := []string{"-n", operatorNamespace, "deployment/sluice-manager"}
		mustKubectl(append([]string{"scale", "--replicas=0"}, suiteManager...)...)
		DeferCleanup(func() {
			mustKubectl(append([]string{"scale", "--replicas=1"}, suiteManager...)...)
			mustKubectl(append([]string{"rollout", "status", "--timeout=120s"}, suiteManager...)...)
		})
		mustKubectl("wait", "-n", operatorNamespace, "--for=delete", "pod", "-l", "app.kubernetes.io/name=sluice,app.kubernetes.io/component=manager", "--timeout=60s")

		By("helm install into a namespace of its own, with the connection's Secret there")
		releaseNS := fmt.Sprintf("sluice-helm-%d", rand.Uint32()) // #nosec G404 -- a name, not a secret
		mustKubectl("create", "namespace", releaseNS)
		DeferCleanup(func() { _, _ = kubectl("delete", "namespace", releaseNS, "--wait=false") })
		mustKubectl("label", "namespace", releaseNS, "pod-security.kubernetes.io/enforce=restricted")
		mustKubectl("create", "secret", "generic", "warehouse-dsn", "-n", releaseNS, "--from-literal=dsn="+suiteDSN)
		_, err := helmCmd(helmDir, "install", helmRelease, chart, "-n", releaseNS, "--skip-crds", "--wait", "--timeout=2m",
			"-f", writeValues("install.yaml", helmValues("analytics.orders_helm")))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			_, _ = helmCmd(helmDir, "uninstall", helmRelease, "-n", releaseNS, "--ignore-not-found", "--wait")
		})
		Expect(releaseObjects(releaseNS)).To(ConsistOf(
			"deployment.apps/sluice-helm-manager",
			"configmap/sluice-helm-config",
			"serviceaccount/sluice-helm-manager",
			"role.rbac.authorization.k8s.io/sluice-helm-manager",
			"rolebinding.rbac.authorization.k8s.io/sluice-helm-manager",
			"role.rbac.authorization.k8s.io/sluice-helm-leader-election",
			"rolebinding.rbac.authorization.k8s.io/sluice-helm-leader-election",
			"clusterrole.rbac.authorization.k8s.io/sluice-helm-manager",
			"clusterrolebinding.rbac.authorization.k8s.io/sluice-helm-manager",
			"clusterrole.rbac.authorization.k8s.io/sluice-helm-metrics-reader",
			"validatingadmissionpolicy.admissionregistration.k8s.io/sluice-helm-runner-status",
			"validatingadmissionpolicybinding.admissionregistration.k8s.io/sluice-helm-runner-status",
			"validatingadmissionpolicy.admissionregistration.k8s.io/sluice-helm-checkpoint-requests",
			"validatingadmissionpolicybinding.admissionregistration.k8s.io/sluice-helm-checkpoint-requests",
		))

		By("a pipeline runs to Idle, its Job in the release namespace")
		ns := newNamespace()
		createOrders("orders_helm", 1000)
		apply(ns, pipelineYAML("charted", "orders_helm", 500, ""))
		p := waitIdleAndReady(ns, "charted")
		Expect(p.Status.Run.RowsWritten).To(BeEquivalentTo(1000))
		expectSame("orders_helm")
		mustKubectl("get", "job", p.Status.Run.JobName, "-n", releaseNS)

		By("helm upgrade refuses a misspelt value, naming it")
		_, err = helmCmd(helmDir, "upgrade", helmRelease, chart, "-n", releaseNS, "--reuse-values", "--set", "manger.replicas=2")
		Expect(err).To(MatchError(ContainSubstring("additional properties 'manger' not allowed")))

		By("helm upgrade whitelists a target that a pipeline was refused: it runs without a manager restart")
		createOrders("orders_helm_late", 700)
		apply(ns, pipelineYAML("charted-late", "orders_helm_late", 500, ""))
		Eventually(phaseOf(ns, "charted-late")).WithTimeout(30 * time.Second).WithPolling(poll).Should(Equal(etlv1.PhaseFailed))
		refused, err := getPipeline(ns, "charted-late")
		Expect(err).NotTo(HaveOccurred())
		expectCondition(refused, etlv1.ConditionReady, metav1.ConditionFalse, etlv1.ReasonTargetNotAllowed)
		managerPods := mustKubectl("get", "pods", "-n", releaseNS, "-l", "app.kubernetes.io/component=manager", "-o", "name")
		_, err = helmCmd(helmDir, "upgrade", helmRelease, chart, "-n", releaseNS, "--wait", "--timeout=2m",
			"-f", writeValues("upgrade.yaml", helmValues("analytics.orders_helm", "analytics.orders_helm_late")))
		Expect(err).NotTo(HaveOccurred())
		cm := &corev1.ConfigMap{}
		Expect(getJSON(cm, "configmap", helmRelease+"-config", "-n", releaseNS)).To(Succeed())
		Expect(cm.Data["config.yaml"]).To(ContainSubstring("analytics.orders_helm_late"))
		late := waitIdleAndReady(ns, "charted-late")
		Expect(late.Status.Run.Trigger).To(Equal(etlv1.TriggerConfigChanged))
		Expect(late.Status.Run.RowsWritten).To(BeEquivalentTo(700))
		expectSame("orders_helm_late")
		Expect(mustKubectl("get", "pods", "-n", releaseNS, "-l", "app.kubernetes.io/component=manager", "-o", "name")).
			To(Equal(managerPods), "the same manager pod reloaded its configuration")

		By("deleting the pipelines while the chart's manager runs, then helm uninstall")
		mustKubectl("delete", "etlpipelines", "--all", "-n", ns, "--timeout=60s")
		Eventually(func() (string, error) {
			return kubectl("get", "serviceaccounts", "-n", releaseNS, "-o", "name")
		}).WithTimeout(30*time.Second).WithPolling(poll).Should(Equal("serviceaccount/default\nserviceaccount/sluice-helm-manager\n"),
			"the runners' own accounts go with their pipelines")
		_, err = helmCmd(helmDir, "uninstall", helmRelease, "-n", releaseNS, "--wait", "--timeout=2m")
		Expect(err).NotTo(HaveOccurred())
		Expect(releaseObjects(releaseNS)).To(BeEmpty())
		mustKubectl("wait", "-n", releaseNS, "--for=delete", "pod", "-l", "app.kubernetes.io/instance="+helmRelease, "--timeout=60s")
		mustKubectl("get", "crd", "etlpipelines.etl.sluice.dev")
	})
})
