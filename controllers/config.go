package controllers

import (
	"context"
	"fmt"
	"reflect"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// The operator configuration (connections, whitelist, runner settings) changes without a
// manager restart: the manager watches its ConfigMap, validates a new version, and keeps the
// old one, with a Warning event on the ConfigMap, when the new one is invalid. A valid change
// is swapped in whole and every pipeline is reconciled again, so a pipeline that became
// allowed leaves Failed by itself and a runner Job created afterwards gets the new settings
// (the runner reads the same ConfigMap).

// ConfigStore holds the operator configuration the manager acts on.
type ConfigStore struct {
	p atomic.Pointer[configv1.OperatorConfig]
}

// NewConfigStore returns a store holding cfg.
func NewConfigStore(cfg *configv1.OperatorConfig) *ConfigStore {
	s := &ConfigStore{}
	s.p.Store(cfg)
	return s
}

// Get returns the configuration in force.
func (s *ConfigStore) Get() *configv1.OperatorConfig { return s.p.Load() }

// ConfigReconciler reloads the operator configuration from its ConfigMap.
type ConfigReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	Store    *ConfigStore
	// Namespace, Name and Key locate the configuration: runner.configMapName and
	// runner.configMapKey in the operator's namespace.
	Namespace, Name, Key string
	// Changed receives an event per pipeline after a valid change (the pipeline
	// controller's channel source).
	Changed chan<- event.GenericEvent
	// Policy, when set, keeps the grants admission policy in line with the configuration in
	// force, at start and after every valid change.
	Policy *GrantsPolicy
}

// Reconcile implements reconcile.Reconciler.
func (c *ConfigReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	cm := &corev1.ConfigMap{}
	if err := c.Client.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: c.Name}, cm); err != nil {
		if apierrors.IsNotFound(err) {
			log.FromContext(ctx).Info("the operator's ConfigMap is gone; keeping the configuration in force", "configMap", c.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get configmap %s/%s: %w", c.Namespace, c.Name, err)
	}
	data, ok := cm.Data[c.Key]
	if !ok {
		c.Recorder.Eventf(cm, nil, corev1.EventTypeWarning, "InvalidConfig", "Reload",
			"key %q is missing: the configuration in force is kept", c.Key)
		return ctrl.Result{}, nil
	}
	cfg, err := configv1.Parse([]byte(data))
	if err != nil {
		c.Recorder.Eventf(cm, nil, corev1.EventTypeWarning, "InvalidConfig", "Reload",
			"%s: the configuration in force is kept", redact(err.Error()))
		log.FromContext(ctx).Error(err, "invalid operator configuration; keeping the one in force")
		return ctrl.Result{}, nil
	}
	// The policy is a second line: a policy that cannot be written (an API server before
	// 1.30, a missing permission) does not hold the configuration back; it is tried again.
	var res ctrl.Result
	if c.Policy != nil {
		if err := c.Policy.Apply(ctx, cfg); err != nil {
			c.Recorder.Eventf(cm, nil, corev1.EventTypeWarning, "AdmissionPolicyNotWritten", "Reload",
				"the grants admission policy %s was not written (the reconciler and the runner still judge the grants): %v",
				GrantsPolicyName, err)
			log.FromContext(ctx).Error(err, "the grants admission policy was not written", "policy", GrantsPolicyName)
			res.RequeueAfter = time.Minute
		}
	}
	if reflect.DeepEqual(cfg, c.Store.Get()) {
		return res, nil
	}
	c.Store.p.Store(cfg)
	pipelines := &etlv1.ETLPipelineList{}
	if err := c.Client.List(ctx, pipelines); err != nil {
		return ctrl.Result{}, fmt.Errorf("list pipelines after a configuration change: %w", err)
	}
	c.Recorder.Eventf(cm, nil, corev1.EventTypeNormal, "ConfigReloaded", "Reload",
		"operator configuration reloaded: %d postgres and %d elasticsearch connections; %d pipelines re-checked",
		len(cfg.Postgres), len(cfg.Elasticsearch), len(pipelines.Items))
	log.FromContext(ctx).Info("operator configuration reloaded", "pipelines", len(pipelines.Items))
	for i := range pipelines.Items {
		select {
		case c.Changed <- event.GenericEvent{Object: &pipelines.Items[i]}:
		case <-ctx.Done():
			return ctrl.Result{}, ctx.Err()
		}
	}
	return res, nil
}

// SetupWithManager registers the reconciler for the one ConfigMap.
func (c *ConfigReconciler) SetupWithManager(mgr ctrl.Manager) error {
	named := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == c.Namespace && o.GetName() == c.Name
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("operatorconfig").
		For(&corev1.ConfigMap{}, builder.WithPredicates(named)).
		Complete(c)
}
