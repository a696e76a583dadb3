package main

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
)

func TestExpandFollowsTheKubeletRules(t *testing.T) {
	vars := map[string]string{"A": "x", "EMPTY": ""}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	for in, want := range map[string]string{
		"plain":             "plain",
		"$(A)":              "x",
		"a-$(A)-b":          "a-x-b",
		"$(EMPTY)":          "",
		"$(UNKNOWN)":        "$(UNKNOWN)",
		"$$(A)":             "$(A)",
		"$$":                "$",
		"$$$$":              "$$",
		"$A ${A} $1":        "$A ${A} $1",
		"$":                 "$",
		"$(A":               "$(A",
		"$((i+1))":          "$((i+1))",
		"echo $(cat \"f\")": "echo $(cat \"f\")",
	} {
		if got := expand(in, lookup); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPathMapRewritesMountPathsOnly(t *testing.T) {
	pm := newPathMap(map[string]string{
		"/etc/sluice/config.yaml": "/w/volumes/config/config.yaml", // a subPath mount
		"/etc/sluice/es/search":   "/w/volumes/es-ca-search",
		"/tmp":                    "/w/volumes/tmp",
		"/dev/termination-log":    "/w/termination-log",
		"/":                       "/w/volumes/root",
	})
	for in, want := range map[string]string{
		"/etc/sluice/config.yaml":          "/w/volumes/config/config.yaml",
		"/etc/sluice/es/search/ca.crt":     "/w/volumes/es-ca-search/ca.crt",
		"/tmp":                             "/w/volumes/tmp",
		"/tmp/x/y":                         "/w/volumes/tmp/x/y",
		"/tmpfoo":                          "/tmpfoo",
		"/etc/sluice/other.yaml":           "/etc/sluice/other.yaml",
		"--config=/etc/sluice/config.yaml": "--config=/etc/sluice/config.yaml", // not a path: see arg
		"/dev/termination-log":             "/w/termination-log",
		"relative/tmp":                     "relative/tmp",
	} {
		if got := pm.path(in); got != want {
			t.Errorf("path(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"--config=/etc/sluice/config.yaml":      "--config=/w/volumes/config/config.yaml",
		"-termination-log=/dev/termination-log": "-termination-log=/w/termination-log",
		"--name=value":                          "--name=value",
		"--tmp":                                 "--tmp",
		"/tmp/a":                                "/w/volumes/tmp/a",
		"echo /tmp/a":                           "echo /tmp/a",
	} {
		if got := pm.arg(in); got != want {
			t.Errorf("arg(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeObjects serves ConfigMaps and Secrets from maps.
type fakeObjects struct {
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
}

func (f fakeObjects) configMap(_ context.Context, _, name string) (*corev1.ConfigMap, error) {
	if cm, ok := f.configMaps[name]; ok {
		return cm, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
}

func (f fakeObjects) secret(_ context.Context, _, name string) (*corev1.Secret, error) {
	if s, ok := f.secrets[name]; ok {
		return s, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func TestResolveEnvResolvesSourcesInTheKubeletOrder(t *testing.T) {
	objs := fakeObjects{
		configMaps: map[string]*corev1.ConfigMap{"settings": {Data: map[string]string{"greeting": "hello", "mode": "demo"}}},
		secrets:    map[string]*corev1.Secret{"creds": {Data: map[string][]byte{"dsn": []byte("postgres://u:p@h/db")}}},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1", Labels: map[string]string{"app": "a"}},
		Spec:       corev1.PodSpec{NodeName: "n", ServiceAccountName: "sa"},
	}
	c := &corev1.Container{
		EnvFrom: []corev1.EnvFromSource{
			{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}},
			{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Optional: ptr.To(true)}},
		},
		Env: []corev1.EnvVar{
			{Name: "DSN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "dsn"}}},
			{Name: "OPTIONAL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "nope", Optional: ptr.To(true)}}},
			{Name: "NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "SA", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.serviceAccountName"}}},
			{Name: "GREETING", Value: "$(CFG_greeting), $(NS)"},
			{Name: "HOME", Value: "/override"},
		},
	}
	base := newEnvList()
	base.set("HOME", "/pod")
	base.set("PATH", "/bin")
	env, err := resolveEnv(context.Background(), pod, c, objs, base)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"HOME=/override", "PATH=/bin", "CFG_greeting=hello", "CFG_mode=demo", "DSN=postgres://u:p@h/db",
		"NS=ns", "APP=a", "SA=sa", "GREETING=hello, ns",
	}
	if got := env.environ(); !slices.Equal(got, want) {
		t.Fatalf("environ\n got %q\nwant %q", got, want)
	}

	c.Env = append(c.Env, corev1.EnvVar{Name: "MUST", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "absent"}}})
	if _, err := resolveEnv(context.Background(), pod, c, objs, base); err == nil {
		t.Fatal("a missing key that is not optional must be an error the agent retries")
	}
}

func TestContainerArgsExpandsThenRewrites(t *testing.T) {
	c := &corev1.Container{
		Command: []string{"/usr/local/bin/sluice", "runner"},
		Args:    []string{"--config", "/etc/sluice/config.yaml", "--termination-log=/dev/termination-log", "$(RUN)"},
	}
	pm := newPathMap(map[string]string{"/etc/sluice/config.yaml": "/w/config.yaml", "/dev/termination-log": "/w/termination-log"})
	lookup := func(n string) (string, bool) { return map[string]string{"RUN": "r1"}[n], n == "RUN" }
	got := containerArgs(c, lookup, pm)
	want := []string{"runner", "--config", "/w/config.yaml", "--termination-log=/w/termination-log", "r1"}
	if !slices.Equal(got, want) {
		t.Fatalf("args %q, want %q", got, want)
	}
}

func TestResourceValue(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "runner", Resources: corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi"), corev1.ResourceCPU: resource.MustParse("1500m")},
		Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
	}}}}}
	cases := []struct {
		ref     corev1.ResourceFieldSelector
		want    string
		wantErr bool
	}{
		{corev1.ResourceFieldSelector{ContainerName: "runner", Resource: "limits.memory"}, "1073741824", false},
		{corev1.ResourceFieldSelector{Resource: "requests.memory", Divisor: resource.MustParse("1Mi")}, "128", false},
		{corev1.ResourceFieldSelector{Resource: "limits.cpu"}, "2", false},
		{corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1m")}, "1500", false},
		{corev1.ResourceFieldSelector{Resource: "requests.cpu"}, "", true},
	}
	for _, tc := range cases {
		got, err := resourceValue(pod, &tc.ref)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%+v: %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
}
