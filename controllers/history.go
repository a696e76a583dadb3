package controllers

import (
	"context"
	"fmt"
	"sort"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// One Job per run would pile up in the operator's namespace: the manager keeps the Jobs (and
// so the pod logs) of the last runner.jobHistory.successful and .failed runs of a pipeline,
// like a CronJob's history limits, and the TTL collects what is left after a day.

// jobsToPrune returns the finished Jobs beyond the newest keepOK succeeded and keepFailed
// failed ones, never the current run's Job nor a forget Job. Pure, so it is table-tested.
func jobsToPrune(jobs []batchv1.Job, current string, keepOK, keepFailed int) []*batchv1.Job {
	var ok, failed []*batchv1.Job
	for i := range jobs {
		j := &jobs[i]
		if j.Name == current || isForgetJob(j) || isCheckpointJob(j) || !j.DeletionTimestamp.IsZero() {
			continue
		}
		switch jobOutcome(j) {
		case JobSucceeded:
			ok = append(ok, j)
		case JobFailed:
			failed = append(failed, j)
		}
	}
	newestFirst := func(js []*batchv1.Job) {
		sort.SliceStable(js, func(a, b int) bool {
			if !js[a].CreationTimestamp.Equal(&js[b].CreationTimestamp) {
				return js[b].CreationTimestamp.Before(&js[a].CreationTimestamp)
			}
			return js[a].Name > js[b].Name
		})
	}
	newestFirst(ok)
	newestFirst(failed)
	var out []*batchv1.Job
	if len(ok) > keepOK {
		out = append(out, ok[keepOK:]...)
	}
	if len(failed) > keepFailed {
		out = append(out, failed[keepFailed:]...)
	}
	return out
}

// reconcileHistory deletes the runner Jobs beyond the history limits.
func (r *ETLPipelineReconciler) reconcileHistory(ctx context.Context, s *pass) (ctrl.Result, error) {
	jobs := &batchv1.JobList{}
	if err := r.Client.List(ctx, jobs, client.InNamespace(r.Namespace), client.MatchingLabels(pipelineSelector(s.p.Namespace, s.p.Name))); err != nil {
		return ctrl.Result{}, fmt.Errorf("list jobs of pipeline %s/%s: %w", s.p.Namespace, s.p.Name, err)
	}
	current := ""
	if s.p.Status.Run != nil {
		current = s.p.Status.Run.JobName
	}
	keepOK, keepFailed := r.config().Runner.JobHistoryLimits()
	for _, j := range jobsToPrune(jobs.Items, current, keepOK, keepFailed) {
		if j.Annotations[etlv1.AnnotationPipeline] != s.p.Namespace+"/"+s.p.Name {
			continue
		}
		if err := r.Client.Delete(ctx, j, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("delete old job %s/%s of pipeline %s/%s: %w", j.Namespace, j.Name, s.p.Namespace, s.p.Name, err)
		}
		log.FromContext(ctx).V(1).Info("deleted an old runner job", "job", j.Name)
	}
	return ctrl.Result{}, nil
}
