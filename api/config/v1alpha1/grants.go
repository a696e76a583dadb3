package v1alpha1

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Several teams share one operator: each connection and each whitelisted target says which
// namespaces may use it, by name and/or by a label selector on the namespace. A connection or
// target that says nothing gets tenancy.defaultGrant: every namespace (AllNamespaces, the
// default, which keeps a one-team configuration working as it was) or none (NoNamespaces,
// what a shared operator should say).

// DefaultGrant is who may use a connection or target that names no namespaces.
type DefaultGrant string

// Default grants.
const (
	GrantAllNamespaces DefaultGrant = "AllNamespaces"
	GrantNoNamespaces  DefaultGrant = "NoNamespaces"
)

// AdmissionPolicy says whether the manager keeps a ValidatingAdmissionPolicy that judges the
// grants when a pipeline is created or changed, and what it does with a refused one.
type AdmissionPolicy string

// Admission policies.
const (
	// AdmissionWarn: the API server accepts the pipeline with a warning (kubectl and Argo CD
	// show it); the reconciler then fails it with the reason. The default.
	AdmissionWarn AdmissionPolicy = "Warn"
	// AdmissionDeny: the API server refuses the pipeline.
	AdmissionDeny AdmissionPolicy = "Deny"
	// AdmissionOff: no policy; the reconciler and the runner still enforce the grants.
	AdmissionOff AdmissionPolicy = "Off"
)

// Tenancy holds the settings of an operator shared by several teams.
type Tenancy struct {
	// DefaultGrant is who may use a connection or a target that names no namespaces
	// (default AllNamespaces).
	DefaultGrant DefaultGrant `json:"defaultGrant,omitempty"`
	// AdmissionPolicy: Warn (default), Deny or Off.
	AdmissionPolicy AdmissionPolicy `json:"admissionPolicy,omitempty"`
}

// Default returns the default grant, defaulted.
func (t Tenancy) Default() DefaultGrant {
	if t.DefaultGrant == "" {
		return GrantAllNamespaces
	}
	return t.DefaultGrant
}

// Admission returns the admission policy, defaulted.
func (t Tenancy) Admission() AdmissionPolicy {
	if t.AdmissionPolicy == "" {
		return AdmissionWarn
	}
	return t.AdmissionPolicy
}

// Grant says which namespaces may use a connection or a target: those named, and those whose
// labels match the selector. An empty selector ({}) matches every namespace.
type Grant struct {
	Namespaces        []string              `json:"namespaces,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
}

// IsSet reports whether the grant names anything; an unset grant defers to the default.
func (g Grant) IsSet() bool { return len(g.Namespaces) > 0 || g.NamespaceSelector != nil }

// allows reports whether namespace ns, with its labels, is granted. The selector was
// validated with the configuration.
func (g Grant) allows(ns string, nsLabels map[string]string) bool {
	if slices.Contains(g.Namespaces, ns) {
		return true
	}
	if g.NamespaceSelector == nil {
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(g.NamespaceSelector)
	return err == nil && sel.Matches(labels.Set(nsLabels))
}

// TargetGrant grants whitelisted targets (`analytics.<table>`, `es:<index>`) to namespaces.
type TargetGrant struct {
	Targets []string `json:"targets"`
	Grant   `json:",inline"`
}

// Grants decides who may use what: the default grant and every grant of the configuration.
type Grants struct {
	def         DefaultGrant
	connections map[string]Grant // "postgres/<name>", "elasticsearch/<name>"
	targets     map[string][]Grant
}

// Grants returns the grants of the configuration.
func (c *OperatorConfig) Grants() Grants {
	g := Grants{def: c.Tenancy.Default(), connections: map[string]Grant{}, targets: map[string][]Grant{}}
	for _, p := range c.Postgres {
		g.connections[ConnPostgres+"/"+p.Name] = p.Grant
	}
	for _, e := range c.Elasticsearch {
		g.connections[ConnElasticsearch+"/"+e.Name] = e.Grant
	}
	for _, tg := range c.AllowedTargets.Grants {
		for _, t := range tg.Targets {
			g.targets[t] = append(g.targets[t], tg.Grant)
		}
	}
	return g
}

// Connection kinds, as grants and messages name them.
const (
	ConnPostgres      = "postgres"
	ConnElasticsearch = "elasticsearch"
)

// decide applies grants, or the default when none is set.
func (g Grants) decide(grants []Grant, ns string, nsLabels map[string]string) bool {
	set := false
	for _, gr := range grants {
		if !gr.IsSet() {
			continue
		}
		set = true
		if gr.allows(ns, nsLabels) {
			return true
		}
	}
	return !set && g.def == GrantAllNamespaces
}

// ConnectionAllowed reports whether namespace ns may use connection kind/name.
func (g Grants) ConnectionAllowed(kind, name, ns string, nsLabels map[string]string) bool {
	return g.decide([]Grant{g.connections[kind+"/"+name]}, ns, nsLabels)
}

// TargetAllowed reports whether namespace ns may write target (spec.target.name).
func (g Grants) TargetAllowed(target, ns string, nsLabels map[string]string) bool {
	return g.decide(g.targets[target], ns, nsLabels)
}

// Use is what a pipeline uses: its connections (kind and name, after defaults) and its target.
type Use struct {
	Connections [][2]string
	Target      string
}

// Refusal is why a namespace may not use what a pipeline names.
type Refusal struct {
	// Reason is ReasonConnectionNotGranted or ReasonTargetNotGranted.
	Reason  string
	Message string
}

// Reasons of a refusal (also the pipeline's condition reasons).
const (
	ReasonConnectionNotGranted = "ConnectionNotGranted"
	ReasonTargetNotGranted     = "TargetNotGranted"
)

func (r *Refusal) Error() string { return r.Reason + ": " + r.Message }

// Check returns why namespace ns (with its labels) may not run a pipeline using u, or nil.
// Connections are judged first: reading is what a grant protects most.
func (g Grants) Check(u Use, ns string, nsLabels map[string]string) *Refusal {
	for _, c := range u.Connections {
		if !g.ConnectionAllowed(c[0], c[1], ns, nsLabels) {
			return &Refusal{Reason: ReasonConnectionNotGranted, Message: fmt.Sprintf(
				"namespace %q is not granted the %s connection %q (the operator configuration's grants)", ns, c[0], c[1])}
		}
	}
	if u.Target != "" && !g.TargetAllowed(u.Target, ns, nsLabels) {
		return &Refusal{Reason: ReasonTargetNotGranted, Message: fmt.Sprintf(
			"namespace %q is not granted the target %s (allowedTargets.grants)", ns, u.Target)}
	}
	return nil
}

// validateTenancy checks the grants of the configuration.
func (c *OperatorConfig) validateTenancy() []string {
	var errs []string
	switch c.Tenancy.Default() {
	case GrantAllNamespaces, GrantNoNamespaces:
	default:
		errs = append(errs, fmt.Sprintf("tenancy.defaultGrant %q: want AllNamespaces or NoNamespaces", c.Tenancy.DefaultGrant))
	}
	switch c.Tenancy.Admission() {
	case AdmissionWarn, AdmissionDeny, AdmissionOff:
	default:
		errs = append(errs, fmt.Sprintf("tenancy.admissionPolicy %q: want Warn, Deny or Off", c.Tenancy.AdmissionPolicy))
	}
	check := func(where string, g Grant) {
		for _, ns := range g.Namespaces {
			if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
				errs = append(errs, fmt.Sprintf("%s.namespaces: %q: %s", where, ns, strings.Join(msgs, "; ")))
			}
		}
		if g.NamespaceSelector != nil {
			if _, err := metav1.LabelSelectorAsSelector(g.NamespaceSelector); err != nil {
				errs = append(errs, fmt.Sprintf("%s.namespaceSelector: %v", where, err))
			}
		}
	}
	for i, p := range c.Postgres {
		check(fmt.Sprintf("postgres[%d] (%s)", i, p.Name), p.Grant)
	}
	for i, e := range c.Elasticsearch {
		check(fmt.Sprintf("elasticsearch[%d] (%s)", i, e.Name), e.Grant)
	}
	for i, tg := range c.AllowedTargets.Grants {
		where := fmt.Sprintf("allowedTargets.grants[%d]", i)
		if len(tg.Targets) == 0 {
			errs = append(errs, where+".targets: at least one target is required")
		}
		if !tg.IsSet() {
			errs = append(errs, where+": namespaces or namespaceSelector is required")
		}
		for _, t := range tg.Targets {
			if !c.whitelisted(t) {
				errs = append(errs, fmt.Sprintf("%s.targets: %q is not a whitelisted target (analytics.<table> of postgresTables, es:<index> of elasticsearchIndexes)", where, t))
			}
		}
		check(where, tg.Grant)
	}
	return errs
}

func (c *OperatorConfig) whitelisted(target string) bool {
	if index, ok := strings.CutPrefix(target, "es:"); ok {
		return c.ElasticsearchIndexAllowed(index)
	}
	return c.PostgresTableAllowed(target)
}

// UseOf returns what a pipeline uses: its source connection, its target and the target's
// connection, resolved as the runner resolves them (a Postgres target defaults to the source
// connection, an Elasticsearch one to the only or `default` connection).
func (c *OperatorConfig) UseOf(sourceConn, target, targetConn string) Use {
	u := Use{Connections: [][2]string{{ConnPostgres, sourceConn}}, Target: target}
	if strings.HasPrefix(target, "es:") {
		name := targetConn
		if es := c.ElasticsearchConnection(targetConn); es != nil {
			name = es.Name
		}
		return Use{Connections: append(u.Connections, [2]string{ConnElasticsearch, name}), Target: target}
	}
	if targetConn != "" && targetConn != sourceConn {
		u.Connections = append(u.Connections, [2]string{ConnPostgres, targetConn})
	}
	return u
}
