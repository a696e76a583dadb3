package main

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// binder is the scheduler of a one-node cluster: it binds every unscheduled pod of the
// default scheduler to the agent's node. It uses kube-scheduler's credentials, because the
// NodeRestriction admission plugin forbids a node to bind pods.
type binder struct {
	a      *agent
	lister corelisters.PodLister
	queue  workqueue.TypedRateLimitingInterface[string]
}

// schedulable reports whether the binder should bind pod.
func schedulable(pod *corev1.Pod) bool {
	return pod.Spec.NodeName == "" && pod.DeletionTimestamp == nil && !isTerminal(pod) &&
		(pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == corev1.DefaultSchedulerName)
}

func (a *agent) newBinder(f informers.SharedInformerFactory) (*binder, error) {
	b := &binder{
		a:      a,
		lister: f.Core().V1().Pods().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "bind"}),
	}
	add := func(obj any) {
		if pod, ok := obj.(*corev1.Pod); ok && schedulable(pod) {
			b.queue.Add(pod.Namespace + "/" + pod.Name)
		}
	}
	_, err := f.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    add,
		UpdateFunc: func(_, obj any) { add(obj) },
	})
	if err != nil {
		return nil, fmt.Errorf("watch unscheduled pods: %w", err)
	}
	return b, nil
}

func (b *binder) run(ctx context.Context) {
	for {
		key, quit := b.queue.Get()
		if quit {
			return
		}
		if err := b.bind(ctx, key); err != nil {
			b.a.log.Warn("bind pod", "pod", key, "error", err.Error())
			b.queue.AddRateLimited(key)
		} else {
			b.queue.Forget(key)
		}
		b.queue.Done(key)
	}
}

func (b *binder) bind(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil //nolint:nilerr // a malformed key cannot be retried into shape
	}
	pod, err := b.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !schedulable(pod) {
		return nil
	}
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: b.a.o.nodeName},
	}
	err = b.a.sched.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
	switch {
	case err == nil:
		b.a.log.Info("bound pod", "pod", key, "node", b.a.o.nodeName)
		return nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return nil // gone, or bound meanwhile
	default:
		return fmt.Errorf("bind %s to %s: %w", key, b.a.o.nodeName, err)
	}
}
