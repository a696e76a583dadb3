package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/test/testenv"
)

const (
	// runTimeout bounds one run of a few hundred thousand rows, a Job controller's pod
	// replacement (its backoff starts at 10 s) included.
	runTimeout = 120 * time.Second
	poll       = 100 * time.Millisecond
)

// pipelineYAML is an incremental legacy-mode pipeline from public.<table> into
// analytics.<table>, keyed by id and resumed after updated_at.
func pipelineYAML(name, table string, batchSize int, extra string) string {
	return fmt.Sprintf(`apiVersion: etl.sluice.dev/v1alpha1
kind: ETLPipeline
metadata:
  name: %s
spec:
  mode: Incremental
  source:
    connection: %s
    query: %s
    cursor:
      column: updated_at
      keyColumns: [id]
  target:
    name: analytics.%s
  batchSize: %d
%s`, name, connection, strconv.Quote(sourceOf(table)), table, batchSize, extra)
}

// phaseRecorder keeps every phase `kubectl get --watch` reports for a pipeline, without
// consecutive repeats: the transitions as the API server saw them.
type phaseRecorder struct {
	mu     sync.Mutex
	phases []etlv1.Phase
}

func (r *phaseRecorder) seen() []etlv1.Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.phases)
}

// recordPhases watches a pipeline with the real kubectl until the spec ends.
func recordPhases(ns, name string) *phaseRecorder {
	GinkgoHelper()
	r := &phaseRecorder{}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, kubectlPath, "--kubeconfig", kubeconfig, "get", "etlpipeline", name, "-n", ns, // #nosec G204 -- the suite's own kubectl
		"--watch", "-o", `jsonpath={.status.phase}{"\n"}`)
	out, err := cmd.StdoutPipe()
	Expect(err).NotTo(HaveOccurred())
	Expect(cmd.Start()).To(Succeed())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			ph := etlv1.Phase(strings.TrimSpace(sc.Text()))
			r.mu.Lock()
			if ph != "" && (len(r.phases) == 0 || r.phases[len(r.phases)-1] != ph) {
				r.phases = append(r.phases, ph)
			}
			r.mu.Unlock()
		}
	}()
	DeferCleanup(func() {
		cancel()
		<-done
		_ = cmd.Wait()
	})
	return r
}

// inOrder reports whether want occurs in seen in this order (not necessarily adjacent).
func inOrder(seen []etlv1.Phase, want ...etlv1.Phase) bool {
	i := 0
	for _, p := range seen {
		if i < len(want) && p == want[i] {
			i++
		}
	}
	return i == len(want)
}

// condition returns a condition of the pipeline, or nil.
func condition(p *etlv1.ETLPipeline, t string) *metav1.Condition {
	return meta.FindStatusCondition(p.Status.Conditions, t)
}

// expectCondition asserts a condition's status and reason, and that it is up to date.
func expectCondition(p *etlv1.ETLPipeline, t string, status metav1.ConditionStatus, reason string) {
	GinkgoHelper()
	c := condition(p, t)
	Expect(c).NotTo(BeNil(), "condition %s in %+v", t, p.Status.Conditions)
	Expect(c.Status).To(Equal(status), "condition %s: %+v", t, c)
	Expect(c.Reason).To(Equal(reason), "condition %s: %+v", t, c)
	Expect(c.ObservedGeneration).To(Equal(p.Generation), "condition %s: %+v", t, c)
}

// expectAtRest asserts the status of a pipeline whose last run completed: Idle, Ready=True
// Succeeded, the target allowed, neither Reconciling nor Stalled.
func expectAtRest(p *etlv1.ETLPipeline) {
	GinkgoHelper()
	Expect(p.Status.Phase).To(Equal(etlv1.PhaseIdle))
	Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
	expectCondition(p, etlv1.ConditionReady, metav1.ConditionTrue, etlv1.ReasonSucceeded)
	expectCondition(p, etlv1.ConditionTargetAllowed, metav1.ConditionTrue, etlv1.ReasonTargetAllowed)
	Expect(condition(p, etlv1.ConditionReconciling)).To(BeNil())
	Expect(condition(p, etlv1.ConditionStalled)).To(BeNil())
	Expect(p.Status.Run).NotTo(BeNil())
	Expect(p.Status.Run.CompletionTime).NotTo(BeNil())
	Expect(p.Status.Run.ErrorClass).To(BeEmpty())
}

// waitIdleAndReady waits with the real kubectl for phase Idle, then for Ready.
func waitIdleAndReady(ns, name string) *etlv1.ETLPipeline {
	GinkgoHelper()
	mustKubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Idle", fmt.Sprintf("--timeout=%s", runTimeout), "etlpipeline/"+name)
	mustKubectl("wait", "-n", ns, "--for=condition=Ready", "--timeout=30s", "etlpipeline/"+name)
	var p *etlv1.ETLPipeline
	// The manager derives the conditions from the runner's final phase in its next pass.
	Eventually(func(g Gomega) {
		var err error
		p, err = getPipeline(ns, name)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(condition(p, etlv1.ConditionReconciling)).To(BeNil())
	}).WithTimeout(30 * time.Second).WithPolling(poll).Should(Succeed())
	expectAtRest(p)
	return p
}

// sqlLiteral quotes a string as an SQL literal (test data only).
func sqlLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// expectCheckpointAtSinkEnd asserts that the checkpoint (updated_at, id) is the last row of
// the sink (updated_at grows with id in the suite's data), and that the sink holds exactly the
// source rows up to it: whole batches, nothing lost, nothing ahead.
func expectCheckpointAtSinkEnd(table string, cp *etlv1.CheckpointStatus) {
	GinkgoHelper()
	Expect(cp).NotTo(BeNil())
	Expect(cp.Values).To(HaveLen(2), "checkpoint (updated_at, id)")
	sink := pgx.Identifier{"analytics", table}.Sanitize()
	at, err := queryInt(fmt.Sprintf(`SELECT count(*) FROM %s
		WHERE updated_at = $1::timestamptz AND id = $2::bigint
		  AND id = (SELECT max(id) FROM %[1]s) AND updated_at = (SELECT max(updated_at) FROM %[1]s)`, sink),
		cp.Values[0], cp.Values[1])
	Expect(err).NotTo(HaveOccurred())
	Expect(at).To(BeEquivalentTo(1), "the checkpoint %v is the sink's last row", cp.Values)
	upTo := sourceOf(table) + fmt.Sprintf(" WHERE (updated_at, id) <= (%s::timestamptz, %s::bigint)",
		sqlLiteral(cp.Values[0]), sqlLiteral(cp.Values[1]))
	d, err := compare(upTo, sink)
	Expect(err).NotTo(HaveOccurred())
	Expect(d).To(Equal(rowDiff{Source: d.Source, Sink: d.Source}), "sink vs source up to the checkpoint")
}

// runnerPods returns the pods of a runner Job.
func runnerPods(job string) []corev1.Pod { return podsOf(operatorNamespace, job) }

// waitRunning waits until a runner claimed the pipeline's run and returns the pipeline then.
func waitRunning(ns, name string) *etlv1.ETLPipeline {
	GinkgoHelper()
	var p *etlv1.ETLPipeline
	Eventually(func(g Gomega) {
		var err error
		p, err = getPipeline(ns, name)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(p.Status.Phase).To(Equal(etlv1.PhaseRunning))
	}).WithTimeout(60 * time.Second).WithPolling(poll).Should(Succeed())
	return p
}

// runnerProcess returns the one running pod of a runner Job and the process that plays it,
// found through the node agent's pid file and checked by its environment.
func runnerProcess(job string) (corev1.Pod, int) {
	GinkgoHelper()
	pods := runnerPods(job)
	Expect(pods).To(HaveLen(1))
	pod := pods[0]
	Expect(pod.Status.Phase).To(Equal(corev1.PodRunning))
	dir := filepath.Join(runDir, "cluster", "nodeagent", "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID))
	raw, err := os.ReadFile(filepath.Join(dir, "pid")) // #nosec G304 -- the suite's own node agent directory
	Expect(err).NotTo(HaveOccurred())
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	Expect(err).NotTo(HaveOccurred())
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	Expect(err).NotTo(HaveOccurred())
	Expect(strings.Split(string(environ), "\x00")).To(ContainElement("SLUICE_TERMINATION_LOG="+filepath.Join(dir, "termination-log")),
		"pid %d plays pod %s", pid, pod.Name)
	return pod, pid
}

// dumpIfFailed writes, after a failed spec, the namespace's pipelines, the operator's Jobs and
// pods and the manager's log, then what the extra kubectl commands print.
func dumpIfFailed(ns string, extra ...[]string) {
	if !CurrentSpecReport().Failed() {
		return
	}
	for _, args := range append([][]string{
		{"get", "etlpipelines", "-n", ns, "-o", "yaml"},
		{"get", "jobs,pods", "-n", operatorNamespace, "-o", "wide"},
		{"logs", "-n", operatorNamespace, "deployment/sluice-manager", "--tail=100"},
	}, extra...) {
		out, err := kubectl(args...)
		_, _ = fmt.Fprintf(GinkgoWriter, "--- kubectl %s\n%s%v\n", strings.Join(args, " "), out, err)
	}
}

var _ = Describe("ETLPipelines on the local cluster", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	JustAfterEach(func() { dumpIfFailed(ns) })

	It("runs the legacy sample into analytics.orders: Idle, Ready, the sink equal to the source query", func() {
		// The sample runs every quarter hour too; keep a tick out of the spec.
		if left := time.Until(time.Now().Truncate(15 * time.Minute).Add(15 * time.Minute)); left < 45*time.Second {
			By(fmt.Sprintf("waiting %s for the sample's quarter-hour tick to pass", left.Round(time.Second)))
			time.Sleep(left + 2*time.Second)
		}
		createOrders("orders", 100000)
		sample := filepath.Join(testenv.RepoRoot(), "config", "samples", "legacy_to_postgres.yaml")
		mustKubectl("apply", "-n", ns, "-f", sample)
		phases := recordPhases(ns, "orders-to-analytics")

		p := waitIdleAndReady(ns, "orders-to-analytics")
		Expect(p.Status.Run.Trigger).To(Equal(etlv1.TriggerCreated))
		Expect(p.Status.Run.RowsRead).To(BeEquivalentTo(100000))
		Expect(p.Status.Run.RowsWritten).To(BeEquivalentTo(100000))
		Expect(p.Status.Run.Batches).To(BeEquivalentTo(20), "batchSize 5000")
		Expect(p.Status.NextScheduledRun).NotTo(BeNil())
		expectSame("orders")
		expectCheckpointAtSinkEnd("orders", p.Status.Checkpoint)
		Eventually(phases.seen).WithTimeout(10 * time.Second).Should(
			Satisfy(func(s []etlv1.Phase) bool { return inOrder(s, etlv1.PhaseRunning, etlv1.PhaseIdle) }))
		Expect(phases.seen()).NotTo(ContainElement(etlv1.PhaseFailed))

		mustKubectl("wait", "-n", operatorNamespace, "--for=condition=Complete", "--timeout=30s", "job/"+p.Status.Run.JobName)
		Expect(mustKubectl("get", "etlp", "-n", ns, "orders-to-analytics", "--no-headers")).To(
			MatchRegexp(`^orders-to-analytics\s+Idle\s+Running\s+Incremental\s+analytics\.orders\s+100000\s`))
	})

	It("pauses between batches, keeps the checkpoint equal to the sink, and resumes from it", func() {
		const rows = 600000
		createOrders("orders_paused", rows)
		apply(ns, pipelineYAML("paused", "orders_paused", 1000, ""))
		phases := recordPhases(ns, "paused")
		// The pause is asked for as soon as the first batch is in the sink: it takes effect at
		// the runner's next look at the pipeline, a second later, in the middle of the run.
		// (Asked right at the claim, a loaded machine may pause the run before its first batch.)
		Eventually(phaseOf(ns, "paused")).WithTimeout(60 * time.Second).WithPolling(poll).Should(Equal(etlv1.PhaseRunning))
		Eventually(func() (int64, error) { return queryInt("SELECT count(*) FROM analytics.orders_paused") }).
			WithTimeout(60 * time.Second).WithPolling(20 * time.Millisecond).Should(BeNumerically(">", 0))

		By("kubectl patch desiredState Paused mid-run")
		mustKubectl("patch", "etlp", "paused", "-n", ns, "--type", "merge", "-p", `{"spec":{"desiredState":"Paused"}}`)
		Eventually(phaseOf(ns, "paused")).WithTimeout(60 * time.Second).WithPolling(poll).Should(Equal(etlv1.PhasePaused))
		Eventually(phases.seen).WithTimeout(10*time.Second).Should(Satisfy(func(s []etlv1.Phase) bool {
			return inOrder(s, etlv1.PhaseRunning, etlv1.PhasePauseRequested, etlv1.PhasePaused)
		}), "the manager asks, the runner stops")
		mustKubectl("wait", "-n", ns, "--for=condition=Ready", "--timeout=30s", "etlpipeline/paused")

		paused, err := getPipeline(ns, "paused")
		Expect(err).NotTo(HaveOccurred())
		expectCondition(paused, etlv1.ConditionReady, metav1.ConditionTrue, etlv1.ReasonPaused)
		Expect(paused.Status.Run.CompletionTime).NotTo(BeNil())
		mustKubectl("wait", "-n", operatorNamespace, "--for=condition=Complete", "--timeout=60s", "job/"+paused.Status.Run.JobName)

		sinkRows, err := queryInt("SELECT count(*) FROM analytics.orders_paused")
		Expect(err).NotTo(HaveOccurred())
		_, _ = fmt.Fprintf(GinkgoWriter, "paused after %d of %d rows\n", sinkRows, rows)
		Expect(sinkRows).To(BeNumerically("<", rows), "paused before the end")
		Expect(sinkRows%1000).To(BeZero(), "whole batches only")
		Expect(paused.Status.Run.RowsWritten).To(Equal(sinkRows))
		expectCheckpointAtSinkEnd("orders_paused", paused.Status.Checkpoint)
		Consistently(func() (int64, error) { return queryInt("SELECT count(*) FROM analytics.orders_paused") }).
			WithTimeout(2*time.Second).WithPolling(200*time.Millisecond).Should(Equal(sinkRows), "nothing moves while paused")

		By("kubectl patch desiredState Running")
		mustKubectl("patch", "etlp", "paused", "-n", ns, "--type", "merge", "-p", `{"spec":{"desiredState":"Running"}}`)
		p := waitIdleAndReady(ns, "paused")
		Expect(p.Status.Run.ID).NotTo(Equal(paused.Status.Run.ID))
		Expect(p.Status.Run.Trigger).To(Equal(etlv1.TriggerResume))
		Expect(p.Status.Run.RowsRead).To(Equal(rows-sinkRows), "the resumed run reads only what follows the checkpoint")
		expectSame("orders_paused")
		expectCheckpointAtSinkEnd("orders_paused", p.Status.Checkpoint)
	})

	It("resumes a paused Full run from its checkpoint, and a re-created pipeline reads its source from the start", func() {
		const rows = 600000
		createOrders("orders_full", rows)
		full := strings.Replace(pipelineYAML("backfill", "orders_full", 1000, ""), "mode: Incremental", "mode: Full", 1)
		apply(ns, full)
		Eventually(phaseOf(ns, "backfill")).WithTimeout(60 * time.Second).WithPolling(poll).Should(Equal(etlv1.PhaseRunning))
		// As in the Incremental spec: paused once its first batch is in the sink, so that the
		// pause lands mid-backfill (asked right at the claim, a loaded machine may pause the run
		// before its first batch, and leave no checkpoint to resume).
		Eventually(func() (int64, error) { return queryInt("SELECT count(*) FROM analytics.orders_full") }).
			WithTimeout(60 * time.Second).WithPolling(20 * time.Millisecond).Should(BeNumerically(">", 0))
		By("kubectl patch desiredState Paused mid-backfill")
		mustKubectl("patch", "etlp", "backfill", "-n", ns, "--type", "merge", "-p", `{"spec":{"desiredState":"Paused"}}`)
		Eventually(phaseOf(ns, "backfill")).WithTimeout(60 * time.Second).WithPolling(poll).Should(Equal(etlv1.PhasePaused))
		paused, err := getPipeline(ns, "backfill")
		Expect(err).NotTo(HaveOccurred())
		sinkRows, err := queryInt("SELECT count(*) FROM analytics.orders_full")
		Expect(err).NotTo(HaveOccurred())
		_, _ = fmt.Fprintf(GinkgoWriter, "backfill paused after %d of %d rows\n", sinkRows, rows)
		Expect(sinkRows).To(BeNumerically("<", rows), "paused before the end")
		Expect(paused.Status.Checkpoint).NotTo(BeNil())

		By("kubectl patch desiredState Running: the generation moved, the backfill continues")
		mustKubectl("patch", "etlp", "backfill", "-n", ns, "--type", "merge", "-p", `{"spec":{"desiredState":"Running"}}`)
		p := waitIdleAndReady(ns, "backfill")
		Expect(p.Generation).To(BeEquivalentTo(3))
		Expect(p.Status.Run.Trigger).To(Equal(etlv1.TriggerResume))
		Expect(p.Status.Run.RowsRead).To(Equal(rows-sinkRows), "the resumed backfill reads only what follows its checkpoint")
		expectSame("orders_full")

		By("an Incremental pipeline, deleted and created again under the same name into an emptied table")
		incremental := pipelineYAML("recreated", "orders_full", 5000, "")
		apply(ns, incremental)
		first := waitIdleAndReady(ns, "recreated")
		Expect(first.Status.Run.RowsRead).To(BeEquivalentTo(rows))
		mustKubectl("delete", "etlp", "recreated", "-n", ns, "--timeout=60s")
		left, err := queryInt(`SELECT (SELECT count(*) FROM etl.etl_state WHERE namespace = $1 AND name = 'recreated')
			+ (SELECT count(*) FROM etl.etl_runs WHERE namespace = $1 AND name = 'recreated')`, ns)
		Expect(err).NotTo(HaveOccurred())
		Expect(left).To(BeZero(), "the deleted pipeline's state rows are gone")
		execSQL("TRUNCATE analytics.orders_full")
		apply(ns, incremental)
		second := waitIdleAndReady(ns, "recreated")
		Expect(second.UID).NotTo(Equal(first.UID))
		Expect(second.Status.Run.RowsRead).To(BeEquivalentTo(rows), "the new pipeline starts from an empty checkpoint")
		expectSame("orders_full")
	})

	It("carries a run on in a replacement pod after its runner process is killed, and the sink is exact", func() {
		const rows = 600000
		createOrders("orders_crashed", rows)
		apply(ns, pipelineYAML("crashed", "orders_crashed", 1000, ""))
		// Killed as soon as the run is claimed: a run of 600,000 rows takes a few seconds,
		// waiting for a progress report could find it over.
		before := waitRunning(ns, "crashed")
		job := before.Status.Run.JobName

		By("SIGKILL of the runner's process group, found through the node agent's pid file")
		pod, pid := runnerProcess(job)
		Expect(syscall.Kill(-pid, syscall.SIGKILL)).To(Succeed())
		_, _ = fmt.Fprintf(GinkgoWriter, "killed pid %d after at least %d of %d rows\n", pid, before.Status.Run.RowsWritten, rows)

		Eventually(podPhase(operatorNamespace, pod.Name)).WithTimeout(30 * time.Second).Should(Equal(corev1.PodFailed))
		killed, err := getPod(operatorNamespace, pod.Name)
		Expect(err).NotTo(HaveOccurred())
		Expect(terminated(killed)).NotTo(BeNil())
		Expect(terminated(killed).ExitCode).To(BeEquivalentTo(137))

		p := waitIdleAndReady(ns, "crashed")
		Expect(p.Status.Run.ID).To(Equal(before.Status.Run.ID), "the replacement pod carried the same run on")
		Expect(p.Status.Run.RowsWritten).To(BeEquivalentTo(rows))
		expectSame("orders_crashed")
		expectCheckpointAtSinkEnd("orders_crashed", p.Status.Checkpoint)

		var j batchv1.Job
		Expect(getJSON(&j, "job", job, "-n", operatorNamespace)).To(Succeed())
		Expect(j.Status.Failed).To(BeEquivalentTo(1))
		Expect(j.Status.Succeeded).To(BeEquivalentTo(1))
		Expect(j.Status.Conditions).To(ContainElement(HaveField("Type", batchv1.JobComplete)))
		Expect(runnerPods(job)).To(HaveLen(2), "the killed pod and its replacement")
	})

	It("carries a run on after its runner is stopped with its connections open and its pod deleted, as a lost node", func() {
		const rows = 600000
		createOrders("orders_stopped", rows)
		apply(ns, pipelineYAML("stopped", "orders_stopped", 1000, ""))
		before := waitRunning(ns, "stopped")
		pod, pid := runnerProcess(before.Status.Run.JobName)

		By("SIGSTOP of the runner's process group, then kubectl delete pod")
		Expect(syscall.Kill(-pid, syscall.SIGSTOP)).To(Succeed())
		DeferCleanup(func() { _ = syscall.Kill(-pid, syscall.SIGCONT) })
		mustKubectl("delete", "pod", pod.Name, "-n", operatorNamespace, "--grace-period=1", "--wait=false")

		p := waitIdleAndReady(ns, "stopped")
		Expect(p.Status.Run.ID).To(Equal(before.Status.Run.ID), "the replacement pod carried the same run on")
		Expect(p.Status.Run.RowsWritten).To(BeEquivalentTo(rows))
		expectSame("orders_stopped")
	})

	It("fails a pipeline whose target is not whitelisted, with no Job, and refuses invalid specs at apply", func() {
		apply(ns, strings.Replace(pipelineYAML("forbidden", "orders", 1000, ""), "analytics.orders", "analytics.forbidden", 1))
		mustKubectl("wait", "-n", ns, "--for=condition=Stalled", "--timeout=30s", "etlpipeline/forbidden")
		Eventually(phaseOf(ns, "forbidden")).WithTimeout(30 * time.Second).WithPolling(poll).Should(Equal(etlv1.PhaseFailed))
		p, err := getPipeline(ns, "forbidden")
		Expect(err).NotTo(HaveOccurred())
		expectCondition(p, etlv1.ConditionReady, metav1.ConditionFalse, etlv1.ReasonTargetNotAllowed)
		expectCondition(p, etlv1.ConditionStalled, metav1.ConditionTrue, etlv1.ReasonTargetNotAllowed)
		expectCondition(p, etlv1.ConditionTargetAllowed, metav1.ConditionFalse, etlv1.ReasonTargetNotAllowed)
		Expect(condition(p, etlv1.ConditionReady).Message).To(ContainSubstring("analytics.forbidden"))
		Expect(p.Status.Run).To(BeNil())
		Consistently(func() (string, error) {
			return kubectl("get", "jobs", "-n", operatorNamespace, "-l", etlv1.LabelPipelineNamespace+"="+ns, "-o", "name")
		}).WithTimeout(3*time.Second).WithPolling(500*time.Millisecond).Should(BeEmpty(), "no runner Job")

		valid := pipelineYAML("invalid", "orders", 1000, "")
		for _, tc := range []struct{ manifest, field string }{
			{strings.Replace(valid, "batchSize: 1000", "batchSize: 0", 1), "spec.batchSize"},
			{strings.Replace(valid, "name: analytics.orders", "name: public.orders", 1), "spec.target.name"},
			{strings.Replace(valid, "      column: updated_at\n", "", 1), "spec.source.cursor.column"},
			{valid + "  desiredState: Stopped\n", "spec.desiredState"},
			{valid + "  schedule: every five minutes\n", "spec.schedule"},
		} {
			_, err := kubectlIn(tc.manifest, "apply", "-n", ns, "-f", "-")
			Expect(err).To(MatchError(ContainSubstring(tc.field)), "manifest:\n%s", tc.manifest)
		}
		_, err = kubectl("get", "etlpipeline", "invalid", "-n", ns)
		Expect(err).To(MatchError(ContainSubstring("NotFound")))
	})

	It("runs a pipeline that was refused its target once the ConfigMap whitelists it, without a manager restart", func() {
		createOrders("orders_reload", 2000)
		apply(ns, pipelineYAML("reload", "orders_reload", 1000, ""))
		Eventually(phaseOf(ns, "reload")).WithTimeout(30 * time.Second).WithPolling(poll).Should(Equal(etlv1.PhaseFailed))
		p, err := getPipeline(ns, "reload")
		Expect(err).NotTo(HaveOccurred())
		expectCondition(p, etlv1.ConditionReady, metav1.ConditionFalse, etlv1.ReasonTargetNotAllowed)

		By("adding analytics.orders_reload to allowedTargets in the operator's ConfigMap")
		cm := &corev1.ConfigMap{}
		Expect(getJSON(cm, "configmap", "sluice-config", "-n", operatorNamespace)).To(Succeed())
		original := cm.Data["config.yaml"]
		DeferCleanup(func() {
			cm.Data["config.yaml"] = original
			js, _ := json.Marshal(map[string]any{"data": cm.Data})
			_, _ = kubectl("patch", "configmap", "sluice-config", "-n", operatorNamespace, "--type", "merge", "-p", string(js))
		})
		Expect(original).To(ContainSubstring("postgresTables: ["))
		cm.Data["config.yaml"] = strings.Replace(original, "postgresTables: [", "postgresTables: [analytics.orders_reload, ", 1)
		js, err := json.Marshal(map[string]any{"data": cm.Data})
		Expect(err).NotTo(HaveOccurred())
		mustKubectl("patch", "configmap", "sluice-config", "-n", operatorNamespace, "--type", "merge", "-p", string(js))

		p = waitIdleAndReady(ns, "reload")
		Expect(p.Status.Run.Trigger).To(Equal(etlv1.TriggerConfigChanged))
		Expect(p.Status.Run.RowsRead).To(BeEquivalentTo(2000))
		expectSame("orders_reload")
	})

	It("fails a run whose runner cannot start (a missing Secret) with RunnerNotStarted, then runs once the Secret exists", func() {
		createOrders("orders_late", 1000)
		manifest := strings.Replace(pipelineYAML("late", "orders_late", 500, ""), "connection: "+connection, "connection: late", 1)
		manifest = strings.Replace(manifest, "  target:\n    name: analytics.orders_late", "  target:\n    name: analytics.orders_late\n    connection: "+connection, 1)
		apply(ns, manifest)
		Eventually(func(g Gomega) {
			p, err := getPipeline(ns, "late")
			g.Expect(err).NotTo(HaveOccurred())
			c := condition(p, etlv1.ConditionRunnerStarted)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal("CreateContainerConfigError"))
			g.Expect(c.Message).To(ContainSubstring("late-dsn"))
		}).WithTimeout(30*time.Second).WithPolling(poll).Should(Succeed(), "the pod's reason shows before the deadline")
		mustKubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Failed", "--timeout=60s", "etlpipeline/late")
		p, err := getPipeline(ns, "late")
		Expect(err).NotTo(HaveOccurred())
		expectCondition(p, etlv1.ConditionReady, metav1.ConditionFalse, etlv1.ReasonRunnerNotStarted)
		Expect(condition(p, etlv1.ConditionReady).Message).To(ContainSubstring("late-dsn"))
		Expect(p.Status.Run.ErrorClass).To(Equal(etlv1.ErrorInfra))

		By("creating the Secret and requesting a run")
		mustKubectl("create", "secret", "generic", "late-dsn", "-n", operatorNamespace, "--from-literal=dsn="+suiteDSN)
		DeferCleanup(func() { _, _ = kubectl("delete", "secret", "late-dsn", "-n", operatorNamespace) })
		mustKubectl("annotate", "etlp", "late", "-n", ns, etlv1.AnnotationRunRequestedAt+"=secret-created", "--overwrite")
		p = waitIdleAndReady(ns, "late")
		Expect(p.Status.Run.RowsRead).To(BeEquivalentTo(1000))
		expectSame("orders_late")
	})

	It("runs a scheduled pipeline again on its own once its database is back after a failed tick", func() {
		createOrders("orders_flaky", 1000)
		down, err := url.Parse(suiteDSN)
		Expect(err).NotTo(HaveOccurred())
		down.Host = "127.0.0.1:1"
		mustKubectl("create", "secret", "generic", "flaky-dsn", "-n", operatorNamespace, "--from-literal=dsn="+down.String())
		DeferCleanup(func() { _, _ = kubectl("delete", "secret", "flaky-dsn", "-n", operatorNamespace) })
		manifest := strings.Replace(pipelineYAML("flaky", "orders_flaky", 500, "  schedule: \"@every 5s\"\n  retry:\n    attempts: 0\n"),
			"connection: "+connection, "connection: flaky", 1)
		manifest = strings.Replace(manifest, "  target:\n    name: analytics.orders_flaky", "  target:\n    name: analytics.orders_flaky\n    connection: "+connection, 1)
		apply(ns, manifest)
		mustKubectl("wait", "-n", ns, "--for=jsonpath={.status.phase}=Failed", "--timeout=60s", "etlpipeline/flaky")
		p, err := getPipeline(ns, "flaky")
		Expect(err).NotTo(HaveOccurred())
		Expect(p.Status.Run.ErrorClass).To(Equal(etlv1.ErrorInfra))
		Expect(p.Status.ConsecutiveFailures).To(BeNumerically(">=", 1))
		Expect(p.Status.NextScheduledRun).NotTo(BeNil(), "an infrastructure failure keeps the schedule")

		By("the database comes back: the Secret holds the working DSN")
		_, err = kubectlIn(mustKubectl("create", "secret", "generic", "flaky-dsn", "-n", operatorNamespace, "--from-literal=dsn="+suiteDSN,
			"--dry-run=client", "-o", "yaml"), "apply", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			p, err := getPipeline(ns, "flaky")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Status.Phase).To(Equal(etlv1.PhaseIdle))
			g.Expect(p.Status.Run.Trigger).To(Equal(etlv1.TriggerSchedule))
			g.Expect(p.Status.ConsecutiveFailures).To(BeZero())
		}).WithTimeout(runTimeout).WithPolling(poll).Should(Succeed(), "a later tick ran without anyone asking")
		expectSame("orders_flaky")
	})

	It("moves inserted and updated rows on a run request, then on its schedule", func() {
		createOrders("orders_followed", 2000)
		apply(ns, pipelineYAML("followed", "orders_followed", 500, ""))
		first := waitIdleAndReady(ns, "followed")
		Expect(first.Status.Run.RowsRead).To(BeEquivalentTo(2000))
		expectSame("orders_followed")

		change := func(from, to int) {
			execSQL(fmt.Sprintf(`UPDATE public.orders_followed SET status = 'refunded', updated_at = clock_timestamp()
				WHERE id %% 100 = 0 AND id <= %d;
				INSERT INTO public.orders_followed
				SELECT i, 1, 'new', i, clock_timestamp() FROM generate_series(%d, %d) AS i`, from, from, to))
		}
		By("kubectl annotate run-requested-at after 20 updates and 100 inserts")
		change(2001, 2100)
		stamp := time.Now().UTC().Format(time.RFC3339Nano)
		mustKubectl("annotate", "--overwrite", "etlp", "followed", "-n", ns, etlv1.AnnotationRunRequestedAt+"="+stamp)
		Eventually(func(g Gomega) {
			p, err := getPipeline(ns, "followed")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Status.LastHandledRunRequest).To(Equal(stamp))
			g.Expect(p.Status.Run.Trigger).To(Equal(etlv1.TriggerAnnotation))
			g.Expect(p.Status.Phase).To(Equal(etlv1.PhaseIdle))
		}).WithTimeout(runTimeout).WithPolling(poll).Should(Succeed())
		p := waitIdleAndReady(ns, "followed")
		Expect(p.Status.Run.RowsRead).To(BeEquivalentTo(120), "only the changed rows")
		expectSame("orders_followed")

		By(`schedule "@every 5s"`)
		mustKubectl("patch", "etlp", "followed", "-n", ns, "--type", "merge", "-p", `{"spec":{"schedule":"@every 5s"}}`)
		Eventually(func(g Gomega) {
			p, err := getPipeline(ns, "followed")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Status.ObservedGeneration).To(Equal(p.Generation))
			g.Expect(p.Status.Run.Generation).To(Equal(p.Generation))
			g.Expect(p.Status.Phase).To(Equal(etlv1.PhaseIdle))
			g.Expect(p.Status.NextScheduledRun).NotTo(BeNil())
		}).WithTimeout(runTimeout).WithPolling(poll).Should(Succeed())
		change(2101, 2150)
		Eventually(func(g Gomega) {
			p, err := getPipeline(ns, "followed")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Status.Run.Trigger).To(Equal(etlv1.TriggerSchedule))
			g.Expect(p.Status.Phase).To(Equal(etlv1.PhaseIdle))
			d, err := compare(sourceOf("orders_followed"), "analytics.orders_followed")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(d).To(Equal(rowDiff{Source: 2150, Sink: 2150}))
		}).WithTimeout(60 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
	})

	It("deletes soft-deleted rows incrementally, sweeps hard-deleted ones in a Full Mirror run, and shows both counts", func() {
		createOrders("orders_mirror", 5000)
		execSQL(`ALTER TABLE public.orders_mirror ADD COLUMN deleted_at timestamptz`)
		live := sourceOf("orders_mirror") + " WHERE deleted_at IS NULL"
		expectLive := func() {
			GinkgoHelper()
			d, err := compare(live, "analytics.orders_mirror")
			Expect(err).NotTo(HaveOccurred())
			Expect(d).To(Equal(rowDiff{Source: d.Source, Sink: d.Source}), "the sink must hold exactly the live rows")
		}
		manifest := func(mode string) string {
			return fmt.Sprintf(`apiVersion: etl.sluice.dev/v1alpha1
kind: ETLPipeline
metadata:
  name: mirrored
spec:
  mode: %s
  source:
    connection: %s
    query: %s
    cursor:
      column: updated_at
      keyColumns: [id]
  target:
    name: analytics.orders_mirror
    deleteWhen: {column: deleted_at}
    fullSync: Mirror
  batchSize: 700
`, mode, connection, strconv.Quote("SELECT "+orderColumns+", deleted_at FROM public.orders_mirror"))
		}
		apply(ns, manifest("Incremental"))
		waitIdleAndReady(ns, "mirrored")
		expectLive()

		By("soft-deleting 100 rows and requesting a run")
		execSQL(`UPDATE public.orders_mirror SET deleted_at = now(), updated_at = clock_timestamp() WHERE id % 50 = 0`)
		stamp := time.Now().UTC().Format(time.RFC3339Nano)
		mustKubectl("annotate", "--overwrite", "etlp", "mirrored", "-n", ns, etlv1.AnnotationRunRequestedAt+"="+stamp)
		Eventually(func(g Gomega) {
			p, err := getPipeline(ns, "mirrored")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Status.LastHandledRunRequest).To(Equal(stamp))
			g.Expect(p.Status.Phase).To(Equal(etlv1.PhaseIdle))
		}).WithTimeout(runTimeout).WithPolling(poll).Should(Succeed())
		p := waitIdleAndReady(ns, "mirrored")
		Expect(p.Status.Run.RowsRead).To(BeEquivalentTo(100))
		Expect(p.Status.Run.RowsDeleted).To(BeEquivalentTo(100))
		Expect(p.Status.Run.RowsWritten).To(BeZero())
		expectLive()
		Expect(mustKubectl("get", "etlp", "-n", ns, "mirrored", "--no-headers")).To(
			// Rows and Swept are empty (zero): the one number is Deleted.
			MatchRegexp(`^mirrored\s+Idle\s+Running\s+Incremental\s+analytics\.orders_mirror\s+100\s+\d+[smh]\s+\d+[smh]\s*$`))

		By("hard-deleting 200 rows and switching to a Full Mirror run")
		execSQL(`DELETE FROM public.orders_mirror WHERE id % 25 = 1`)
		mustKubectl("patch", "etlp", "mirrored", "-n", ns, "--type", "merge", "-p", `{"spec":{"mode":"Full"}}`)
		Eventually(func(g Gomega) {
			p, err := getPipeline(ns, "mirrored")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Status.Run.Generation).To(Equal(p.Generation))
			g.Expect(p.Status.Phase).To(Equal(etlv1.PhaseIdle))
		}).WithTimeout(runTimeout).WithPolling(poll).Should(Succeed())
		p = waitIdleAndReady(ns, "mirrored")
		Expect(p.Status.Run.RowsSwept).To(BeEquivalentTo(200))
		Expect(p.Status.Run.RowsDeleted).To(BeEquivalentTo(100), "the soft-deleted rows, read again")
		Expect(p.Status.Run.RowsWritten).To(BeEquivalentTo(4700))
		expectLive()
		Expect(mustKubectl("get", "etlp", "-n", ns, "mirrored", "--no-headers")).To(
			MatchRegexp(`^mirrored\s+Idle\s+Running\s+Full\s+analytics\.orders_mirror\s+4700\s+100\s+200\s`))
	})

	It("accepts config/default and the samples in a server-side dry run", func() {
		root := testenv.RepoRoot()
		out := mustKubectl("apply", "-k", filepath.Join(root, "config", "default"), "--dry-run=server")
		Expect(out).To(ContainSubstring("customresourcedefinition.apiextensions.k8s.io/etlpipelines.etl.sluice.dev"))
		Expect(out).To(ContainSubstring("deployment.apps/sluice-manager"))
		out = mustKubectl("apply", "-k", filepath.Join(root, "config", "samples"), "-n", ns, "--dry-run=server")
		Expect(strings.Count(out, "etlpipeline.etl.sluice.dev/")).To(Equal(4))
	})
})
