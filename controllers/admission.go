package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// The grants are also judged at admission, by a ValidatingAdmissionPolicy the manager writes
// from its configuration (CEL, run by the API server: no webhook to keep up): a pipeline whose
// namespace is not granted what it names is refused (tenancy.admissionPolicy Deny) or accepted
// with a warning that kubectl and Argo CD show (Warn, the default, which leaves the reconciler
// to fail it with the reason), so it does not land from Git unnoticed. The policy judges a
// create and a change of spec only: the manager's own writes (its finalizer) and deletions
// always pass. The reconciler and the runner judge the grants again whatever the policy says.

// GrantsPolicyName names the ValidatingAdmissionPolicy and its binding.
const GrantsPolicyName = "sluice-grants"

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=get;create;update;delete

// GrantsPolicy keeps the grants policy in line with the configuration.
type GrantsPolicy struct {
	Client client.Client
	// Reader reads the policy straight from the API server (the manager caches no policy).
	Reader client.Reader
}

// Apply writes the policy and binding of cfg, or deletes them when cfg says Off.
func (g *GrantsPolicy) Apply(ctx context.Context, cfg *configv1.OperatorConfig) error {
	policy, binding := grantsPolicy(cfg)
	if policy == nil {
		for _, obj := range []client.Object{
			&admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: GrantsPolicyName}},
			&admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: GrantsPolicyName}},
		} {
			if err := g.Client.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("delete %T %s: %w", obj, obj.GetName(), err)
			}
		}
		return nil
	}
	// The API server defaults fields of both, so they are written whole, every time the
	// configuration is loaded: seldom.
	cur := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	if err := upsert(ctx, g.Client, g.Reader, policy, cur, func() { cur.Spec, cur.Labels = policy.Spec, policy.Labels }); err != nil {
		return err
	}
	curBinding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	return upsert(ctx, g.Client, g.Reader, binding, curBinding, func() {
		curBinding.Spec, curBinding.Labels = binding.Spec, binding.Labels
	})
}

// upsert creates want, or updates cur (read into) after mutate.
func upsert(ctx context.Context, c client.Client, r client.Reader, want, cur client.Object, mutate func()) error {
	err := r.Get(ctx, client.ObjectKeyFromObject(want), cur)
	if apierrors.IsNotFound(err) {
		if err := c.Create(ctx, want, client.FieldOwner(FieldOwner)); err != nil {
			return fmt.Errorf("create %T %s: %w", want, want.GetName(), err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get %T %s: %w", want, want.GetName(), err)
	}
	mutate()
	if err := c.Update(ctx, cur, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("update %T %s: %w", want, want.GetName(), err)
	}
	return nil
}

// grantsPolicy builds the policy and binding of cfg; nil when tenancy.admissionPolicy is Off.
// Pure.
func grantsPolicy(cfg *configv1.OperatorConfig) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	action := cfg.Tenancy.Admission()
	if action == configv1.AdmissionOff {
		return nil, nil
	}
	labels := map[string]string{labelName: appName, labelManagedBy: managedBy}
	esDefault := ""
	if es := cfg.ElasticsearchConnection(""); es != nil {
		esDefault = es.Name
	}
	vars := []admissionregistrationv1.Variable{
		{Name: "ns", Expression: "namespaceObject.metadata.name"},
		{Name: "labels", Expression: "has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {}"},
		{Name: "source", Expression: "object.spec.source.connection"},
		{Name: "target", Expression: "object.spec.target.name"},
		{Name: "targetConn", Expression: "has(object.spec.target.connection) ? object.spec.target.connection : ''"},
		{Name: "pgSink", Expression: "variables.target.startsWith('es:') ? '' : (variables.targetConn != '' ? variables.targetConn : variables.source)"},
		{Name: "esSink", Expression: "variables.target.startsWith('es:') ? (variables.targetConn != '' ? variables.targetConn : " + celString(esDefault) + ") : ''"},
	}
	def := cfg.Tenancy.Default()
	var validations []admissionregistrationv1.Validation
	refuse := func(uses, granted, what string) {
		validations = append(validations, admissionregistrationv1.Validation{
			Expression: "!(" + uses + ") || " + granted,
			MessageExpression: "'" + etlv1.ReasonConnectionNotGranted + ": namespace \"' + variables.ns + '\" is not granted the " + what +
				" (the operator configuration\\'s grants)'",
			Reason: ptr.To(metav1.StatusReasonForbidden),
		})
	}
	for _, p := range cfg.Postgres {
		if granted := grantCEL([]configv1.Grant{p.Grant}, def); granted != "true" {
			refuse("variables.source == "+celString(p.Name)+" || variables.pgSink == "+celString(p.Name), granted,
				"postgres connection \""+celEscape(p.Name)+"\"")
		}
	}
	for _, e := range cfg.Elasticsearch {
		if granted := grantCEL([]configv1.Grant{e.Grant}, def); granted != "true" {
			refuse("variables.esSink == "+celString(e.Name), granted, "elasticsearch connection \""+celEscape(e.Name)+"\"")
		}
	}
	targets := slices.Clone(cfg.AllowedTargets.PostgresTables)
	for _, ix := range cfg.AllowedTargets.ElasticsearchIndexes {
		targets = append(targets, "es:"+ix)
	}
	for _, t := range targets {
		var grants []configv1.Grant
		for _, tg := range cfg.AllowedTargets.Grants {
			if slices.Contains(tg.Targets, t) {
				grants = append(grants, tg.Grant)
			}
		}
		if granted := grantCEL(grants, def); granted != "true" {
			validations = append(validations, admissionregistrationv1.Validation{
				Expression: "variables.target != " + celString(t) + " || " + granted,
				MessageExpression: "'" + etlv1.ReasonTargetNotGranted + ": namespace \"' + variables.ns + '\" is not granted the target " +
					celEscape(t) + " (allowedTargets.grants)'",
				Reason: ptr.To(metav1.StatusReasonForbidden),
			})
		}
	}
	if len(validations) == 0 {
		// Everything is granted to everyone: a policy that always passes keeps the object in
		// place, so a later grant updates it rather than creating it.
		validations = []admissionregistrationv1.Validation{{Expression: "true"}}
	}
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: GrantsPolicyName, Labels: labels},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
					Rule: admissionregistrationv1.Rule{APIGroups: []string{etlv1.GroupVersion.Group}, APIVersions: []string{"*"},
						Resources: []string{"etlpipelines"}},
				},
			}}},
			MatchConditions: []admissionregistrationv1.MatchCondition{{
				Name:       "spec-written",
				Expression: "request.operation == 'CREATE' || object.spec != oldObject.spec",
			}},
			Variables:   vars,
			Validations: validations,
		},
	}
	actions := []admissionregistrationv1.ValidationAction{admissionregistrationv1.Warn, admissionregistrationv1.Audit}
	if action == configv1.AdmissionDeny {
		actions = []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: GrantsPolicyName, Labels: labels},
		Spec:       admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: GrantsPolicyName, ValidationActions: actions},
	}
	return policy, binding
}

// grantCEL is the CEL expression that is true when the namespace (variables.ns, with
// variables.labels) is granted by any of grants; with none set, the default decides.
func grantCEL(grants []configv1.Grant, def configv1.DefaultGrant) string {
	var terms []string
	for _, g := range grants {
		if !g.IsSet() {
			continue
		}
		if len(g.Namespaces) > 0 {
			quoted := make([]string, len(g.Namespaces))
			for i, ns := range g.Namespaces {
				quoted[i] = celString(ns)
			}
			terms = append(terms, "variables.ns in ["+strings.Join(quoted, ", ")+"]")
		}
		if g.NamespaceSelector != nil {
			terms = append(terms, selectorCEL(g.NamespaceSelector))
		}
	}
	switch {
	case len(terms) > 0:
		if slices.Contains(terms, "true") {
			return "true"
		}
		return "(" + strings.Join(terms, " || ") + ")"
	case def == configv1.GrantAllNamespaces:
		return "true"
	default:
		return "false"
	}
}

// selectorCEL is the CEL expression of a label selector on variables.labels, with the
// semantics of metav1.LabelSelectorAsSelector (the configuration validated it).
func selectorCEL(sel *metav1.LabelSelector) string {
	var terms []string
	keys := make([]string, 0, len(sel.MatchLabels))
	for k := range sel.MatchLabels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	has := func(k string) string { return celString(k) + " in variables.labels" }
	for _, k := range keys {
		terms = append(terms, "("+has(k)+" && variables.labels["+celString(k)+"] == "+celString(sel.MatchLabels[k])+")")
	}
	for _, e := range sel.MatchExpressions {
		values := make([]string, len(e.Values))
		for i, v := range e.Values {
			values[i] = celString(v)
		}
		in := "variables.labels[" + celString(e.Key) + "] in [" + strings.Join(values, ", ") + "]"
		switch e.Operator {
		case metav1.LabelSelectorOpIn:
			terms = append(terms, "("+has(e.Key)+" && "+in+")")
		case metav1.LabelSelectorOpNotIn:
			terms = append(terms, "(!("+has(e.Key)+") || !("+in+"))")
		case metav1.LabelSelectorOpExists:
			terms = append(terms, "("+has(e.Key)+")")
		case metav1.LabelSelectorOpDoesNotExist:
			terms = append(terms, "!("+has(e.Key)+")")
		}
	}
	if len(terms) == 0 {
		return "true"
	}
	return "(" + strings.Join(terms, " && ") + ")"
}

// celString quotes s as a CEL string literal.
func celString(s string) string { return "'" + celEscape(s) + "'" }

// celEscape escapes s for a single-quoted CEL string. Names, label keys and values admit
// none of these characters, but the configuration is input like any other.
func celEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`, "\r", `\r`).Replace(s)
}
