package controllers

import (
	"context"
	"fmt"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// ControllerName names the controller, its event source and its field owner.
const ControllerName = "sluice-manager"

// CacheOptions limits the manager's Job cache to the runner Jobs of the operator's namespace,
// and its ConfigMap cache to that namespace: the manager needs no other, and its RBAC grants
// none.
func CacheOptions(namespace string) cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&batchv1.Job{}: {
				Namespaces: map[string]cache.Config{namespace: {}},
				Label:      labels.SelectorFromSet(runnerSelector),
			},
			// The operator's own ConfigMap, reloaded when it changes.
			&corev1.ConfigMap{}: {Namespaces: map[string]cache.Config{namespace: {}}},
		},
	}
}

// SetupWithManager registers the reconciler: pipelines filtered to the changes that matter,
// runner Jobs unfiltered and mapped back to their pipeline by label.
func (r *ETLPipelineReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	if r.config() == nil || r.Namespace == "" {
		return fmt.Errorf("setup %s: the operator configuration and namespace are required", ControllerName)
	}
	if err := registerMetrics(&PipelineCollector{Reader: mgr.GetClient()}); err != nil {
		return fmt.Errorf("setup %s: register metrics: %w", ControllerName, err)
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("etlpipeline").
		For(&etlv1.ETLPipeline{}, builder.WithPredicates(PipelineChanged())).
		Watches(&batchv1.Job{}, handler.EnqueueRequestsFromMapFunc(jobToPipeline)).
		// A namespace's labels may grant it a connection or a target (or take one away).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.namespacePipelines),
			builder.WithPredicates(predicate.LabelChangedPredicate{}))
	if r.ConfigChanged != nil {
		b = b.WatchesRawSource(source.Channel(r.ConfigChanged, &handler.EnqueueRequestForObject{}))
	}
	return b.WithOptions(opts).Complete(r)
}

// PipelineChanged lets through the pipeline updates the manager acts on: a new generation, a
// new run-requested-at, a deletion, and a new phase or run id (the runner's claim and end, and
// the manager's own transitions, whose side effects run in the next pass). The runner's
// progress (rows, batches, checkpoint) and the manager's own condition updates are filtered
// out: they need no pass, and letting them in would make every write trigger another pass.
func PipelineChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, okOld := e.ObjectOld.(*etlv1.ETLPipeline)
			n, okNew := e.ObjectNew.(*etlv1.ETLPipeline)
			if !okOld || !okNew {
				return true
			}
			return o.Generation != n.Generation ||
				o.Annotations[etlv1.AnnotationRunRequestedAt] != n.Annotations[etlv1.AnnotationRunRequestedAt] ||
				o.Annotations[etlv1.AnnotationReplayRejectsRequestedAt] != n.Annotations[etlv1.AnnotationReplayRejectsRequestedAt] ||
				o.Annotations[etlv1.AnnotationCheckpointRequest] != n.Annotations[etlv1.AnnotationCheckpointRequest] ||
				!o.DeletionTimestamp.Equal(n.DeletionTimestamp) ||
				o.Status.Phase != n.Status.Phase ||
				runID(o) != runID(n)
		},
	}
}

func runID(p *etlv1.ETLPipeline) string {
	if p.Status.Run == nil {
		return ""
	}
	return p.Status.Run.ID
}

// namespacePipelines maps a namespace to its pipelines.
func (r *ETLPipelineReconciler) namespacePipelines(ctx context.Context, obj client.Object) []reconcile.Request {
	list := &etlv1.ETLPipelineList{}
	if err := r.Client.List(ctx, list, client.InNamespace(obj.GetName())); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list the pipelines of a relabelled namespace", "namespace", obj.GetName())
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return out
}

// jobToPipeline maps a runner Job to its pipeline: by the annotation holding the full
// namespace/name (labels may be hashed), else by the labels.
func jobToPipeline(_ context.Context, obj client.Object) []reconcile.Request {
	l := obj.GetLabels()
	if l[labelManagedBy] != managedBy || l[labelComponent] != componentRunner {
		return nil
	}
	ns, name, ok := strings.Cut(obj.GetAnnotations()[etlv1.AnnotationPipeline], "/")
	if !ok {
		ns, name = l[etlv1.LabelPipelineNamespace], l[etlv1.LabelPipelineName]
	}
	if ns == "" || name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
}
