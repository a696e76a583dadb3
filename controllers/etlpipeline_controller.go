package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// FieldOwner is the field manager of every write the manager makes.
const FieldOwner = "sluice-manager"

// conflictRequeue is the wait before retrying a pass whose status write lost a race with the
// runner: an expected wait, not an error worth a log line and a backoff.
const conflictRequeue = 200 * time.Millisecond

// The manager's RBAC, least privilege: pipelines cluster-wide (it never writes their spec),
// events where the pipelines are, Jobs and pods only in the operator's namespace (the
// kustomization rewrites sluice-system to the namespace it deploys into).
//
// +kubebuilder:rbac:groups=etl.sluice.dev,resources=etlpipelines,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=etl.sluice.dev,resources=etlpipelines/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=etl.sluice.dev,resources=etlpipelines/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",namespace=sluice-system,resources=serviceaccounts,verbs=create;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=create;delete
// +kubebuilder:rbac:groups=batch,namespace=sluice-system,resources=jobs,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",namespace=sluice-system,resources=pods,verbs=get;list
// +kubebuilder:rbac:groups="",namespace=sluice-system,resources=configmaps,verbs=get;list;watch

// ETLPipelineReconciler reconciles ETLPipelines: validation, the phase state machine, runner
// Jobs. The manager writes RunRequested, PauseRequested, Paused (no run active) and Failed (bad
// spec, Job ended without a runner report), the conditions, nextScheduledRun,
// lastHandledRunRequest and the run's id, jobName, trigger, generation and startTime. The
// runner writes Running (its claim), progress, the checkpoint and the run's end. Every status
// write of the manager is guarded by the resourceVersion it read, so neither side overwrites
// the other.
type ETLPipelineReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// APIReader reads from the API server: Jobs whose absence must be certain, pods.
	APIReader client.Reader
	// Recorder emits events on phase transitions.
	Recorder events.EventRecorder
	// Config is the operator configuration: connections, whitelist, runner Job settings.
	// Configs, when set, holds the configuration in force instead (reloaded from its
	// ConfigMap), and ConfigChanged carries the pipelines to reconcile after a reload.
	Config        *configv1.OperatorConfig
	Configs       *ConfigStore
	ConfigChanged <-chan event.GenericEvent
	// Namespace is the operator's namespace, where runner Jobs run.
	Namespace string

	// ForgetDeadline bounds how long a deleted pipeline waits for the Job that removes its
	// state (2 minutes when 0).
	ForgetDeadline time.Duration

	// Now, NewRunID and Jitter default to the clock, random ids and a 5% jitter; tests
	// replace them.
	Now      func() time.Time
	NewRunID func() string
	Jitter   func(time.Duration) time.Duration
}

// pass is what one reconcile learns and decides, shared by its steps.
type pass struct {
	p   *etlv1.ETLPipeline
	now time.Time

	problem *specProblem
	target  targetCheck
	sched   cron.Schedule
	// tenant is the pipeline's namespace as the grants judged it.
	tenant tenant

	// job is the Job of status.run (nil when absent), outcome its verdict.
	job     *batchv1.Job
	outcome JobOutcome
	// startup is why the requested run's pod has not started (nil: nothing wrong seen);
	// startExpired is set once runner.startDeadline has passed without a claim.
	startup      *startProblem
	startExpired bool

	// moved is set when the phase changed: its side effects (create or delete a Job) wait for
	// the next pass, which only runs once the status write succeeded. So a Job never exists
	// for a run the status does not record.
	moved bool
	// started is set when a run was requested in this pass.
	started bool
}

// Reconcile only orchestrates: fetch, deletion, finalizer, then the ordered steps, and one
// status patch at the end.
func (r *ETLPipelineReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	p := &etlv1.ETLPipeline{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !p.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, p)
	}
	if err := r.ensureFinalizer(ctx, p); apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: conflictRequeue}, nil // the cache is behind: look again
	} else if err != nil {
		return ctrl.Result{}, err
	}

	base := p.DeepCopy()
	s := &pass{p: p, now: r.now()}
	defer func() {
		requeue, err := r.patchStatus(ctx, base, s, retErr)
		switch {
		case err != nil && errors.Is(retErr, reconcile.TerminalError(nil)):
			// The terminal verdict is not recorded yet: retry until it is.
			retErr = err
		case err != nil:
			retErr = errors.Join(retErr, err)
		case requeue:
			result, retErr = ctrl.Result{RequeueAfter: conflictRequeue}, nil
		}
	}()

	for _, step := range []func(context.Context, *pass) (ctrl.Result, error){
		r.reconcileSpec,
		r.reconcileRunJob,
		r.reconcileStartup,
		// Before the phase moves on (a new run replaces status.run) and after (the manager
		// closed a run): a run is counted once either way.
		r.reconcileTotals,
		r.reconcilePhase,
		r.reconcileTotals,
		r.reconcileCheckpoint,
		r.reconcileJob,
		r.reconcileProgress,
		r.reconcileHistory,
		r.reconcileSchedule,
	} {
		res, err := step(ctx, s)
		if err != nil {
			return ctrl.Result{}, err
		}
		result = earliest(result, res)
	}
	if s.problem != nil {
		// Terminal: only a new spec fixes it; the Stalled condition says why.
		return ctrl.Result{}, reconcile.TerminalError(s.problem)
	}
	return result, nil
}

// earliest merges two results, keeping the sooner requeue.
func earliest(a, b ctrl.Result) ctrl.Result {
	if a.RequeueAfter == 0 || (b.RequeueAfter > 0 && b.RequeueAfter < a.RequeueAfter) {
		return b
	}
	return a
}

// config returns the operator configuration in force.
func (r *ETLPipelineReconciler) config() *configv1.OperatorConfig {
	if r.Configs != nil {
		if c := r.Configs.Get(); c != nil {
			return c
		}
	}
	return r.Config
}

func (r *ETLPipelineReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now().Truncate(time.Second)
	}
	// Status times are stored to the second: comparing the stored value with a fresh one
	// must not see a difference that is only nanoseconds.
	return time.Now().Truncate(time.Second)
}

func (r *ETLPipelineReconciler) newRunID() string {
	if r.NewRunID != nil {
		return r.NewRunID()
	}
	// Random rather than derived: a run is recorded in the status before its Job exists, so
	// a stale cache cannot make a second Job for the same request.
	return utilrand.String(8)
}

func (r *ETLPipelineReconciler) jitter(d time.Duration) time.Duration {
	if r.Jitter != nil {
		return r.Jitter(d)
	}
	return jitter(d)
}

// ensureFinalizer adds the finalizer that lets the manager delete the pipeline's Jobs, which
// live in another namespace and so cannot have an owner reference to it.
func (r *ETLPipelineReconciler) ensureFinalizer(ctx context.Context, p *etlv1.ETLPipeline) error {
	if controllerutil.ContainsFinalizer(p, etlv1.Finalizer) {
		return nil
	}
	orig := p.DeepCopy()
	controllerutil.AddFinalizer(p, etlv1.Finalizer)
	if err := r.Client.Patch(ctx, p, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}), client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("add finalizer to pipeline %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// reconcileDelete deletes every runner Job of the pipeline, then releases it.
func (r *ETLPipelineReconciler) reconcileDelete(ctx context.Context, p *etlv1.ETLPipeline) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(p, etlv1.Finalizer) {
		return ctrl.Result{}, nil
	}
	// Straight from the API server: a Job created a moment ago must not outlive its pipeline.
	jobs := &batchv1.JobList{}
	if err := r.APIReader.List(ctx, jobs, client.InNamespace(r.Namespace), client.MatchingLabels(pipelineSelector(p.Namespace, p.Name))); err != nil {
		return ctrl.Result{}, fmt.Errorf("list jobs of pipeline %s/%s: %w", p.Namespace, p.Name, err)
	}
	var forget *batchv1.Job
	for i := range jobs.Items {
		job := &jobs.Items[i]
		if job.Annotations[etlv1.AnnotationPipeline] != p.Namespace+"/"+p.Name || !job.DeletionTimestamp.IsZero() {
			continue
		}
		if isForgetJob(job) {
			if job.Labels[etlv1.LabelRunID] == forgetRunID(string(p.UID)) {
				forget = job
			}
			continue
		}
		if err := r.Client.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("delete job %s/%s of pipeline %s/%s: %w", job.Namespace, job.Name, p.Namespace, p.Name, err)
		}
	}
	if res, done, err := r.forgetState(ctx, p, forget); err != nil || !done {
		return res, err
	}
	if err := r.deleteRunnerIdentity(ctx, p); err != nil {
		return ctrl.Result{}, err
	}
	orig := p.DeepCopy()
	controllerutil.RemoveFinalizer(p, etlv1.Finalizer)
	if err := r.Client.Patch(ctx, p, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}), client.FieldOwner(FieldOwner)); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(fmt.Errorf("remove finalizer from pipeline %s/%s: %w", p.Namespace, p.Name, err))
	}
	return ctrl.Result{}, nil
}

// forgetState removes a deleted pipeline's state from the state database through its forget
// Job (the manager holds no credentials), and reports done once the Job ended or outlived
// ForgetDeadline. A state left behind harms nothing (a pipeline created again under the name
// has another UID and starts from an empty checkpoint), so the deletion never hangs on it: it
// goes on with a Warning event naming what is left.
func (r *ETLPipelineReconciler) forgetState(ctx context.Context, p *etlv1.ETLPipeline, job *batchv1.Job) (ctrl.Result, bool, error) {
	const poll = 2 * time.Second
	left := fmt.Sprintf("the state of pipeline %s/%s (uid %s) is left in etl_state and etl_runs", p.Namespace, p.Name, p.UID)
	if job == nil {
		want, err := BuildForgetJob(p, r.config(), r.Namespace, r.forgetDeadline())
		if err != nil {
			r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, "StateNotRemoved", "Delete", "%s: %s", left, redact(err.Error()))
			return ctrl.Result{}, true, nil
		}
		if err := r.Client.Create(ctx, want, client.FieldOwner(FieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
			return ctrl.Result{}, false, fmt.Errorf("create job %s/%s to remove the state of pipeline %s/%s: %w",
				want.Namespace, want.Name, p.Namespace, p.Name, err)
		}
		return ctrl.Result{RequeueAfter: poll}, false, nil
	}
	// The finished Job is left to its TTL rather than deleted here: should removing the
	// finalizer fail, the next pass finds the same verdict instead of starting another Job.
	outcome := jobOutcome(job)
	age := r.now().Sub(job.CreationTimestamp.Time)
	switch {
	case outcome == JobSucceeded:
		r.Recorder.Eventf(p, nil, corev1.EventTypeNormal, "StateRemoved", "Delete",
			"removed the state of the pipeline (uid %s) from etl_state and etl_runs", p.UID)
	case outcome == JobFailed:
		r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, "StateNotRemoved", "Delete", "%s: job %s failed: %s",
			left, job.Name, redact(jobFailureMessage(job)))
	case age > r.forgetDeadline():
		r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, "StateNotRemoved", "Delete", "%s: job %s did not finish within %s",
			left, job.Name, r.forgetDeadline())
	default:
		return ctrl.Result{RequeueAfter: poll}, false, nil
	}
	return ctrl.Result{}, true, nil
}

func (r *ETLPipelineReconciler) forgetDeadline() time.Duration {
	if r.ForgetDeadline > 0 {
		return r.ForgetDeadline
	}
	return 2 * time.Minute
}

// reconcileSpec validates the spec against the operator configuration. A problem is not
// returned at once: a run already in flight executes its own validated snapshot and must
// still be followed (paused, judged) to its end.
func (r *ETLPipelineReconciler) reconcileSpec(ctx context.Context, s *pass) (ctrl.Result, error) {
	s.tenant = tenant{Name: s.p.Namespace}
	ns := &corev1.Namespace{}
	if err := r.Client.Get(ctx, types.NamespacedName{Name: s.p.Namespace}, ns); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("get namespace %s of pipeline %s: %w", s.p.Namespace, s.p.Name, err)
	}
	s.tenant.Labels = ns.Labels
	s.target = checkTarget(&s.p.Spec, r.config())
	s.problem = validateSpec(&s.p.Spec, r.config(), s.tenant)
	if s.problem == nil && s.p.Spec.Schedule != "" {
		sched, err := parseSchedule(s.p.Spec.Schedule)
		if err != nil { // validateSpec parsed it already
			return ctrl.Result{}, reconcile.TerminalError(err)
		}
		s.sched = sched
	}
	return ctrl.Result{}, nil
}

// reconcileRunJob finds the Job of the current run and judges it.
func (r *ETLPipelineReconciler) reconcileRunJob(ctx context.Context, s *pass) (ctrl.Result, error) {
	s.outcome = JobAbsent
	run, phase := s.p.Status.Run, s.p.Status.Phase
	// A run at rest with no completion time was cancelled (or failed) before its claim: its
	// Job, if any, is looked at to be deleted.
	// So is the Job of a run whose runner did not start in time, which still has to go.
	if run == nil || run.JobName == "" || (!isActive(phase) && run.CompletionTime != nil && !runnerNotStarted(&s.p.Status)) {
		return ctrl.Result{}, nil
	}
	key := types.NamespacedName{Namespace: r.Namespace, Name: run.JobName}
	job := &batchv1.Job{}
	err := r.Client.Get(ctx, key, job)
	if apierrors.IsNotFound(err) && (phase == etlv1.PhaseRunning || phase == etlv1.PhasePauseRequested) {
		// A claimed run whose Job is gone is closed as failed: be sure, the cache may lag.
		err = r.APIReader.Get(ctx, key, job)
	}
	switch {
	case apierrors.IsNotFound(err):
		return ctrl.Result{}, nil
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("get job %s of pipeline %s/%s: %w", key, s.p.Namespace, s.p.Name, err)
	}
	s.job = job
	if isOurJob(job, s.p, run.ID) {
		s.outcome = jobOutcome(job)
	}
	return ctrl.Result{}, nil
}

// reconcilePhase runs the state machine and records the transition it decides.
func (r *ETLPipelineReconciler) reconcilePhase(ctx context.Context, s *pass) (ctrl.Result, error) {
	st := &s.p.Status
	if recovered, err := r.recoverEnd(ctx, s); err != nil || recovered {
		return ctrl.Result{}, err
	}
	if st.Phase == etlv1.PhasePaused && checkpointPending(st) {
		return ctrl.Result{}, nil // no run starts while a checkpoint request is carried out
	}
	trigger := pendingTrigger(s.p, s.now)
	desired := s.p.Spec.DesiredState
	if desired == "" {
		desired = etlv1.DesiredRunning
	}
	next, err := NextPhase(PhaseInput{
		Phase: st.Phase, Desired: desired, Request: trigger,
		SpecProblem: s.problem != nil, Job: s.outcome, InfraFailure: infraFailed(st), StartExpired: s.startExpired,
	})
	if err != nil {
		log.FromContext(ctx).V(1).Info("phase stays", "phase", st.Phase, "why", err.Error())
		return ctrl.Result{}, nil
	}
	if next == st.Phase {
		return ctrl.Result{}, nil
	}
	from := st.Phase
	switch {
	case next == etlv1.PhaseRunRequested:
		r.startRun(s, trigger)
	case from == etlv1.PhaseRunRequested && next == etlv1.PhaseFailed && s.startExpired && s.outcome == JobActive:
		// Its Job is deleted by the next pass (reconcileJob), once this is written.
		r.closeRunNotStarted(s)
	case isActive(from) && next == etlv1.PhaseFailed && (from != etlv1.PhaseRunRequested || s.outcome != JobAbsent):
		// A requested run failed for a bad spec before its Job existed is not closed: it
		// never started.
		if err := r.closeRunUnreported(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
	case from == etlv1.PhasePauseRequested && next == etlv1.PhasePaused && st.Run != nil:
		// The Job ended or vanished before the runner reported Paused: the run is over, at its
		// last committed checkpoint.
		st.Run.CompletionTime = &metav1.Time{Time: s.now}
		st.Run.Message = "the runner stopped without reporting; paused at the last committed checkpoint"
	}
	st.Phase = next
	s.moved = true
	return ctrl.Result{}, nil
}

// startRun records a new run: the Job is created in the next pass, once this is written.
func (r *ETLPipelineReconciler) startRun(s *pass, trigger etlv1.RunTrigger) {
	p := s.p
	id := r.newRunID()
	p.Status.Run = &etlv1.RunStatus{
		ID:         id,
		JobName:    JobName(p.Namespace, p.Name, id),
		Trigger:    trigger,
		Generation: p.Generation,
		StartTime:  &metav1.Time{Time: s.now},
	}
	// One run serves every request waiting now.
	if v := p.Annotations[etlv1.AnnotationRunRequestedAt]; v != "" {
		p.Status.LastHandledRunRequest = v
	}
	// A replay is a run request too, and only a run that replays serves it.
	if v := p.Annotations[etlv1.AnnotationReplayRejectsRequestedAt]; v != "" && trigger == etlv1.TriggerReplayRejects {
		p.Status.LastHandledReplayRequest = v
	}
	s.started = true
}

// closeRunUnreported closes a run whose Job failed, ended or vanished without the runner
// reporting the end: the runner cannot write any more, so the manager records the end on its
// behalf and says why in the Ready condition.
func (r *ETLPipelineReconciler) closeRunUnreported(ctx context.Context, s *pass) error {
	st := &s.p.Status
	run := st.Run
	if run == nil {
		return nil
	}
	reason, class, msg := etlv1.ReasonRunUnreported, etlv1.ErrorInfra, ""
	switch s.outcome {
	case JobFailed:
		reason = etlv1.ReasonJobFailed
		term, err := r.terminationMessage(ctx, s.job)
		if err != nil {
			return err
		}
		msg = fmt.Sprintf("job %s/%s failed", s.job.Namespace, s.job.Name)
		if why := jobFailureMessage(s.job); why != "" {
			msg += " (" + why + ")"
		}
		if term.exitCode == configv1.ExitBusiness {
			class = etlv1.ErrorBusiness
		}
		if term.exitCode != 0 {
			msg += fmt.Sprintf("; runner exited with code %d", term.exitCode)
		}
		if term.message != "" {
			msg += ": " + term.message
		}
	case JobSucceeded:
		msg = fmt.Sprintf("job %s/%s completed but the runner never reported the end of run %s", r.Namespace, run.JobName, run.ID)
	default:
		msg = fmt.Sprintf("job %s/%s disappeared before the runner reported the end of run %s", r.Namespace, run.JobName, run.ID)
	}
	msg = redact(msg)
	st.ConsecutiveFailures++
	run.CompletionTime = &metav1.Time{Time: s.now}
	run.ErrorClass = class
	run.Message = msg
	setReady(st, s.p.Generation, metav1.ConditionFalse, reason, msg)
	return nil
}

// termination is what a runner pod's container said when it stopped.
type termination struct {
	exitCode int32
	message  string
}

// jobPods returns the pods of a runner Job, straight from the API server (the manager caches
// no pods).
func (r *ETLPipelineReconciler) jobPods(ctx context.Context, job *batchv1.Job) ([]corev1.Pod, error) {
	pods := &corev1.PodList{}
	if err := r.APIReader.List(ctx, pods, client.InNamespace(job.Namespace), client.MatchingLabels{batchv1.JobNameLabel: job.Name}); err != nil {
		return nil, fmt.Errorf("list pods of job %s/%s: %w", job.Namespace, job.Name, err)
	}
	return pods.Items, nil
}

// terminationMessage returns the termination of the runner container of the Job's last pod:
// the runner writes its error there, or the kubelet falls back to the last log lines.
func (r *ETLPipelineReconciler) terminationMessage(ctx context.Context, job *batchv1.Job) (termination, error) {
	pods, err := r.jobPods(ctx, job)
	if err != nil {
		return termination{}, err
	}
	var best termination
	var bestAt time.Time
	for i := range pods {
		for _, cs := range pods[i].Status.ContainerStatuses {
			if cs.Name != runnerContainer {
				continue
			}
			t := cs.State.Terminated
			if t == nil {
				t = cs.LastTerminationState.Terminated
			}
			if t == nil || (!bestAt.IsZero() && !t.FinishedAt.After(bestAt)) {
				continue
			}
			bestAt = t.FinishedAt.Time
			best = termination{exitCode: t.ExitCode, message: redact(t.Message)}
		}
	}
	return best, nil
}

// reconcileJob carries out the side effects of the recorded phase: the Job of a requested run
// exists; the Job of a run cancelled before its claim is gone.
func (r *ETLPipelineReconciler) reconcileJob(ctx context.Context, s *pass) (ctrl.Result, error) {
	if s.moved {
		return ctrl.Result{}, nil
	}
	p := s.p
	switch phase := p.Status.Phase; {
	case phase == etlv1.PhaseRunRequested:
		return ctrl.Result{}, r.ensureJob(ctx, s)
	case !isActive(phase) && s.job != nil && s.outcome == JobActive && s.job.DeletionTimestamp.IsZero():
		if err := r.Client.Delete(ctx, s.job, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("delete job %s/%s of cancelled run %s of pipeline %s/%s: %w",
				s.job.Namespace, s.job.Name, p.Status.Run.ID, p.Namespace, p.Name, err)
		}
		log.FromContext(ctx).Info("deleted the job of a run cancelled before its claim", "job", s.job.Name, "run", p.Status.Run.ID)
	}
	return ctrl.Result{}, nil
}

// ensureJob creates the runner Job of the requested run, or adopts it when it exists and is
// ours. A Job of that name that is not ours, or a spec that changed since the run was
// recorded, re-plans the run under a new id: the Job always runs the generation the status
// records.
func (r *ETLPipelineReconciler) ensureJob(ctx context.Context, s *pass) error {
	p, run := s.p, s.p.Status.Run
	if run == nil {
		return fmt.Errorf("pipeline %s/%s is %s without a run", p.Namespace, p.Name, p.Status.Phase)
	}
	if s.job != nil {
		if isOurJob(s.job, p, run.ID) {
			return nil
		}
		r.replan(ctx, s, "a job of that name exists and is not ours")
		return nil
	}
	if run.Generation != p.Generation {
		r.replan(ctx, s, "the spec changed before the job was created")
		return nil
	}
	if err := r.ensureRunnerIdentity(ctx, p); err != nil {
		return err
	}
	job, err := BuildRunnerJob(RunnerJobParams{Pipeline: p, Run: run, Config: r.config(), Namespace: r.Namespace,
		NamespaceLabels: s.tenant.Labels})
	if err != nil {
		return reconcile.TerminalError(err)
	}
	err = r.Client.Create(ctx, job, client.FieldOwner(FieldOwner))
	if apierrors.IsAlreadyExists(err) {
		existing := &batchv1.Job{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(job), existing); err != nil {
			return fmt.Errorf("get existing job %s/%s: %w", job.Namespace, job.Name, err)
		}
		if !isOurJob(existing, p, run.ID) {
			r.replan(ctx, s, "a job of that name exists and is not ours")
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("create job %s/%s for run %s of pipeline %s/%s: %w", job.Namespace, job.Name, run.ID, p.Namespace, p.Name, err)
	}
	log.FromContext(ctx).Info("created runner job", "job", job.Name, "run", run.ID, "trigger", run.Trigger)
	r.Recorder.Eventf(p, nil, corev1.EventTypeNormal, "JobCreated", "CreateJob", "created job %s/%s for run %s (%s)", job.Namespace, job.Name, run.ID, run.Trigger)
	return nil
}

// replan gives the requested run a new id (and Job name) and the current generation.
func (r *ETLPipelineReconciler) replan(ctx context.Context, s *pass, why string) {
	old := s.p.Status.Run
	log.FromContext(ctx).Info("re-planning the requested run", "run", old.ID, "why", why)
	r.startRun(s, old.Trigger)
	s.moved = true
}

// reconcileSchedule keeps status.nextScheduledRun and wakes the pipeline up for the tick.
func (r *ETLPipelineReconciler) reconcileSchedule(_ context.Context, s *pass) (ctrl.Result, error) {
	st := &s.p.Status
	st.NextScheduledRun = nextTick(s.p, st.Phase, s.sched, s.now, s.started)
	if st.NextScheduledRun == nil {
		return ctrl.Result{}, nil
	}
	wait := st.NextScheduledRun.Sub(s.now)
	if wait <= 0 {
		// Due while a run is in flight: the run's end (a phase change) wakes the pipeline.
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: r.jitter(wait)}, nil
}

// patchStatus writes the status once, at the end of the pass, and only when it changed.
// The merge patch carries only what changed, and the resourceVersion the pass read: a runner
// write in between makes it fail with a conflict instead of being overwritten, and the pass is
// retried on the fresh object (requeue is true then).
func (r *ETLPipelineReconciler) patchStatus(ctx context.Context, base *etlv1.ETLPipeline, s *pass, passErr error) (requeue bool, err error) {
	p := s.p
	gen := base.Status.ObservedGeneration
	if passErr == nil || errors.Is(passErr, reconcile.TerminalError(nil)) {
		gen = p.Generation
	}
	p.Status.ObservedGeneration = gen
	setConditions(&p.Status, conditionInput{Generation: gen, Problem: s.problem, Target: s.target})
	setStartupCondition(&p.Status, gen, s.startup)
	if equality.Semantic.DeepEqual(base.Status, p.Status) {
		return false, nil
	}
	patch := client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})
	if err := r.Client.Status().Patch(ctx, p, patch, client.FieldOwner(FieldOwner)); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			log.FromContext(ctx).V(1).Info("status changed under this pass; retrying", "error", err.Error())
			return !apierrors.IsNotFound(err), nil
		}
		return false, fmt.Errorf("patch status of pipeline %s/%s: %w", p.Namespace, p.Name, err)
	}
	r.recordTransition(base, p)
	r.recordRunEnded(base, p)
	r.recordStall(base, p)
	return false, nil
}

// recordStall emits a Warning event when a run has just passed its progress deadline.
func (r *ETLPipelineReconciler) recordStall(base, p *etlv1.ETLPipeline) {
	c := meta.FindStatusCondition(p.Status.Conditions, etlv1.ConditionProgressing)
	if c == nil || c.Status != metav1.ConditionFalse {
		return
	}
	if old := meta.FindStatusCondition(base.Status.Conditions, etlv1.ConditionProgressing); old != nil && old.Status == c.Status {
		return
	}
	r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, c.Reason, "Run", "%s", c.Message)
}

// recordTransition emits an event when the Ready condition changed reason or status: that is
// every phase transition, the runner's included (the manager sees them as a new phase).
func (r *ETLPipelineReconciler) recordTransition(base, p *etlv1.ETLPipeline) {
	oldReason, oldStatus, _ := readyReason(&base.Status)
	reason, status, msg := readyReason(&p.Status)
	if reason == "" || (reason == oldReason && status == oldStatus) {
		return
	}
	eventType := corev1.EventTypeNormal
	if status == metav1.ConditionFalse {
		eventType = corev1.EventTypeWarning
	}
	phase := string(p.Status.Phase)
	if phase == "" {
		phase = "Reconcile"
	}
	r.Recorder.Eventf(p, nil, eventType, reason, phase, "%s", msg)
}

// setReady records the Ready condition of a failure the manager observed; setConditions keeps
// it afterwards (see failedReady), since the pod that explained it may be gone by then.
func setReady(st *etlv1.ETLPipelineStatus, gen int64, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: etlv1.ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
	})
}
