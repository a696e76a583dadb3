package controllers

import (
	"context"
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestRunnerIdentity(t *testing.T) {
	p := &etlv1.ETLPipeline{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "orders", UID: "uid-1"}}
	sa, role, binding := runnerIdentity(p, "sluice-system")
	if sa.Namespace != "sluice-system" || !strings.HasPrefix(sa.Name, runnerAccountPrefix) || len(sa.Name) > 63 {
		t.Errorf("service account %s/%s", sa.Namespace, sa.Name)
	}
	again := p.DeepCopy()
	again.UID = "uid-2"
	if RunnerServiceAccount(again) == sa.Name {
		t.Error("a pipeline created again under the same name must get another account")
	}
	other := p.DeepCopy()
	other.Namespace = "team-b"
	if RunnerServiceAccount(other) == sa.Name {
		t.Error("two pipelines share an account")
	}
	if role.Namespace != "team-a" || binding.Namespace != "team-a" || binding.RoleRef.Name != role.Name {
		t.Errorf("role %s/%s, binding %s/%s -> %s", role.Namespace, role.Name, binding.Namespace, binding.Name, binding.RoleRef.Name)
	}
	if len(binding.Subjects) != 1 || binding.Subjects[0].Name != sa.Name || binding.Subjects[0].Namespace != "sluice-system" {
		t.Errorf("subjects %+v", binding.Subjects)
	}
	for _, obj := range []metav1.Object{role, binding} {
		if refs := obj.GetOwnerReferences(); len(refs) != 1 || refs[0].UID != p.UID || refs[0].Kind != "ETLPipeline" {
			t.Errorf("%s: owner references %+v", obj.GetName(), refs)
		}
	}
	for _, r := range role.Rules {
		for _, v := range r.Verbs {
			if v == "list" || v == "watch" || v == "*" {
				t.Errorf("rule %+v lets the runner %s", r, v)
			}
		}
		if r.APIGroups[0] == etlv1.GroupVersion.Group && (len(r.ResourceNames) != 1 || r.ResourceNames[0] != "orders") {
			t.Errorf("rule %+v is not limited to the pipeline", r)
		}
	}
	long := &etlv1.ETLPipeline{ObjectMeta: metav1.ObjectMeta{Namespace: "n", Name: strings.Repeat("x", 250), UID: "u"}}
	if name := runnerRoleName(long); len(name) > 253 || !strings.HasPrefix(name, "sluice-runner-") {
		t.Errorf("role name of a long pipeline name: %q", name)
	}
}

var _ = Describe("The runner's rights", func() {
	var (
		ctx    context.Context
		admin  kubernetes.Interface
		nsA    string
		nsB    string
		pA, pB *etlv1.ETLPipeline
	)
	BeforeEach(func() {
		ctx = context.Background()
		var err error
		admin, err = kubernetes.NewForConfig(adminConfig)
		Expect(err).NotTo(HaveOccurred())
		nsA, nsB = newTestNamespace(ctx), newTestNamespace(ctx)
		pA = createPipeline(ctx, nsA, "orders", legacySpec())
		pB = createPipeline(ctx, nsB, "orders", legacySpec())
	})

	// podToken makes a pod in the operator's namespace running as the account of p's runner
	// (it never starts: no node) and returns a token bound to it, as the kubelet would mount.
	podToken := func(p *etlv1.ETLPipeline, podName string) string {
		GinkgoHelper()
		sa := RunnerServiceAccount(p)
		Eventually(func() error {
			_, err := admin.CoreV1().ServiceAccounts(operatorNamespace).Get(ctx, sa, metav1.GetOptions{})
			return err
		}, timeout, interval).Should(Succeed(), "the manager makes the runner's account before its Job")
		pod, err := admin.CoreV1().Pods(operatorNamespace).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: podName},
			Spec: corev1.PodSpec{ServiceAccountName: sa, AutomountServiceAccountToken: ptr.To(false),
				Containers: []corev1.Container{{Name: "runner", Image: "sluice:test"}}},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			_ = admin.CoreV1().Pods(operatorNamespace).Delete(context.Background(), podName, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
		})
		tr, err := admin.CoreV1().ServiceAccounts(operatorNamespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		return tr.Status.Token
	}
	tokenClient := func(token string) client.Client {
		GinkgoHelper()
		cfg := rest.AnonymousClientConfig(adminConfig)
		cfg.BearerToken = token
		c, err := client.New(cfg, client.Options{Scheme: suiteScheme})
		Expect(err).NotTo(HaveOccurred())
		return c
	}
	// claimWith claims p's requested run with c, as a runner does: a merge patch of the status.
	claimWith := func(c client.Client, p *etlv1.ETLPipeline) error {
		cur := getPipeline(ctx, p)
		base := cur.DeepCopy()
		cur.Status.Phase = etlv1.PhaseRunning
		return c.Status().Patch(ctx, cur, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	}

	It("lets a pod-bound runner token write its own pipeline's status and nothing else", func() {
		runA := waitForRun(ctx, pA, etlv1.TriggerCreated, 1)
		runB := waitForRun(ctx, pB, etlv1.TriggerCreated, 1)
		Expect(runB.JobName).NotTo(BeEmpty())
		c := tokenClient(podToken(pA, runA.JobName+"-q9x4z"))

		By("its own pipeline: get and claim")
		Expect(c.Get(ctx, client.ObjectKeyFromObject(pA), &etlv1.ETLPipeline{})).To(Succeed())
		Expect(claimWith(c, pA)).To(Succeed())
		Eventually(phaseOf(ctx, pA), timeout, interval).Should(Equal(etlv1.PhaseRunning))

		By("another team's pipeline of the same name: no read, no status write")
		err := c.Get(ctx, client.ObjectKeyFromObject(pB), &etlv1.ETLPipeline{})
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "get: %v", err)
		err = claimWith(c, pB)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "status patch: %v", err)
		Expect(getPipeline(ctx, pB).Status.Phase).To(Equal(etlv1.PhaseRunRequested))

		By("no list or watch, in its own namespace or another")
		for _, ns := range []string{nsA, nsB} {
			err = c.List(ctx, &etlv1.ETLPipelineList{}, client.InNamespace(ns))
			Expect(apierrors.IsForbidden(err)).To(BeTrue(), "list in %s: %v", ns, err)
		}
		err = c.List(ctx, &etlv1.ETLPipelineList{})
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "list everywhere: %v", err)

		By("no Secrets, no Jobs")
		err = c.Get(ctx, types.NamespacedName{Namespace: operatorNamespace, Name: "warehouse-dsn"}, &corev1.Secret{})
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "secret: %v", err)
		err = c.List(ctx, &rbacv1.RoleList{}, client.InNamespace(nsA))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "roles: %v", err)
	})

	It("refuses a status write from a token that is not bound to a pod of the run in flight", func() {
		runA := waitForRun(ctx, pA, etlv1.TriggerCreated, 1)

		By("a pod of another Job, with the pipeline's own account")
		err := claimWith(tokenClient(podToken(pA, "sluice-old-run-abcde")), pA)
		Expect(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
		Expect(err.Error()).To(ContainSubstring("is not a pod of the run in flight (job " + runA.JobName + ")"))

		By("a token bound to no pod")
		tr, err := admin.CoreV1().ServiceAccounts(operatorNamespace).CreateToken(ctx, RunnerServiceAccount(pA),
			&authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		err = claimWith(tokenClient(tr.Status.Token), pA)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("only with a token bound to its pod"))
		Expect(getPipeline(ctx, pA).Status.Phase).To(Equal(etlv1.PhaseRunRequested))

		By("the run's own pod may not rewrite the recorded Job")
		c := tokenClient(podToken(pA, runA.JobName+"-h2k8m"))
		cur := getPipeline(ctx, pA)
		base := cur.DeepCopy()
		cur.Status.Run.JobName = "elsewhere"
		err = c.Status().Patch(ctx, cur, client.MergeFrom(base))
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("may not change the run's job"))
	})

	It("deletes the runner's account, Role and binding with the pipeline", func() {
		waitForRun(ctx, pA, etlv1.TriggerCreated, 1)
		sa, role, binding := runnerIdentity(getPipeline(ctx, pA), operatorNamespace)
		for _, obj := range []client.Object{sa, role, binding} {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
		}
		Expect(k8sClient.Delete(ctx, pA)).To(Succeed())
		forget := waitForForgetJob(ctx, pA)
		Expect(forget.Spec.Template.Spec.AutomountServiceAccountToken).To(Equal(ptr.To(false)), "the forget Job needs no token")
		finishJob(ctx, forget.Name, false)
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(pA), &etlv1.ETLPipeline{}))
		}, timeout, interval).Should(BeTrue())
		for _, obj := range []client.Object{sa, role, binding} {
			Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj))).To(BeTrue(), "%T %s", obj, obj.GetName())
		}
	})
})
