package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// A requested run waits for its runner to claim it. A pod that cannot start (a missing
// Secret or key, an image that cannot be pulled, no node that fits, an exhausted quota that
// lets no pod be created) would leave it RunRequested forever: the manager looks at the Job's
// pods while it waits, says why in the RunnerStarted condition as soon as a pod shows it, and
// after runner.startDeadline ends the run Failed with reason RunnerNotStarted. The failure is
// an infrastructure one: a later schedule tick, a spec change or a run request tries again.

// startProblem is why a run's runner pod has not started.
type startProblem struct {
	Reason, Message string
}

// waitingReasons are the container waiting reasons that will not pass by themselves soon.
var waitingReasons = map[string]bool{
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
	"ErrImagePull":               true,
	"ImagePullBackOff":           true,
	"InvalidImageName":           true,
	"RunContainerError":          true,
	"ErrImageNeverPull":          true,
}

// noPodAfter is how long a Job may exist without a pod before that is a problem.
const noPodAfter = 30 * time.Second

// podProblem tells why the runner of a Job created at jobCreated has not started, from the
// Job's pods, nil when nothing is wrong yet. It is pure, so it is table-tested.
func podProblem(pods []corev1.Pod, jobName string, jobCreated, now time.Time) *startProblem {
	if len(pods) == 0 {
		if now.Sub(jobCreated) < noPodAfter {
			return nil
		}
		return &startProblem{Reason: "NoPod", Message: fmt.Sprintf(
			"job %s has created no pod for %s (a resource quota or an admission policy may refuse it: see the job's events)",
			jobName, now.Sub(jobCreated).Round(time.Second))}
	}
	for i := range pods {
		pod := &pods[i]
		for _, cs := range pod.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && waitingReasons[w.Reason] {
				return &startProblem{Reason: w.Reason, Message: fmt.Sprintf("pod %s: %s", pod.Name, strings.TrimSpace(w.Message))}
			}
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return &startProblem{Reason: corev1.PodReasonUnschedulable, Message: fmt.Sprintf("pod %s: %s", pod.Name, c.Message)}
			}
		}
	}
	return nil
}

// reconcileStartup watches the pods of a requested run that no runner has claimed yet.
func (r *ETLPipelineReconciler) reconcileStartup(ctx context.Context, s *pass) (ctrl.Result, error) {
	st := &s.p.Status
	if st.Phase != etlv1.PhaseRunRequested || s.job == nil || s.outcome != JobActive || st.Run == nil || st.Run.StartTime == nil {
		return ctrl.Result{}, nil
	}
	pods, err := r.jobPods(ctx, s.job)
	if err != nil {
		return ctrl.Result{}, err
	}
	s.startup = podProblem(pods, s.job.Name, s.job.CreationTimestamp.Time, s.now)
	deadline := r.config().Runner.StartupDeadline()
	waited := s.now.Sub(st.Run.StartTime.Time)
	if waited >= deadline {
		s.startExpired = true
		return ctrl.Result{}, nil
	}
	// Look again soon: a pod's waiting reason is not an event the manager watches.
	return ctrl.Result{RequeueAfter: min(5*time.Second, deadline-waited)}, nil
}

// closeRunNotStarted ends a run whose runner did not start within the deadline.
func (r *ETLPipelineReconciler) closeRunNotStarted(s *pass) {
	st := &s.p.Status
	why := "its pod did not start"
	if s.startup != nil {
		why = s.startup.Reason + ": " + s.startup.Message
	}
	msg := redact(fmt.Sprintf("the runner of run %s did not start within %s (runner.startDeadline): %s",
		st.Run.ID, r.config().Runner.StartupDeadline(), why))
	st.ConsecutiveFailures++
	st.Run.CompletionTime = &metav1.Time{Time: s.now}
	st.Run.ErrorClass = etlv1.ErrorInfra
	st.Run.Message = msg
	setReady(st, s.p.Generation, metav1.ConditionFalse, etlv1.ReasonRunnerNotStarted, msg)
}

// setStartupCondition keeps RunnerStarted: False with the pod's reason while a requested run's
// pod cannot start, absent otherwise.
func setStartupCondition(st *etlv1.ETLPipelineStatus, gen int64, problem *startProblem) {
	if st.Phase != etlv1.PhaseRunRequested || problem == nil {
		meta.RemoveStatusCondition(&st.Conditions, etlv1.ConditionRunnerStarted)
		return
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: etlv1.ConditionRunnerStarted, Status: metav1.ConditionFalse, Reason: problem.Reason,
		Message: redact(problem.Message), ObservedGeneration: gen,
	})
}

// runnerNotStarted reports whether the pipeline failed because its last run's runner did not
// start: that run's Job may still exist, and must be deleted.
func runnerNotStarted(st *etlv1.ETLPipelineStatus) bool {
	c := meta.FindStatusCondition(st.Conditions, etlv1.ConditionReady)
	return st.Phase == etlv1.PhaseFailed && c != nil && c.Reason == etlv1.ReasonRunnerNotStarted
}
