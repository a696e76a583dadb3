package controllers

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"slices"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	"github.com/sluice-dev/sluice/test/testenv"
)

// kustomize builds a kustomization directory with the real kubectl and returns its objects.
func kustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), testenv.Kubectl(t), "kustomize", repoFile(dir)).Output() //nolint:gosec // a test's own binary and path
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, exit.Stderr)
		}
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("decode output of kustomize %s: %v", dir, err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// strict decodes u into out, failing on any field the type does not know: a typo in a
// manifest is a test failure, not a silently ignored setting.
func strict(t *testing.T, u *unstructured.Unstructured, out any) {
	t.Helper()
	data, err := yaml.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, out); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

func TestKustomizations(t *testing.T) {
	for _, dir := range []string{"config/crd", "config/rbac", "config/manager", "config/samples", "config/networkpolicy"} {
		if objs := kustomize(t, dir); len(objs) == 0 {
			t.Errorf("%s builds to nothing", dir)
		}
	}

	objs := kustomize(t, "config/default")
	kinds := map[string]int{}
	var deploy *appsv1.Deployment
	var cm *corev1.ConfigMap
	for _, u := range objs {
		kinds[u.GetKind()]++
		if ns := u.GetNamespace(); ns != "" && ns != "sluice-system" {
			t.Errorf("%s %s is in namespace %s", u.GetKind(), u.GetName(), ns)
		}
		switch u.GetKind() {
		case "Deployment":
			deploy = &appsv1.Deployment{}
			strict(t, u, deploy)
		case "ConfigMap":
			cm = &corev1.ConfigMap{}
			strict(t, u, cm)
		case "ClusterRoleBinding", "RoleBinding":
			b := &rbacv1.RoleBinding{}
			strict(t, u, b)
			for _, s := range b.Subjects {
				if s.Namespace != "sluice-system" {
					t.Errorf("%s %s binds %s in namespace %q", u.GetKind(), b.Name, s.Name, s.Namespace)
				}
			}
		case "Role", "ClusterRole":
			strict(t, u, &rbacv1.Role{})
		case "ServiceAccount":
			strict(t, u, &corev1.ServiceAccount{})
		case "Namespace":
			strict(t, u, &corev1.Namespace{})
		case "ValidatingAdmissionPolicy":
			strict(t, u, &admissionregistrationv1.ValidatingAdmissionPolicy{})
		case "ValidatingAdmissionPolicyBinding":
			strict(t, u, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{})
		}
	}
	// One account: each pipeline's runner gets its own from the manager.
	want := map[string]int{"CustomResourceDefinition": 1, "Namespace": 1, "ServiceAccount": 1, "ClusterRole": 2, "ClusterRoleBinding": 1,
		"Role": 2, "RoleBinding": 2, "ConfigMap": 1, "Deployment": 1, "ValidatingAdmissionPolicy": 2, "ValidatingAdmissionPolicyBinding": 2}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("config/default has %d %s, want %d", kinds[k], k, n)
		}
	}
	if deploy == nil || cm == nil {
		t.Fatal("config/default lacks the Deployment or the ConfigMap")
	}

	pod := deploy.Spec.Template.Spec
	c := pod.Containers[0]
	if !slices.Equal(c.Args, []string{"manager", "--config=/etc/sluice/config.yaml", "--leader-elect"}) {
		t.Errorf("manager args = %v", c.Args)
	}
	if pod.ServiceAccountName != "sluice-manager" {
		t.Errorf("manager service account = %q", pod.ServiceAccountName)
	}
	podNS := false
	for _, e := range c.Env {
		podNS = podNS || (e.Name == "POD_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace")
	}
	if !podNS {
		t.Error("POD_NAMESPACE is not taken from the pod's namespace")
	}
	sc := c.SecurityContext
	if sc == nil || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || c.LivenessProbe == nil || c.ReadinessProbe == nil {
		t.Errorf("manager container is not restricted or lacks probes: %+v", c)
	}

	// The ConfigMap the Deployment mounts is a valid configuration, and runners get it too.
	cfg, err := configv1.Parse([]byte(cm.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("ConfigMap %s: %v", cm.Name, err)
	}
	if cfg.Runner.ConfigMapName != cm.Name || pod.Volumes[0].ConfigMap.Name != cm.Name {
		t.Errorf("runner.configMapName = %q, Deployment mounts %q, ConfigMap is %q", cfg.Runner.ConfigMapName, pod.Volumes[0].ConfigMap.Name, cm.Name)
	}
}

// The runner NetworkPolicy selects every runner pod, lets nothing in, and lets out only DNS,
// the API server, Postgres and Elasticsearch.
func TestRunnerNetworkPolicy(t *testing.T) {
	objs := kustomize(t, "config/networkpolicy")
	if len(objs) != 1 || objs[0].GetKind() != "NetworkPolicy" {
		t.Fatalf("config/networkpolicy: %d objects", len(objs))
	}
	np := &networkingv1.NetworkPolicy{}
	strict(t, objs[0], np)
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(jobLabels(newPipeline("team", "p", legacySpec()), "r1"))) {
		t.Error("the policy does not select runner pods")
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) || len(np.Spec.Ingress) != 0 {
		t.Errorf("policy types %v, ingress %v: want no ingress at all", np.Spec.PolicyTypes, np.Spec.Ingress)
	}
	var ports []int32
	for _, r := range np.Spec.Egress {
		if len(r.To) == 0 || len(r.Ports) == 0 {
			t.Errorf("an egress rule open to every peer or every port: %+v", r)
		}
		for _, p := range r.Ports {
			ports = append(ports, p.Port.IntVal)
		}
	}
	slices.Sort(ports)
	if want := []int32{53, 53, 443, 5432, 6443, 9200}; !slices.Equal(ports, want) {
		t.Errorf("egress ports %v, want %v", ports, want)
	}
}
