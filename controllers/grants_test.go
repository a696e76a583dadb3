package controllers

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

var _ = Describe("Grants", func() {
	var ctx context.Context
	BeforeEach(func() { ctx = context.Background() })

	// grant writes a configuration granting the warehouse connection to the namespaces named
	// and to those labelled tenant=<label>, and nothing to anyone else.
	grant := func(label string, namespaces ...string) {
		cfg := copyConfig(operatorConfig)
		cfg.Tenancy.DefaultGrant = configv1.GrantNoNamespaces
		cfg.Tenancy.AdmissionPolicy = configv1.AdmissionOff
		for i := range cfg.Postgres {
			if cfg.Postgres[i].Name == "warehouse" {
				cfg.Postgres[i].Grant = configv1.Grant{Namespaces: namespaces,
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": label}}}
			}
		}
		cfg.AllowedTargets.Grants = []configv1.TargetGrant{{Targets: []string{"analytics.orders"}, Grant: configv1.Grant{NamespaceSelector: &metav1.LabelSelector{}}}}
		writeConfigMap(ctx, cfg)
		Eventually(func() configv1.Tenancy { return configs.Get().Tenancy }, timeout, interval).Should(Equal(cfg.Tenancy))
		DeferCleanup(func() {
			writeConfigMap(context.Background(), operatorConfig)
			Eventually(func() *configv1.OperatorConfig { return configs.Get() }, timeout, interval).Should(Equal(operatorConfig))
		})
	}

	It("refuses a connection the namespace is not granted, with no Job, and runs once a label grants it", func() {
		teamA, teamB := newTestNamespace(ctx), newTestNamespace(ctx)
		label := utilrand.String(8)
		grant(label, teamA)

		By("team-b names the connection granted to team-a only")
		p := createPipeline(ctx, teamB, "borrowed", legacySpec())
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("False/" + etlv1.ReasonConnectionNotGranted))
		cur := getPipeline(ctx, p)
		Expect(cur.Status.Phase).To(Equal(etlv1.PhaseFailed))
		Expect(conditionOf(ctx, p, etlv1.ConditionStalled)()).To(Equal("True/" + etlv1.ReasonConnectionNotGranted))
		msg := meta.FindStatusCondition(cur.Status.Conditions, etlv1.ConditionReady).Message
		Expect(msg).To(ContainSubstring(`namespace "` + teamB + `"`))
		Expect(msg).To(ContainSubstring(`postgres connection "warehouse"`))
		Expect(cur.Status.Run).To(BeNil())
		Consistently(func() []batchv1.Job { return jobsOf(ctx, p) }, quiet, interval).Should(BeEmpty())

		By("team-a's own pipeline runs")
		own := createPipeline(ctx, teamA, "own", legacySpec())
		ownRun := waitForRun(ctx, own, etlv1.TriggerCreated, 1)
		claim(ctx, own, ownRun.ID)
		reportEnd(ctx, own, ownRun.ID, etlv1.PhaseIdle)

		By("labelling team-b's namespace grants it: the pipeline runs, and its runner gets the labels")
		nsObj := &corev1.Namespace{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: teamB}, nsObj)).To(Succeed())
		nsObj.Labels["tenant"] = label
		Expect(k8sClient.Update(ctx, nsObj)).To(Succeed())
		run := waitForRun(ctx, p, etlv1.TriggerConfigChanged, 1)
		jobs := jobsOf(ctx, p)
		Expect(jobs).To(HaveLen(1))
		Expect(envOf(&jobs[0], configv1.EnvNamespaceLabels)).To(ContainSubstring(`"tenant":"` + label + `"`))
		claim(ctx, p, run.ID)
		reportEnd(ctx, p, run.ID, etlv1.PhaseIdle)
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("True/" + etlv1.ReasonSucceeded))
	})

	It("refuses a target the namespace is not granted", func() {
		ns := newTestNamespace(ctx)
		grant("nobody", ns)
		spec := legacySpec()
		spec.Target.Name = "analytics.customers"
		p := createPipeline(ctx, ns, "elsewhere", spec)
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("False/" + etlv1.ReasonTargetNotGranted))
		Expect(meta.FindStatusCondition(getPipeline(ctx, p).Status.Conditions, etlv1.ConditionReady).Message).To(
			ContainSubstring(`namespace "` + ns + `" is not granted the target analytics.customers`))
		Consistently(func() []batchv1.Job { return jobsOf(ctx, p) }, quiet, interval).Should(BeEmpty())
	})
})
