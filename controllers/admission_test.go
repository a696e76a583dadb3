package controllers

import (
	"context"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestGrantsPolicyShape(t *testing.T) {
	cfg := testConfig()
	cfg.Tenancy.AdmissionPolicy = configv1.AdmissionOff
	if p, b := grantsPolicy(cfg); p != nil || b != nil {
		t.Fatal("Off writes no policy")
	}
	cfg.Tenancy.AdmissionPolicy = ""
	p, b := grantsPolicy(cfg)
	if len(p.Spec.Validations) != 1 || p.Spec.Validations[0].Expression != "true" {
		t.Errorf("a configuration that grants everything to everyone: %+v", p.Spec.Validations)
	}
	if b.Spec.PolicyName != p.Name || len(b.Spec.ValidationActions) != 2 || b.Spec.ValidationActions[0] != admissionregistrationv1.Warn {
		t.Errorf("default binding %+v", b.Spec)
	}
	cfg.Tenancy = configv1.Tenancy{DefaultGrant: configv1.GrantNoNamespaces, AdmissionPolicy: configv1.AdmissionDeny}
	p, b = grantsPolicy(cfg)
	// Three Postgres and two Elasticsearch connections, four targets: each refuses by default.
	if len(p.Spec.Validations) != 9 || b.Spec.ValidationActions[0] != admissionregistrationv1.Deny {
		t.Errorf("%d validations, actions %v", len(p.Spec.Validations), b.Spec.ValidationActions)
	}
	if got := celString(`a'b\c`); got != `'a\'b\\c'` {
		t.Errorf("celString = %s", got)
	}
}

// warnings records the warnings the API server returns.
type warnings struct {
	mu  sync.Mutex
	got []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, text)
}

func (w *warnings) all() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.got, "\n")
}

var _ = Describe("The grants admission policy", func() {
	var ctx context.Context
	BeforeEach(func() { ctx = context.Background() })

	// configure writes a configuration whose warehouse connection is granted to namespaces
	// labelled tier in (gold, silver) and not team=blocked, and whose analytics.customers
	// target only to namespaces with an orders-writer label.
	configure := func(action configv1.AdmissionPolicy) {
		cfg := copyConfig(operatorConfig)
		cfg.Tenancy = configv1.Tenancy{DefaultGrant: configv1.GrantNoNamespaces, AdmissionPolicy: action}
		for i := range cfg.Postgres {
			cfg.Postgres[i].NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"gold", "silver"}},
				{Key: "team", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"blocked"}},
			}}
		}
		cfg.AllowedTargets.Grants = []configv1.TargetGrant{
			{Targets: []string{"analytics.orders"}, Grant: configv1.Grant{NamespaceSelector: &metav1.LabelSelector{}}},
			{Targets: []string{"analytics.customers"}, Grant: configv1.Grant{NamespaceSelector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "orders-writer", Operator: metav1.LabelSelectorOpExists}}}}},
		}
		writeConfigMap(ctx, cfg)
		Eventually(func() configv1.Tenancy { return configs.Get().Tenancy }, timeout, interval).Should(Equal(cfg.Tenancy))
		DeferCleanup(func() {
			writeConfigMap(context.Background(), operatorConfig)
			Eventually(func() *configv1.OperatorConfig { return configs.Get() }, timeout, interval).Should(Equal(operatorConfig))
		})
	}
	labelled := func(labels map[string]string) string {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t-" + utilrand.String(8), Labels: labels}}
		Expect(k8sClient.Create(ctx, ns)).To(Succeed())
		return ns.Name
	}
	pipeline := func(ns, target string) *etlv1.ETLPipeline {
		spec := legacySpec()
		spec.Target.Name = target
		return &etlv1.ETLPipeline{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p-" + utilrand.String(6)}, Spec: spec}
	}

	It("refuses at admission (Deny) exactly what the reconciler would refuse", func() {
		configure(configv1.AdmissionDeny)
		gold := labelled(map[string]string{"tier": "gold", "orders-writer": ""})
		// The API server picks a new policy up within a second or so.
		Eventually(func() string {
			err := k8sClient.Create(ctx, pipeline(labelled(nil), "analytics.orders"))
			if err == nil {
				return ""
			}
			return err.Error()
		}, timeout, interval).Should(ContainSubstring(`ConnectionNotGranted: namespace "t-`))

		for _, tc := range []struct {
			labels map[string]string
			target string
			want   string // "" admitted
		}{
			{map[string]string{"tier": "gold"}, "analytics.orders", ""},
			{map[string]string{"tier": "silver", "team": "a"}, "analytics.orders", ""},
			{map[string]string{"tier": "bronze"}, "analytics.orders", `is not granted the postgres connection "warehouse"`},
			{map[string]string{"tier": "gold", "team": "blocked"}, "analytics.orders", `is not granted the postgres connection "warehouse"`},
			{map[string]string{"tier": "gold"}, "analytics.customers", "TargetNotGranted"},
			{map[string]string{"tier": "gold", "orders-writer": "yes"}, "analytics.customers", ""},
			// Not whitelisted: the reconciler says so (TargetNotAllowed), admission lets it by.
			{map[string]string{"tier": "gold"}, "analytics.payroll", ""},
		} {
			ns := labelled(tc.labels)
			p := pipeline(ns, tc.target)
			err := k8sClient.Create(ctx, p)
			if tc.want == "" {
				Expect(err).NotTo(HaveOccurred(), "%v into %s", tc.labels, tc.target)
				// What admission let in, the reconciler does not refuse for a grant.
				Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).ShouldNot(
					Or(HavePrefix("False/"+etlv1.ReasonConnectionNotGranted), HavePrefix("False/"+etlv1.ReasonTargetNotGranted), BeEmpty()))
				continue
			}
			Expect(err).To(HaveOccurred(), "%v into %s", tc.labels, tc.target)
			Expect(err.Error()).To(ContainSubstring(tc.want))
			Expect(err.Error()).To(ContainSubstring(`namespace "` + ns + `"`))
		}

		By("a change that is not to the spec (the manager's finalizer, a label) passes")
		p := pipeline(gold, "analytics.orders")
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		nsObj := &corev1.Namespace{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: gold}, nsObj)).To(Succeed())
		nsObj.Labels["tier"] = "bronze"
		Expect(k8sClient.Update(ctx, nsObj)).To(Succeed())
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("False/" + etlv1.ReasonConnectionNotGranted))
		cur := getPipeline(ctx, p)
		cur.Labels = map[string]string{"relabelled": "yes"}
		Expect(k8sClient.Update(ctx, cur)).To(Succeed())
	})

	It("warns at admission (Warn) and lets the reconciler refuse", func() {
		configure(configv1.AdmissionWarn)
		w := &warnings{}
		cfg := rest.CopyConfig(adminConfig)
		cfg.WarningHandler = w
		c, err := client.New(cfg, client.Options{Scheme: suiteScheme})
		Expect(err).NotTo(HaveOccurred())
		var p *etlv1.ETLPipeline
		Eventually(func() string {
			p = pipeline(labelled(map[string]string{"tier": "bronze"}), "analytics.orders")
			if err := c.Create(ctx, p); err != nil {
				return "" // the API server still has the Deny binding of the spec before
			}
			return w.all()
		}, timeout, interval).Should(ContainSubstring(`is not granted the postgres connection "warehouse"`))
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("False/" + etlv1.ReasonConnectionNotGranted))
		Consistently(func() int { return len(jobsOf(ctx, p)) }, quiet, interval).Should(BeZero())
	})
})
