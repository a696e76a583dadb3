package main

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestRepositoryIgnoresTagAndDigestAndNormalizesDockerHub(t *testing.T) {
	for in, want := range map[string]string{
		"ghcr.io/sluice-dev/sluice:latest":          "ghcr.io/sluice-dev/sluice",
		"ghcr.io/sluice-dev/sluice":                 "ghcr.io/sluice-dev/sluice",
		"ghcr.io/sluice-dev/sluice@sha256:abc":      "ghcr.io/sluice-dev/sluice",
		"ghcr.io/sluice-dev/sluice:v1@sha256:abc":   "ghcr.io/sluice-dev/sluice",
		"localhost:5000/sluice:dev":                 "localhost:5000/sluice",
		"localhost/sluice":                          "localhost/sluice",
		"busybox:1.36":                              "docker.io/library/busybox",
		"library/busybox":                           "docker.io/library/busybox",
		"index.docker.io/library/busybox":           "docker.io/library/busybox",
		"sluice-dev/sluice:1":                       "docker.io/sluice-dev/sluice",
		"registry.example.com:443/team/sluice:v1.2": "registry.example.com:443/team/sluice",
	} {
		if got := repository(in); got != want {
			t.Errorf("repository(%q) = %q, want %q", in, got, want)
		}
	}
}

func podWith(mutate func(*corev1.Pod)) *corev1.Pod {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name: "runner", Image: "ghcr.io/sluice-dev/sluice:v1", Args: []string{"runner"},
	}}}}
	if mutate != nil {
		mutate(pod)
	}
	return pod
}

func TestAdmitRunsOnlyWhatItCanPlayHonestly(t *testing.T) {
	images := newImagePolicy("ghcr.io/sluice-dev/sluice:latest", "/bin/sluice", map[string]string{"test.sluice.dev/sh": "/bin/sh"})
	cases := []struct {
		name       string
		pod        *corev1.Pod
		wantBinary string
		wantReason string
	}{
		{name: "the Sluice image, another tag", pod: podWith(nil), wantBinary: "/bin/sluice"},
		{name: "command naming the entrypoint", pod: podWith(func(p *corev1.Pod) {
			p.Spec.Containers[0].Command = []string{"/usr/local/bin/sluice", "runner"}
		}), wantBinary: "/bin/sluice"},
		{name: "a test image", pod: podWith(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "test.sluice.dev/sh:1" }), wantBinary: "/bin/sh"},
		{name: "another image", pod: podWith(func(p *corev1.Pod) { p.Spec.Containers[0].Image = "busybox" }), wantReason: ReasonImageNotSupported},
		{name: "another program in the Sluice image", pod: podWith(func(p *corev1.Pod) {
			p.Spec.Containers[0].Command = []string{"/bin/bash"}
		}), wantReason: ReasonPodNotSupported},
		{name: "two containers", pod: podWith(func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, p.Spec.Containers[0])
		}), wantReason: ReasonPodNotSupported},
		{name: "an init container", pod: podWith(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{p.Spec.Containers[0]}
		}), wantReason: ReasonPodNotSupported},
		{name: "a hostPath volume", pod: podWith(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}), wantReason: ReasonVolumeNotSupported},
		{name: "a resourceFieldRef to ephemeral storage", pod: podWith(func(p *corev1.Pod) {
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "S", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.ephemeral-storage"}}}}
		}), wantReason: ReasonEnvNotSupported},
		{name: "a fieldRef to status.phase", pod: podWith(func(p *corev1.Pod) {
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "P", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.phase"}}}}
		}), wantReason: ReasonEnvNotSupported},
		{name: "the volumes runner Jobs use", pod: podWith(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "ca", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{}}},
				{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
					{ConfigMap: &corev1.ConfigMapProjection{}},
					{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
						{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
					}}},
				}}}},
			}
		}), wantBinary: "/bin/sluice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bin, r := admit(tc.pod, images)
			switch {
			case tc.wantReason == "" && r != nil:
				t.Fatalf("refused: %s: %s", r.reason, r.message)
			case tc.wantReason != "" && r == nil:
				t.Fatalf("admitted with %s, want a refusal %s", bin, tc.wantReason)
			case r != nil && r.reason != tc.wantReason:
				t.Fatalf("reason %s (%s), want %s", r.reason, r.message, tc.wantReason)
			case bin != tc.wantBinary:
				t.Fatalf("binary %q, want %q", bin, tc.wantBinary)
			}
		})
	}
}
