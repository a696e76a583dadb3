package controllers

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

const (
	timeout  = 10 * time.Second
	interval = 50 * time.Millisecond
	// quiet is how long a spec watches for something that must not happen.
	quiet = 1500 * time.Millisecond
)

// newTestNamespace creates a namespace of its own for a spec's pipelines.
func newTestNamespace(ctx context.Context) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t-" + utilrand.String(8)}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func createPipeline(ctx context.Context, ns, name string, spec etlv1.ETLPipelineSpec, mutate ...func(*etlv1.ETLPipeline)) *etlv1.ETLPipeline {
	p := &etlv1.ETLPipeline{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	for _, m := range mutate {
		m(p)
	}
	Expect(k8sClient.Create(ctx, p)).To(Succeed())
	return p
}

func getPipeline(ctx context.Context, p *etlv1.ETLPipeline) *etlv1.ETLPipeline {
	out := &etlv1.ETLPipeline{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), out)).To(Succeed())
	return out
}

// jobsOf lists the runner Jobs of p, straight from the API server.
func jobsOf(ctx context.Context, p *etlv1.ETLPipeline) []batchv1.Job {
	list := &batchv1.JobList{}
	Expect(k8sClient.List(ctx, list, client.InNamespace(operatorNamespace), client.MatchingLabels(pipelineSelector(p.Namespace, p.Name)))).To(Succeed())
	return list.Items
}

// waitForForgetJob waits for the Job that removes a deleted pipeline's state, once the Jobs of
// its runs are gone.
func waitForForgetJob(ctx context.Context, p *etlv1.ETLPipeline) batchv1.Job {
	var forget batchv1.Job
	Eventually(func(g Gomega) {
		jobs := jobsOf(ctx, p)
		g.Expect(jobs).To(HaveLen(1))
		g.Expect(isForgetJob(&jobs[0])).To(BeTrue())
		forget = jobs[0]
	}, timeout, interval).Should(Succeed())
	return forget
}

// phaseOf returns a function for Eventually that yields p's phase.
func phaseOf(ctx context.Context, p *etlv1.ETLPipeline) func() etlv1.Phase {
	return func() etlv1.Phase { return getPipeline(ctx, p).Status.Phase }
}

// conditionOf returns a function for Eventually that yields "Status/Reason" of a condition.
func conditionOf(ctx context.Context, p *etlv1.ETLPipeline, typ string) func() string {
	return func() string {
		c := meta.FindStatusCondition(getPipeline(ctx, p).Status.Conditions, typ)
		if c == nil {
			return ""
		}
		return string(c.Status) + "/" + c.Reason
	}
}

// waitForRun waits until p has a requested run with the given trigger and its one Job, and
// returns the run.
func waitForRun(ctx context.Context, p *etlv1.ETLPipeline, trigger etlv1.RunTrigger, jobs int) *etlv1.RunStatus {
	var run *etlv1.RunStatus
	Eventually(func(g Gomega) {
		cur := getPipeline(ctx, p)
		g.Expect(cur.Status.Phase).To(Equal(etlv1.PhaseRunRequested))
		g.Expect(cur.Status.Run).NotTo(BeNil())
		g.Expect(cur.Status.Run.Trigger).To(Equal(trigger))
		run = cur.Status.Run
		names := []string{}
		for _, j := range jobsOf(ctx, p) {
			names = append(names, j.Name)
		}
		g.Expect(names).To(HaveLen(jobs))
		g.Expect(names).To(ContainElement(run.JobName))
	}, timeout, interval).Should(Succeed())
	return run
}

// The runner's side of the contract, played by hand with the pipeline's runner service
// account and a token bound to a pod of the run's Job: every write is an Update of the status
// subresource on a freshly read object, so the resourceVersion guards it.
func runnerWrite(ctx context.Context, p *etlv1.ETLPipeline, runID string, from []etlv1.Phase, mutate func(st *etlv1.ETLPipelineStatus)) {
	reader := runnerClientFor(p, "")
	Eventually(func(g Gomega) {
		cur := &etlv1.ETLPipeline{}
		g.Expect(reader.Get(ctx, client.ObjectKeyFromObject(p), cur)).To(Succeed())
		g.Expect(cur.Status.Run).NotTo(BeNil())
		g.Expect(cur.Status.Run.ID).To(Equal(runID), "the runner only writes its own run")
		g.Expect(from).To(ContainElement(cur.Status.Phase))
		mutate(&cur.Status)
		g.Expect(runnerClientFor(p, cur.Status.Run.JobName+"-x7k2p").Status().Update(ctx, cur)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

func claim(ctx context.Context, p *etlv1.ETLPipeline, runID string) {
	runnerWrite(ctx, p, runID, []etlv1.Phase{etlv1.PhaseRunRequested}, func(st *etlv1.ETLPipelineStatus) {
		st.Phase = etlv1.PhaseRunning
	})
}

func reportEnd(ctx context.Context, p *etlv1.ETLPipeline, runID string, phase etlv1.Phase) {
	from := []etlv1.Phase{etlv1.PhaseRunning, etlv1.PhasePauseRequested}
	if phase == etlv1.PhasePaused {
		from = []etlv1.Phase{etlv1.PhasePauseRequested}
	}
	runnerWrite(ctx, p, runID, from, func(st *etlv1.ETLPipelineStatus) {
		now := metav1.NewTime(time.Now().Truncate(time.Second))
		st.Phase = phase
		st.Run.CompletionTime = &now
		st.Run.RowsRead, st.Run.RowsWritten, st.Run.Batches = 10, 10, 1
	})
}

// reportFailure writes a run's failure as the runner does.
func reportFailure(ctx context.Context, p *etlv1.ETLPipeline, runID string, class etlv1.ErrorClass) {
	runnerWrite(ctx, p, runID, []etlv1.Phase{etlv1.PhaseRunning}, func(st *etlv1.ETLPipelineStatus) {
		now := metav1.NewTime(time.Now().Truncate(time.Second))
		st.Phase = etlv1.PhaseFailed
		st.ConsecutiveFailures++
		st.Run.CompletionTime = &now
		st.Run.ErrorClass = class
		st.Run.Message = "connect to \"warehouse\": connection refused"
	})
}

// finishJob sets a Job's terminal conditions through the status subresource, as the Job
// controller (absent from envtest) would.
func finishJob(ctx context.Context, name string, failed bool) {
	Eventually(func(g Gomega) {
		job := &batchv1.Job{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: name}, job)).To(Succeed())
		now := metav1.Now()
		job.Status.StartTime = &metav1.Time{Time: now.Add(-time.Minute)}
		if failed {
			job.Status.Failed = 1
			job.Status.Conditions = []batchv1.JobCondition{
				{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: "PodFailurePolicy", Message: "Container runner for pod exited with code 42 matching FailJob rule at index 0", LastTransitionTime: now},
				{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "PodFailurePolicy", Message: "Container runner for pod exited with code 42 matching FailJob rule at index 0", LastTransitionTime: now},
			}
		} else {
			job.Status.Succeeded = 1
			job.Status.CompletionTime = &now
			job.Status.Conditions = []batchv1.JobCondition{
				{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, Reason: "CompletionsReached", LastTransitionTime: now},
				{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, Reason: "CompletionsReached", LastTransitionTime: now},
			}
		}
		g.Expect(k8sClient.Status().Update(ctx, job)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

// createTerminatedPod makes the pod of a Job, terminated with message, as the kubelet would
// leave it.
func createTerminatedPod(ctx context.Context, jobName string, exitCode int32, message string) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: jobName + "-x1", Labels: map[string]string{batchv1.JobNameLabel: jobName}},
		Spec:       corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: runnerContainer, Image: "sluice"}}},
	}
	Expect(k8sClient.Create(ctx, pod)).To(Succeed())
	pod.Status = corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{
		Name: runnerContainer, Image: "sluice", ImageID: "sluice@sha256:0",
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: exitCode, Reason: "Error", Message: message,
			StartedAt: metav1.Now(), FinishedAt: metav1.Now(),
		}},
	}}}
	Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
}

func annotate(ctx context.Context, p *etlv1.ETLPipeline, value string) {
	cur := getPipeline(ctx, p)
	orig := cur.DeepCopy()
	if cur.Annotations == nil {
		cur.Annotations = map[string]string{}
	}
	cur.Annotations[etlv1.AnnotationRunRequestedAt] = value
	Expect(k8sClient.Patch(ctx, cur, client.MergeFrom(orig))).To(Succeed())
}

func editSpec(ctx context.Context, p *etlv1.ETLPipeline, mutate func(*etlv1.ETLPipelineSpec)) {
	cur := getPipeline(ctx, p)
	orig := cur.DeepCopy()
	mutate(&cur.Spec)
	Expect(k8sClient.Patch(ctx, cur, client.MergeFrom(orig))).To(Succeed())
}

// eventsOf lists the events regarding p.
func eventsOf(ctx context.Context, p *etlv1.ETLPipeline) []eventsv1.Event {
	list := &eventsv1.EventList{}
	Expect(k8sClient.List(ctx, list, client.InNamespace(p.Namespace))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == p.Name {
			out = append(out, e)
		}
	}
	return out
}

func envOf(job *batchv1.Job, name string) string {
	for _, e := range job.Spec.Template.Spec.Containers[0].Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

var _ = Describe("ETLPipeline reconciler", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newTestNamespace(ctx)
	})

	It("requests a run on creation and creates exactly one runner Job for it", func() {
		p := createPipeline(ctx, ns, "orders", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)

		cur := getPipeline(ctx, p)
		Expect(cur.Finalizers).To(ContainElement(etlv1.Finalizer))
		Expect(cur.Status.ObservedGeneration).To(Equal(cur.Generation))
		Expect(run.Generation).To(Equal(cur.Generation))
		Expect(run.StartTime).NotTo(BeNil())
		Expect(run.JobName).To(Equal(JobName(ns, "orders", run.ID)))
		Expect(conditionOf(ctx, p, etlv1.ConditionReconciling)()).To(Equal("True/" + etlv1.ReasonRunRequested))
		Expect(conditionOf(ctx, p, etlv1.ConditionReady)()).To(Equal("Unknown/" + etlv1.ReasonRunRequested))
		Expect(conditionOf(ctx, p, etlv1.ConditionTargetAllowed)()).To(Equal("True/" + etlv1.ReasonTargetAllowed))
		Expect(conditionOf(ctx, p, etlv1.ConditionStalled)()).To(BeEmpty())
		for _, c := range cur.Status.Conditions {
			Expect(c.ObservedGeneration).To(Equal(cur.Generation), c.Type)
		}

		job := jobsOf(ctx, p)[0]
		Expect(job.Namespace).To(Equal(operatorNamespace))
		Expect(job.Labels).To(HaveKeyWithValue(etlv1.LabelRunID, run.ID))
		Expect(job.Labels).To(HaveKeyWithValue("app.kubernetes.io/component", "runner"))
		Expect(envOf(&job, configv1.EnvRunID)).To(Equal(run.ID))
		Expect(envOf(&job, configv1.EnvPipelineNamespace)).To(Equal(ns))
		Expect(envOf(&job, configv1.EnvGeneration)).To(Equal("1"))
		Expect(envOf(&job, configv1.EnvSpec)).To(ContainSubstring(`"connection":"warehouse"`))
		Expect(job.Spec.Template.Spec.ServiceAccountName).To(Equal(RunnerServiceAccount(getPipeline(ctx, p))))

		Consistently(func() []batchv1.Job { return jobsOf(ctx, p) }, quiet, interval).Should(HaveLen(1))
		Eventually(func() []string {
			var reasons []string
			for _, e := range eventsOf(ctx, p) {
				reasons = append(reasons, e.Reason)
			}
			return reasons
		}, timeout, interval).Should(ContainElements("JobCreated", etlv1.ReasonRunRequested))
	})

	It("makes a request during a run wait for the run's end, then runs it", func() {
		p := createPipeline(ctx, ns, "orders", legacySpec())
		first := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, first.ID)
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("Unknown/" + etlv1.ReasonRunning))

		annotate(ctx, p, "2025-06-01T12:00:00Z")
		Consistently(func(g Gomega) {
			g.Expect(jobsOf(ctx, p)).To(HaveLen(1))
			g.Expect(getPipeline(ctx, p).Status.Phase).To(Equal(etlv1.PhaseRunning))
		}, quiet, interval).Should(Succeed())

		reportEnd(ctx, p, first.ID, etlv1.PhaseIdle)
		second := waitForRun(ctx, p, etlv1.TriggerAnnotation, 2)
		Expect(second.ID).NotTo(Equal(first.ID))
		Expect(getPipeline(ctx, p).Status.LastHandledRunRequest).To(Equal("2025-06-01T12:00:00Z"))
	})

	It("runs again on a spec change and on a new run-requested-at", func() {
		p := createPipeline(ctx, ns, "orders", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, run.ID)
		reportEnd(ctx, p, run.ID, etlv1.PhaseIdle)
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("True/" + etlv1.ReasonSucceeded))

		editSpec(ctx, p, func(s *etlv1.ETLPipelineSpec) { s.BatchSize = 100 })
		run = waitForRun(ctx, p, etlv1.TriggerSpecChanged, 2)
		Expect(run.Generation).To(Equal(int64(2)))
		var job batchv1.Job
		for _, j := range jobsOf(ctx, p) {
			if j.Name == run.JobName {
				job = j
			}
		}
		Expect(envOf(&job, configv1.EnvGeneration)).To(Equal("2"))
		Expect(envOf(&job, configv1.EnvSpec)).To(ContainSubstring(`"batchSize":100`))
		claim(ctx, p, run.ID)
		reportEnd(ctx, p, run.ID, etlv1.PhaseIdle)

		annotate(ctx, p, "again")
		waitForRun(ctx, p, etlv1.TriggerAnnotation, 3)
		Expect(getPipeline(ctx, p).Status.LastHandledRunRequest).To(Equal("again"))
	})

	It("runs on schedule ticks", func() {
		spec := legacySpec()
		spec.Schedule = "@every 2s"
		p := createPipeline(ctx, ns, "ticking", spec)
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		Expect(getPipeline(ctx, p).Status.NextScheduledRun).NotTo(BeNil())
		claim(ctx, p, run.ID)
		reportEnd(ctx, p, run.ID, etlv1.PhaseIdle)

		tick := waitForRun(ctx, p, etlv1.TriggerSchedule, 2)
		Expect(tick.ID).NotTo(Equal(run.ID))
		next := getPipeline(ctx, p).Status.NextScheduledRun
		Expect(next).NotTo(BeNil())
		Expect(next.Time).To(BeTemporally(">", tick.StartTime.Time))
	})

	It("runs a scheduled pipeline again at a later tick after an infrastructure failure, not after a business one", func() {
		spec := legacySpec()
		spec.Schedule = "@every 2s"
		p := createPipeline(ctx, ns, "flaky", spec)
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, run.ID)
		reportFailure(ctx, p, run.ID, etlv1.ErrorInfra)
		Eventually(phaseOf(ctx, p), timeout, interval).Should(Equal(etlv1.PhaseFailed))

		retry := waitForRun(ctx, p, etlv1.TriggerSchedule, 2)
		Expect(retry.ID).NotTo(Equal(run.ID))
		Expect(getPipeline(ctx, p).Status.ConsecutiveFailures).To(BeEquivalentTo(1))
		claim(ctx, p, retry.ID)
		reportFailure(ctx, p, retry.ID, etlv1.ErrorBusiness)
		Eventually(phaseOf(ctx, p), timeout, interval).Should(Equal(etlv1.PhaseFailed))
		Expect(getPipeline(ctx, p).Status.ConsecutiveFailures).To(BeEquivalentTo(2))
		Consistently(func() []batchv1.Job { return jobsOf(ctx, p) }, 5*time.Second, interval).Should(HaveLen(2),
			"a business failure waits for a change")
	})

	It("says why a runner pod cannot start, then fails the run RunnerNotStarted at the start deadline", func() {
		p := createPipeline(ctx, ns, "unstartable", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		job := &batchv1.Job{}
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: run.JobName}, job)
		}, timeout, interval).Should(Succeed())
		// The pod the Job controller (absent from envtest) would make, as the kubelet leaves it.
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: run.JobName + "-x1",
			Labels: map[string]string{batchv1.JobNameLabel: job.Name}},
			Spec: *job.Spec.Template.Spec.DeepCopy()}
		Expect(k8sClient.Create(ctx, pod)).To(Succeed())
		pod.Status.Phase = corev1.PodPending
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "runner", Image: "sluice", State: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: `secret "warehouse-dsn" not found`}}}}
		Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())

		Eventually(conditionOf(ctx, p, etlv1.ConditionRunnerStarted), timeout, interval).Should(Equal("False/CreateContainerConfigError"))
		Expect(getPipeline(ctx, p).Status.Phase).To(Equal(etlv1.PhaseRunRequested))
		Eventually(phaseOf(ctx, p), 20*time.Second, interval).Should(Equal(etlv1.PhaseFailed))
		got := getPipeline(ctx, p)
		ready := meta.FindStatusCondition(got.Status.Conditions, etlv1.ConditionReady)
		Expect(ready.Reason).To(Equal(etlv1.ReasonRunnerNotStarted))
		Expect(ready.Message).To(ContainSubstring(`secret "warehouse-dsn" not found`))
		Expect(got.Status.Run.ErrorClass).To(Equal(etlv1.ErrorInfra))
		Expect(meta.FindStatusCondition(got.Status.Conditions, etlv1.ConditionRunnerStarted)).To(BeNil())
		Eventually(func() []batchv1.Job { return jobsOf(ctx, p) }, timeout, interval).Should(BeEmpty(), "the unstarted Job is deleted")

		annotate(ctx, p, "secret created")
		waitForRun(ctx, p, etlv1.TriggerAnnotation, 1)
	})

	It("reloads a changed operator configuration: a pipeline that became allowed leaves Failed by itself", func() {
		spec := legacySpec()
		spec.Target.Name = "analytics.later"
		p := createPipeline(ctx, ns, "allowed-later", spec)
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("False/" + etlv1.ReasonTargetNotAllowed))
		Expect(jobsOf(ctx, p)).To(BeEmpty())
		DeferCleanup(func() {
			writeConfigMap(context.Background(), operatorConfig)
			Eventually(func() *configv1.OperatorConfig { return configs.Get() }, timeout, interval).Should(Equal(operatorConfig))
		})

		By("an invalid configuration is refused and the one in force kept")
		cm := &corev1.ConfigMap{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: operatorConfig.Runner.ConfigMapName}, cm)).To(Succeed())
		cm.Data[operatorConfig.Runner.ConfigMapKey] = "apiVersion: config.etl.sluice.dev/v1alpha1\nkind: OperatorConfig\nrunner: {}\n"
		Expect(k8sClient.Update(ctx, cm)).To(Succeed())
		Consistently(func() *configv1.OperatorConfig { return configs.Get() }, quiet, interval).Should(Equal(operatorConfig))

		By("whitelisting the table in the ConfigMap")
		allowed := copyConfig(operatorConfig)
		allowed.AllowedTargets.PostgresTables = append(allowed.AllowedTargets.PostgresTables, "analytics.later")
		writeConfigMap(ctx, allowed)
		run := waitForRun(ctx, p, etlv1.TriggerConfigChanged, 1)
		claim(ctx, p, run.ID)
		reportEnd(ctx, p, run.ID, etlv1.PhaseIdle)
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("True/" + etlv1.ReasonSucceeded))
	})

	It("marks a claimed run that commits nothing for the progress deadline, and clears it when a batch commits", func() {
		p := createPipeline(ctx, ns, "slow", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, run.ID)
		Eventually(conditionOf(ctx, p, etlv1.ConditionProgressing), 15*time.Second, interval).Should(Equal("False/" + etlv1.ReasonProgressDeadlineExceeded))
		Expect(getPipeline(ctx, p).Status.Phase).To(Equal(etlv1.PhaseRunning), "the run is not stopped")
		runnerWrite(ctx, p, run.ID, []etlv1.Phase{etlv1.PhaseRunning}, func(st *etlv1.ETLPipelineStatus) {
			now := metav1.NewTime(time.Now().Truncate(time.Second))
			st.Checkpoint = &etlv1.CheckpointStatus{Values: []string{"2026-01-01 00:00:00Z", "10"}, Time: &now}
		})
		Eventually(conditionOf(ctx, p, etlv1.ConditionProgressing), 15*time.Second, interval).Should(BeEmpty())
		reportEnd(ctx, p, run.ID, etlv1.PhaseIdle)
	})

	It("creates no Job for a target outside the whitelist and says why", func() {
		spec := legacySpec()
		spec.Target.Name = "analytics.payroll"
		p := createPipeline(ctx, ns, "sneaky", spec)

		Eventually(phaseOf(ctx, p), timeout, interval).Should(Equal(etlv1.PhaseFailed))
		Expect(conditionOf(ctx, p, etlv1.ConditionReady)()).To(Equal("False/" + etlv1.ReasonTargetNotAllowed))
		Expect(conditionOf(ctx, p, etlv1.ConditionStalled)()).To(Equal("True/" + etlv1.ReasonTargetNotAllowed))
		Expect(conditionOf(ctx, p, etlv1.ConditionTargetAllowed)()).To(Equal("False/" + etlv1.ReasonTargetNotAllowed))
		Expect(conditionOf(ctx, p, etlv1.ConditionReconciling)()).To(BeEmpty())
		Expect(getPipeline(ctx, p).Status.Run).To(BeNil())
		Eventually(func() []string {
			var warnings []string
			for _, e := range eventsOf(ctx, p) {
				if e.Type == corev1.EventTypeWarning {
					warnings = append(warnings, e.Reason)
				}
			}
			return warnings
		}, timeout, interval).Should(ContainElement(etlv1.ReasonTargetNotAllowed))
		Consistently(func() []batchv1.Job { return jobsOf(ctx, p) }, quiet, interval).Should(BeEmpty())
	})

	DescribeTable("stalls a spec the API server accepts but Sluice cannot run",
		func(mutate func(*etlv1.ETLPipelineSpec), reason, inMessage string) {
			spec := legacySpec()
			mutate(&spec)
			p := createPipeline(ctx, ns, "bad", spec)
			Eventually(conditionOf(ctx, p, etlv1.ConditionStalled), timeout, interval).Should(Equal("True/" + reason))
			cur := getPipeline(ctx, p)
			Expect(cur.Status.Phase).To(Equal(etlv1.PhaseFailed))
			Expect(meta.FindStatusCondition(cur.Status.Conditions, etlv1.ConditionReady).Message).To(ContainSubstring(inMessage))
			Expect(cur.Status.ObservedGeneration).To(Equal(cur.Generation))
			Consistently(func() []batchv1.Job { return jobsOf(ctx, p) }, quiet, interval).Should(BeEmpty())
		},
		Entry("a cron expression robfig rejects", func(s *etlv1.ETLPipelineSpec) { s.Schedule = "61 * * * *" }, etlv1.ReasonInvalidSpec, "spec.schedule"),
		Entry("an unknown source connection", func(s *etlv1.ETLPipelineSpec) { s.Source.Connection = "nowhere" }, etlv1.ReasonUnknownConnection, "nowhere"),
		Entry("an Elasticsearch target on a Postgres connection", func(s *etlv1.ETLPipelineSpec) {
			s.Target = etlv1.TargetSpec{Name: "es:orders", Connection: "warehouse"}
		}, etlv1.ReasonUnknownConnection, "warehouse"),
	)

	It("leaves Failed when the spec is fixed", func() {
		spec := legacySpec()
		spec.Target.Name = "analytics.payroll"
		p := createPipeline(ctx, ns, "fixed", spec)
		Eventually(phaseOf(ctx, p), timeout, interval).Should(Equal(etlv1.PhaseFailed))
		editSpec(ctx, p, func(s *etlv1.ETLPipelineSpec) { s.Target.Name = "analytics.orders" })
		waitForRun(ctx, p, etlv1.TriggerSpecChanged, 1)
		Expect(conditionOf(ctx, p, etlv1.ConditionStalled)()).To(BeEmpty())
		Expect(conditionOf(ctx, p, etlv1.ConditionTargetAllowed)()).To(Equal("True/" + etlv1.ReasonTargetAllowed))
	})

	It("fails the pipeline with the pod's termination message when the Job fails unreported", func() {
		p := createPipeline(ctx, ns, "crashy", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, run.ID)
		createTerminatedPod(ctx, run.JobName, configv1.ExitBusiness, "column \"totl\" does not exist; dsn postgres://etl:hunter2@db/x")
		finishJob(ctx, run.JobName, true)

		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("False/" + etlv1.ReasonJobFailed))
		cur := getPipeline(ctx, p)
		Expect(cur.Status.Phase).To(Equal(etlv1.PhaseFailed))
		ready := meta.FindStatusCondition(cur.Status.Conditions, etlv1.ConditionReady)
		Expect(ready.Message).To(ContainSubstring(`column "totl" does not exist`))
		Expect(ready.Message).To(ContainSubstring("code 42"))
		Expect(ready.Message).NotTo(ContainSubstring("hunter2"))
		Expect(cur.Status.Run.ErrorClass).To(Equal(etlv1.ErrorBusiness))
		Expect(cur.Status.Run.CompletionTime).NotTo(BeNil())
		Expect(conditionOf(ctx, p, etlv1.ConditionReconciling)()).To(BeEmpty())

		// A schedule-like idle pass changes nothing; an explicit request leaves Failed.
		annotate(ctx, p, "retry")
		waitForRun(ctx, p, etlv1.TriggerAnnotation, 2)
	})

	It("records the end a runner could not report from its termination message: Idle, not Failed", func() {
		p := createPipeline(ctx, ns, "unheard", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, run.ID)
		end := fmt.Sprintf(`{"runID":%q,"phase":"Idle","rowsRead":1200,"rowsWritten":1100,"batches":3}`, run.ID)
		createTerminatedPod(ctx, run.JobName, 0, end)
		finishJob(ctx, run.JobName, false)
		Eventually(phaseOf(ctx, p), timeout, interval).Should(Equal(etlv1.PhaseIdle))
		cur := getPipeline(ctx, p)
		Expect(cur.Status.Run.RowsRead).To(BeEquivalentTo(1200))
		Expect(cur.Status.Run.RowsWritten).To(BeEquivalentTo(1100))
		Expect(cur.Status.Run.CompletionTime).NotTo(BeNil())
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("True/" + etlv1.ReasonSucceeded))
	})

	It("fails a run whose Job completed without the runner reporting", func() {
		p := createPipeline(ctx, ns, "silent", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, run.ID)
		finishJob(ctx, run.JobName, false)
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("False/" + etlv1.ReasonRunUnreported))
		Expect(getPipeline(ctx, p).Status.Phase).To(Equal(etlv1.PhaseFailed))
	})

	It("ignores a Job that completes after the runner reported the end", func() {
		p := createPipeline(ctx, ns, "tidy", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, run.ID)
		reportEnd(ctx, p, run.ID, etlv1.PhaseIdle)
		finishJob(ctx, run.JobName, false)
		Consistently(phaseOf(ctx, p), quiet, interval).Should(Equal(etlv1.PhaseIdle))
		Expect(conditionOf(ctx, p, etlv1.ConditionReady)()).To(Equal("True/" + etlv1.ReasonSucceeded))
	})

	It("cancels a run not yet claimed when paused: deletes its Job and goes Paused", func() {
		p := createPipeline(ctx, ns, "cancel", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		editSpec(ctx, p, func(s *etlv1.ETLPipelineSpec) { s.DesiredState = etlv1.DesiredPaused })

		Eventually(phaseOf(ctx, p), timeout, interval).Should(Equal(etlv1.PhasePaused))
		Eventually(func() []batchv1.Job { return jobsOf(ctx, p) }, timeout, interval).Should(BeEmpty())
		Expect(conditionOf(ctx, p, etlv1.ConditionReady)()).To(Equal("True/" + etlv1.ReasonPaused))

		// The runner that comes too late finds its run cancelled and must not claim.
		_, err := NextPhase(PhaseInput{Phase: getPipeline(ctx, p).Status.Phase, Report: ReportClaim})
		Expect(err).To(MatchError(ErrTransitionRefused))
		Expect(getPipeline(ctx, p).Status.Run.ID).To(Equal(run.ID))
	})

	It("asks a running runner to pause, then resumes with a new run", func() {
		p := createPipeline(ctx, ns, "pausing", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, run.ID)
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("Unknown/" + etlv1.ReasonRunning))

		editSpec(ctx, p, func(s *etlv1.ETLPipelineSpec) { s.DesiredState = etlv1.DesiredPaused })
		Eventually(phaseOf(ctx, p), timeout, interval).Should(Equal(etlv1.PhasePauseRequested))
		Expect(jobsOf(ctx, p)).To(HaveLen(1), "the runner stops by itself; its Job is not deleted")

		reportEnd(ctx, p, run.ID, etlv1.PhasePaused)
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("True/" + etlv1.ReasonPaused))
		Consistently(func() []batchv1.Job { return jobsOf(ctx, p) }, quiet, interval).Should(HaveLen(1))

		editSpec(ctx, p, func(s *etlv1.ETLPipelineSpec) { s.DesiredState = etlv1.DesiredRunning })
		resumed := waitForRun(ctx, p, etlv1.TriggerResume, 2)
		Expect(resumed.Generation).To(Equal(int64(3)))
	})

	It("starts nothing for a pipeline created paused, and runs it on resume", func() {
		spec := legacySpec()
		spec.DesiredState = etlv1.DesiredPaused
		p := createPipeline(ctx, ns, "dormant", spec)
		Eventually(phaseOf(ctx, p), timeout, interval).Should(Equal(etlv1.PhasePaused))
		Consistently(func() []batchv1.Job { return jobsOf(ctx, p) }, quiet, interval).Should(BeEmpty())

		editSpec(ctx, p, func(s *etlv1.ETLPipelineSpec) { s.DesiredState = etlv1.DesiredRunning })
		waitForRun(ctx, p, etlv1.TriggerResume, 1)
	})

	It("deletes the pipeline's Jobs when the pipeline is deleted", func() {
		p := createPipeline(ctx, ns, "doomed", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, run.ID)
		reportEnd(ctx, p, run.ID, etlv1.PhaseIdle)
		annotate(ctx, p, "second")
		waitForRun(ctx, p, etlv1.TriggerAnnotation, 2)

		uid := getPipeline(ctx, p).UID
		Expect(k8sClient.Delete(ctx, p)).To(Succeed())
		forget := waitForForgetJob(ctx, p)
		Expect(forget.Labels[etlv1.LabelRunID]).To(Equal(forgetRunID(string(uid))))
		Expect(forget.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--forget"))
		Consistently(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &etlv1.ETLPipeline{}))
		}, quiet, interval).Should(BeFalse(), "the pipeline waits for its state to be removed")

		finishJob(ctx, forget.Name, false)
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &etlv1.ETLPipeline{}))
		}, timeout, interval).Should(BeTrue())
		// Only the finished forget Job is left, to its TTL.
		Expect(jobsOf(ctx, p)).To(HaveLen(1))
		Expect(jobsOf(ctx, p)[0].Name).To(Equal(forget.Name))
	})

	It("finishes a deletion whose state cannot be removed, with a warning", func() {
		p := createPipeline(ctx, ns, "stateful", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, run.ID)
		reportEnd(ctx, p, run.ID, etlv1.PhaseIdle)
		Expect(k8sClient.Delete(ctx, p)).To(Succeed())
		forget := waitForForgetJob(ctx, p)
		finishJob(ctx, forget.Name, true)
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &etlv1.ETLPipeline{}))
		}, timeout, interval).Should(BeTrue())
	})

	It("makes zero API writes for a pipeline at rest", func() {
		p := createPipeline(ctx, ns, "resting", legacySpec())
		run := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, run.ID)
		reportEnd(ctx, p, run.ID, etlv1.PhaseIdle)
		finishJob(ctx, run.JobName, false)
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("True/" + etlv1.ReasonSucceeded))
		// Let the last events of the run settle.
		time.Sleep(500 * time.Millisecond)

		rv := getPipeline(ctx, p).ResourceVersion
		before := writes.Writes(ns, p.Name)
		Expect(before).To(BeNumerically(">", 0), "the write counter sees the reconciler")
		Consistently(func(g Gomega) {
			g.Expect(getPipeline(ctx, p).ResourceVersion).To(Equal(rv))
			g.Expect(writes.Writes(ns, p.Name)).To(Equal(before))
		}, 10*time.Second, 250*time.Millisecond).Should(Succeed())
	})
})
