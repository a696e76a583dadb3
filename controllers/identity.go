package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// Each pipeline's runner acts as a service account of its own, made for the pipeline in the
// operator's namespace (where its Job runs), and bound by a Role in the pipeline's namespace
// to that one pipeline by name: it may get it and write its status, and create events there.
// It cannot list or watch pipelines, nor read another pipeline's spec, nor write another's
// status. The account is named after the pipeline's UID, so a pipeline deleted and created
// again under the same name gets a new account, and the tokens of the old one stop working.
//
// A ValidatingAdmissionPolicy (config/rbac/runner_policy.yaml) narrows a status write further
// to the pod of the Job the status records, by the pod name the kubelet-issued token carries.

// runnerAccountPrefix starts the name of every runner service account; the admission policy
// matches it.
const runnerAccountPrefix = "sluice-run-"

// RunnerServiceAccount is the name of the service account of p's runners, in the operator's
// namespace.
func RunnerServiceAccount(p *etlv1.ETLPipeline) string {
	return runnerAccountPrefix + shortHash(p.Namespace+"/"+p.Name+"/"+string(p.UID), 16)
}

// runnerRoleName names the Role and RoleBinding of p's runners in p's namespace.
func runnerRoleName(p *etlv1.ETLPipeline) string {
	if name := "sluice-runner-" + p.Name; len(name) <= validation.DNS1123SubdomainMaxLength {
		return name
	}
	return "sluice-runner-" + shortHash(p.Name, 16)
}

// runnerRules is what a runner may do: read its pipeline, write its status, record events.
func runnerRules(p *etlv1.ETLPipeline) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{etlv1.GroupVersion.Group}, Resources: []string{"etlpipelines"}, ResourceNames: []string{p.Name}, Verbs: []string{"get"}},
		{APIGroups: []string{etlv1.GroupVersion.Group}, Resources: []string{"etlpipelines/status"}, ResourceNames: []string{p.Name}, Verbs: []string{"get", "update", "patch"}},
		{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create"}},
	}
}

// runnerIdentity returns the service account, Role and RoleBinding of p's runners. Pure.
func runnerIdentity(p *etlv1.ETLPipeline, operatorNamespace string) (*corev1.ServiceAccount, *rbacv1.Role, *rbacv1.RoleBinding) {
	labels := pipelineSelector(p.Namespace, p.Name)
	annotations := map[string]string{etlv1.AnnotationPipeline: p.Namespace + "/" + p.Name}
	// The Role and its binding live beside the pipeline and go with it; the account lives in
	// the operator's namespace, which an owner reference cannot cross, and goes in
	// reconcileDelete.
	owner := []metav1.OwnerReference{{APIVersion: etlv1.GroupVersion.String(), Kind: "ETLPipeline", Name: p.Name, UID: p.UID}}
	sa := &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Namespace: operatorNamespace, Name: RunnerServiceAccount(p), Labels: labels, Annotations: annotations},
	}
	meta := metav1.ObjectMeta{Namespace: p.Namespace, Name: runnerRoleName(p), Labels: labels, Annotations: annotations, OwnerReferences: owner}
	role := &rbacv1.Role{ObjectMeta: meta, Rules: runnerRules(p)}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: *meta.DeepCopy(),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: operatorNamespace, Name: sa.Name}},
	}
	return sa, role, binding
}

// ensureRunnerIdentity creates the service account, Role and RoleBinding of p's runners
// before their first Job. Their names are deterministic and their content fixed by the
// pipeline's name and UID, so an existing object is the one wanted.
func (r *ETLPipelineReconciler) ensureRunnerIdentity(ctx context.Context, p *etlv1.ETLPipeline) error {
	sa, role, binding := runnerIdentity(p, r.Namespace)
	for _, obj := range []client.Object{sa, role, binding} {
		if err := r.Client.Create(ctx, obj, client.FieldOwner(FieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create the runner identity of pipeline %s/%s (%T %s/%s): %w",
				p.Namespace, p.Name, obj, obj.GetNamespace(), obj.GetName(), err)
		}
	}
	return nil
}

// deleteRunnerIdentity deletes what ensureRunnerIdentity made.
func (r *ETLPipelineReconciler) deleteRunnerIdentity(ctx context.Context, p *etlv1.ETLPipeline) error {
	sa, role, binding := runnerIdentity(p, r.Namespace)
	for _, obj := range []client.Object{binding, role, sa} {
		if err := r.Client.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete the runner identity of pipeline %s/%s (%T %s/%s): %w",
				p.Namespace, p.Name, obj, obj.GetNamespace(), obj.GetName(), err)
		}
	}
	return nil
}
