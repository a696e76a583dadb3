package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
)

type fakeTokens struct{}

func (fakeTokens) token(_ context.Context, pod *corev1.Pod, _ *corev1.ServiceAccountTokenProjection) (string, time.Time, error) {
	return "token-of-" + pod.Name, time.Now().Add(time.Hour), nil
}

// runnerPod is a pod shaped like a runner Job's, after the ServiceAccount admission plugin
// added its token volume.
func runnerPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "run-1", Namespace: "sluice-system", UID: "uid-1"},
		Spec: corev1.PodSpec{
			ServiceAccountName: "sluice-runner",
			Containers: []corev1.Container{{
				Name: "runner", Image: "ghcr.io/sluice-dev/sluice:v1",
				Args: []string{"runner", "--config", "/etc/sluice/config.yaml"},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "config", MountPath: "/etc/sluice/config.yaml", SubPath: "config.yaml"},
					{Name: "es-ca-search", MountPath: "/etc/sluice/es/search"},
					{Name: "tmp", MountPath: "/tmp"},
					{Name: "kube-api-access", MountPath: saMountPath},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "sluice-config"},
					Items:                []corev1.KeyToPath{{Key: "config.yaml", Path: "config.yaml"}},
				}}},
				{Name: "es-ca-search", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName: "search-credentials", Optional: ptr.To(true),
					Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
				}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To(int64(3607))}},
					{ConfigMap: &corev1.ConfigMapProjection{
						LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
						Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
					}},
					{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
						{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
					}}},
				}}}},
			},
		},
	}
}

func TestMaterializeWritesWhatTheKubeletWould(t *testing.T) {
	objs := fakeObjects{configMaps: map[string]*corev1.ConfigMap{
		"sluice-config":    {Data: map[string]string{"config.yaml": "kind: OperatorConfig\n", "other": "not selected"}},
		"kube-root-ca.crt": {Data: map[string]string{"ca.crt": "PEM"}},
	}}
	pod := runnerPod()
	files := podFiles{dir: t.TempDir()}
	tokens, err := materializer{objs: objs, tokens: fakeTokens{}}.materialize(context.Background(), pod, files)
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 1 || tokens[0].due(time.Now()) {
		t.Fatalf("tokens %+v: want one, not due for renewal yet", tokens)
	}
	for rel, want := range map[string]string{
		"volumes/config/config.yaml":        "kind: OperatorConfig\n",
		"volumes/kube-api-access/token":     "token-of-run-1",
		"volumes/kube-api-access/ca.crt":    "PEM",
		"volumes/kube-api-access/namespace": "sluice-system",
	} {
		got, err := os.ReadFile(filepath.Join(files.dir, rel))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", rel, got, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(files.dir, "volumes/config/other")); !os.IsNotExist(err) {
		t.Errorf("a key not in items was written: %v", err)
	}
	if _, err := os.Stat(filepath.Join(files.dir, "volumes/es-ca-search/ca.crt")); !os.IsNotExist(err) {
		t.Errorf("an optional missing Secret must leave its volume empty: %v", err)
	}

	pm := newPathMap(mountPaths(&pod.Spec.Containers[0], files))
	if got, want := pm.path("/etc/sluice/config.yaml"), filepath.Join(files.dir, "volumes/config/config.yaml"); got != want {
		t.Errorf("config path %q, want %q", got, want)
	}
	if got, want := pm.path(corev1.TerminationMessagePathDefault), files.termination(); got != want {
		t.Errorf("termination path %q, want %q", got, want)
	}
}

// The KUBECONFIG the agent gives a pod is what controller-runtime's ctrl.GetConfig (and so
// the manager and the runner, when they load their configuration with it) uses, ahead of the
// in-cluster configuration whose fixed paths a local process cannot have.
func TestPodKubeconfigIsWhatCtrlGetConfigLoads(t *testing.T) {
	files := podFiles{dir: t.TempDir()}
	pm := newPathMap(mountPaths(&runnerPod().Spec.Containers[0], files))
	cfg := podKubeconfig("https://127.0.0.1:16443", pm, "sluice-system")
	if cfg == nil {
		t.Fatal("no kubeconfig for a pod with a service account token")
	}
	sa := filepath.Join(files.dir, "volumes", "kube-api-access")
	for _, f := range []string{"token", "ca.crt"} {
		if err := writeFile(filepath.Join(sa, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := files.kubeconfig()
	if err := writeKubeconfig(cfg, path); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", path)
	t.Setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "16443")
	rc, err := ctrl.GetConfig()
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != "https://127.0.0.1:16443" || rc.BearerTokenFile != filepath.Join(sa, "token") || rc.CAFile != filepath.Join(sa, "ca.crt") {
		t.Fatalf("host %q, token file %q, CA %q", rc.Host, rc.BearerTokenFile, rc.CAFile)
	}

	noSA := &corev1.Container{Name: "c"}
	if podKubeconfig("https://127.0.0.1:16443", newPathMap(mountPaths(noSA, files)), "ns") != nil {
		t.Fatal("a pod without a service account token must get no kubeconfig")
	}
}

func TestHostPort(t *testing.T) {
	for in, want := range map[string][2]string{
		"https://127.0.0.1:16443":    {"127.0.0.1", "16443"},
		"https://[::1]:6443/":        {"::1", "6443"},
		"https://kubernetes.default": {"kubernetes.default", "443"},
	} {
		if h, p := hostPort(in); h != want[0] || p != want[1] {
			t.Errorf("hostPort(%q) = %q, %q", in, h, p)
		}
	}
}
