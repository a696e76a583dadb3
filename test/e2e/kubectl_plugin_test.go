package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// pluginTable is the table of the plugin's spec; the spec adds it to the operator's whitelist
// for its own duration, as the reload spec does.
const pluginTable = "orders_plugin"

// pluginPath returns a directory holding kubectl-sluice, a link to the suite's sluice binary,
// as `make build` makes bin/kubectl-sluice: the binary runs as the plugin under that name.
func pluginPath() string {
	GinkgoHelper()
	dir := GinkgoT().TempDir()
	Expect(os.Symlink(filepath.Join(runDir, "sluice"), filepath.Join(dir, "kubectl-sluice"))).To(Succeed())
	return dir
}

// kubectlSluice runs `kubectl sluice args...` with the real kubectl, which finds the plugin on
// PATH, against the suite's cluster (through KUBECONFIG: kubectl passes no flags before a
// plugin's name on to it). It returns stdout, stderr and the exit code.
func kubectlSluice(plugins string, args ...string) (string, string, int) {
	GinkgoHelper()
	cmd := exec.Command(kubectlPath, append([]string{"sluice"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "PATH="+plugins+string(os.PathListSeparator)+os.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if exit, ok := err.(*exec.ExitError); ok {
		code = exit.ExitCode()
	} else {
		Expect(err).NotTo(HaveOccurred())
	}
	return stdout.String(), stderr.String(), code
}

// whitelistForSpec adds analytics.<table> to the operator's ConfigMap until the spec ends.
func whitelistForSpec(table string) {
	GinkgoHelper()
	editConfigForSpec(func(config string) string {
		return strings.Replace(config, "postgresTables: [", "postgresTables: [analytics."+table+", ", 1)
	})
}

// editConfigForSpec changes the operator's configuration (config.yaml of its ConfigMap) with
// edit until the spec ends, and waits for the manager to reload it: a pipeline applied before
// the reload would be refused first, then run again with trigger ConfigChanged.
func editConfigForSpec(edit func(string) string) {
	GinkgoHelper()
	cm := &corev1.ConfigMap{}
	Expect(getJSON(cm, "configmap", "sluice-config", "-n", operatorNamespace)).To(Succeed())
	original := cm.Data["config.yaml"]
	Expect(original).To(ContainSubstring("postgresTables: ["))
	changed := edit(original)
	Expect(changed).NotTo(Equal(original))
	patch := func(config string) string {
		js, err := json.Marshal(map[string]any{"data": map[string]string{"config.yaml": config}})
		Expect(err).NotTo(HaveOccurred())
		return string(js)
	}
	DeferCleanup(func() {
		_, _ = kubectl("patch", "configmap", "sluice-config", "-n", operatorNamespace, "--type", "merge", "-p", patch(original))
	})
	reloads := configReloads()
	mustKubectl("patch", "configmap", "sluice-config", "-n", operatorNamespace, "--type", "merge", "-p", patch(changed))
	Eventually(configReloads).WithTimeout(30*time.Second).WithPolling(200*time.Millisecond).
		Should(BeNumerically(">", reloads), "the manager reloads its configuration")
}

var _ = Describe("The kubectl sluice plugin", func() {
	It("shows with the real kubectl sluice status a pipeline made here, and pauses and resumes it", func() {
		ns := newNamespace()
		plugins := pluginPath()
		createOrders(pluginTable, 3000)
		whitelistForSpec(pluginTable)
		apply(ns, pipelineYAML("plugged", pluginTable, 1000, ""))
		first := waitIdleAndReady(ns, "plugged")

		By("kubectl sluice status: the namespace's table")
		stdout, stderr, code := kubectlSluice(plugins, "status", "-n", ns)
		Expect(code).To(BeZero(), stderr)
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		Expect(lines).To(HaveLen(2), stdout)
		Expect(lines[0]).To(MatchRegexp(`^NAME\s+PHASE\s+DESIRED\s+LAST RUN\s+ROWS\s+FRESHNESS\s+NEXT RUN$`))
		Expect(lines[1]).To(MatchRegexp(`^plugged\s+Idle\s+Running\s+Succeeded \(\d+s ago\)\s+3000\s+\d+s\s+<none>$`))

		By("kubectl sluice status NAME: the report, with the runner's last log lines")
		stdout, stderr, code = kubectlSluice(plugins, "status", "plugged", "-n", ns)
		Expect(code).To(BeZero(), stderr)
		Expect(stdout).To(And(
			ContainSubstring("ID:           "+first.Status.Run.ID),
			ContainSubstring("Rows:         read 3000, written 3000, deleted 0 in 3 batches"),
			ContainSubstring("Job:          "+first.Status.Run.JobName),
			MatchRegexp(`Runner log \(pod `+operatorNamespace+`/`+first.Status.Run.JobName+`-\w+, last [1-9]\d* lines\):`),
		))

		By("kubectl sluice pause: Paused")
		stdout, stderr, code = kubectlSluice(plugins, "pause", "plugged", "-n", ns)
		Expect(code).To(BeZero(), stderr)
		Expect(stdout).To(ContainSubstring("spec.desiredState Running -> Paused"))
		Expect(stderr).To(BeEmpty(), "no Argo CD warning for a pipeline Argo CD does not track")
		Eventually(phaseOf(ns, "plugged")).WithTimeout(30 * time.Second).WithPolling(poll).Should(Equal(etlv1.PhasePaused))

		By("kubectl sluice resume: a Resume run, then Idle")
		_, stderr, code = kubectlSluice(plugins, "resume", "plugged", "-n", ns)
		Expect(code).To(BeZero(), stderr)
		p := waitIdleAndReady(ns, "plugged")
		Expect(p.Status.Run.ID).NotTo(Equal(first.Status.Run.ID))
		Expect(p.Status.Run.Trigger).To(Equal(etlv1.TriggerResume))

		By("kubectl sluice status -A -o json, for scripts; a pipeline that does not exist exits 1")
		stdout, stderr, code = kubectlSluice(plugins, "status", "-A", "-o", "json")
		Expect(code).To(BeZero(), stderr)
		var list etlv1.ETLPipelineList
		Expect(json.Unmarshal([]byte(stdout), &list)).To(Succeed())
		Expect(list.Items).To(ContainElement(And(HaveField("Namespace", ns), HaveField("Name", "plugged"),
			HaveField("Status.Phase", etlv1.PhaseIdle))))
		_, stderr, code = kubectlSluice(plugins, "status", "missing", "-n", ns)
		Expect(code).To(Equal(1))
		Expect(stderr).To(Equal(fmt.Sprintf("error: ETLPipeline %q not found in namespace %q\n", "missing", ns)))
	})
})
