package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// A person moves a paused pipeline's checkpoint with the checkpoint-request annotation
// (kubectl sluice checkpoint reset|set). The manager never touches data: it judges the
// request, then a `sluice runner --checkpoint` Job carries it out under the pipeline's lock
// and leaves its end as the termination message, which the manager records in
// status.checkpointRequest, the checkpoint and an event naming who asked. No run starts
// while the Job is pending.

// checkpointRunPrefix starts the run id of a checkpoint Job.
const checkpointRunPrefix = "cp-"

// checkpointRunID is the run id (and so the Job name) of a checkpoint request.
func checkpointRunID(requestID string) string { return checkpointRunPrefix + shortHash(requestID, 8) }

// isCheckpointJob reports whether job carries out a checkpoint request.
func isCheckpointJob(job *batchv1.Job) bool {
	return strings.HasPrefix(job.Labels[etlv1.LabelRunID], checkpointRunPrefix)
}

// parseCheckpointRequest reads the checkpoint-request annotation.
func parseCheckpointRequest(raw string) (etlv1.CheckpointRequest, error) {
	var req etlv1.CheckpointRequest
	if err := json.Unmarshal([]byte(raw), &req); err != nil {
		return req, fmt.Errorf("the %s annotation is not a checkpoint request: %w", etlv1.AnnotationCheckpointRequest, err)
	}
	if req.ID == "" {
		return req, fmt.Errorf("the %s annotation has no id", etlv1.AnnotationCheckpointRequest)
	}
	return req, nil
}

// CheckpointRefusal says why a checkpoint request may not be carried out now, "" when it
// may: only a pipeline that is Paused and meant to stay so, with a well-formed request. Pure,
// so it is table-tested.
func CheckpointRefusal(p *etlv1.ETLPipeline, req etlv1.CheckpointRequest) string {
	switch {
	case p.Status.Phase != etlv1.PhasePaused || p.Spec.DesiredState != etlv1.DesiredPaused:
		phase := p.Status.Phase
		if phase == "" {
			phase = "new"
		}
		return fmt.Sprintf("the pipeline is %s: its checkpoint changes only while it is Paused (kubectl sluice pause %s, wait for Paused, then ask again)",
			phase, p.Name)
	case req.Action != etlv1.CheckpointReset && req.Action != etlv1.CheckpointSet:
		return fmt.Sprintf("unknown action %q: Reset or Set", req.Action)
	case req.Action == etlv1.CheckpointSet && len(req.Values) == 0:
		return "Set needs the checkpoint's values: the cursor column's, then the key columns'"
	case req.Action == etlv1.CheckpointSet && p.Spec.Mode == etlv1.ModeCDC:
		return "Set applies to an Incremental pipeline: a CDC pipeline's checkpoint is its replication slot's position (Reset instead: the next run copies the table again)"
	case req.Action == etlv1.CheckpointSet && p.Spec.Mode != etlv1.ModeIncremental:
		return "Set applies to an Incremental pipeline: a Full run reads its whole source (Reset instead)"
	case req.Action == etlv1.CheckpointReset && len(req.Values) > 0:
		return "Reset takes no values"
	}
	return ""
}

// checkpointPending reports whether a checkpoint request is being carried out: no run starts
// until it ends.
func checkpointPending(st *etlv1.ETLPipelineStatus) bool {
	return st.CheckpointRequest != nil && st.CheckpointRequest.Outcome == etlv1.CheckpointPending
}

// reconcileCheckpoint judges a new checkpoint request, starts its Job, and records the end
// of a pending one.
func (r *ETLPipelineReconciler) reconcileCheckpoint(ctx context.Context, s *pass) (ctrl.Result, error) {
	p := s.p
	st := &p.Status
	if checkpointPending(st) {
		return r.watchCheckpoint(ctx, s)
	}
	raw := p.Annotations[etlv1.AnnotationCheckpointRequest]
	if raw == "" || s.moved {
		return ctrl.Result{}, nil
	}
	req, err := parseCheckpointRequest(raw)
	id := req.ID
	if id == "" {
		id = shortHash(raw, 16)
	}
	if st.CheckpointRequest != nil && st.CheckpointRequest.ID == id {
		return ctrl.Result{}, nil // handled
	}
	by := p.Annotations[etlv1.AnnotationCheckpointRequestedBy]
	now := metav1.NewTime(s.now)
	cr := &etlv1.CheckpointRequestStatus{ID: id, Action: req.Action, Values: req.Values, RequestedBy: by, Time: &now}
	refusal := CheckpointRefusal(p, req)
	if err != nil {
		refusal = err.Error()
	}
	if refusal != "" {
		cr.Outcome, cr.Message = etlv1.CheckpointRefused, refusal
		st.CheckpointRequest = cr
		r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, "CheckpointRefused", "Checkpoint",
			"checkpoint %s requested by %s refused: %s", strings.ToLower(string(req.Action)), orUnknown(by), refusal)
		return ctrl.Result{}, nil
	}
	job, err := BuildCheckpointJob(p, r.config(), r.Namespace, req, by)
	if err != nil {
		// A connection the spec names is missing from the configuration: said in the status.
		cr.Outcome, cr.Message = etlv1.CheckpointRefused, err.Error()
		st.CheckpointRequest = cr
		return ctrl.Result{}, nil //nolint:nilerr // the refusal is the outcome, recorded above
	}
	if err := r.Client.Create(ctx, job); err != nil && !apierrors.IsAlreadyExists(err) {
		return ctrl.Result{}, fmt.Errorf("create checkpoint job of pipeline %s/%s: %w", p.Namespace, p.Name, err)
	}
	cr.Outcome, cr.JobName = etlv1.CheckpointPending, job.Name
	st.CheckpointRequest = cr
	r.Recorder.Eventf(p, nil, corev1.EventTypeNormal, "CheckpointRequested", "Checkpoint",
		"checkpoint %s requested by %s: job %s", strings.ToLower(string(req.Action)), orUnknown(by), job.Name)
	return ctrl.Result{}, nil
}

// watchCheckpoint records the end of the pending checkpoint request's Job.
func (r *ETLPipelineReconciler) watchCheckpoint(ctx context.Context, s *pass) (ctrl.Result, error) {
	p := s.p
	cr := p.Status.CheckpointRequest
	job := &batchv1.Job{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: cr.JobName}, job)
	switch {
	case apierrors.IsNotFound(err):
		job = nil
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("get checkpoint job %s: %w", cr.JobName, err)
	}
	outcome := jobOutcome(job)
	if outcome == JobActive {
		return ctrl.Result{}, nil // the Job's end brings the next pass
	}
	end := configv1.CheckpointEnd{Outcome: string(etlv1.CheckpointFailed), Message: "the checkpoint job vanished before it ended"}
	if job != nil {
		term, err := r.terminationMessage(ctx, job)
		if err != nil {
			return ctrl.Result{}, err
		}
		if jerr := json.Unmarshal([]byte(term.message), &end); jerr != nil || end.ID != cr.ID {
			end = configv1.CheckpointEnd{Outcome: string(etlv1.CheckpointFailed),
				Message: "the checkpoint job ended without saying how: " + orUnknown(jobFailureMessage(job))}
		}
	}
	now := metav1.NewTime(s.now)
	cr.Time, cr.Message = &now, redact(end.Message)
	if end.Outcome != string(etlv1.CheckpointDone) {
		cr.Outcome = etlv1.CheckpointFailed
		r.Recorder.Eventf(p, nil, corev1.EventTypeWarning, "CheckpointFailed", "Checkpoint",
			"checkpoint %s requested by %s failed: %s", strings.ToLower(string(cr.Action)), orUnknown(cr.RequestedBy), cr.Message)
		return ctrl.Result{}, nil
	}
	cr.Outcome = etlv1.CheckpointDone
	reason, what := "CheckpointReset", "reset: the next run reads the source from the start"
	p.Status.Checkpoint = nil
	if cr.Action == etlv1.CheckpointSet {
		values := end.Values
		if r.config().Redaction.RedactCheckpoint(p.Spec.Target.Name) {
			values = make([]string, len(values))
			for i := range values {
				values[i] = "****"
			}
		}
		p.Status.Checkpoint = &etlv1.CheckpointStatus{Values: values, Time: &now}
		reason, what = "CheckpointSet", fmt.Sprintf("set to (%s): the next run reads the rows after it", strings.Join(values, ", "))
	}
	cr.Message = "checkpoint " + what
	r.Recorder.Eventf(p, nil, corev1.EventTypeNormal, reason, "Checkpoint", "checkpoint %s, as %s asked (request %s)",
		what, orUnknown(cr.RequestedBy), cr.ID)
	return ctrl.Result{}, nil
}

// BuildCheckpointJob builds the Job that carries out a checkpoint request: a runner Job of
// the pipeline's spec with --checkpoint and the request, under a run id of its own, without
// a token (it writes only the state database; the manager records its end).
func BuildCheckpointJob(p *etlv1.ETLPipeline, cfg *configv1.OperatorConfig, namespace string, req etlv1.CheckpointRequest, by string) (*batchv1.Job, error) {
	run := &etlv1.RunStatus{ID: checkpointRunID(req.ID), Generation: p.Generation}
	job, err := BuildRunnerJob(RunnerJobParams{Pipeline: p, Run: run, Config: cfg, Namespace: namespace})
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	pod := &job.Spec.Template.Spec
	pod.ServiceAccountName = ""
	pod.AutomountServiceAccountToken = ptr.To(false)
	c := &pod.Containers[0]
	c.Args = append(c.Args, "--checkpoint")
	c.Env = append(c.Env,
		corev1.EnvVar{Name: configv1.EnvCheckpointRequest, Value: string(raw)},
		corev1.EnvVar{Name: configv1.EnvCheckpointRequestedBy, Value: by})
	job.Spec.BackoffLimit = ptr.To(int32(1))
	return job, nil
}
