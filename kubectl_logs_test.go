package main

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/controllers"
)

func TestKubectlNewestPodIsTheReplacement(t *testing.T) {
	pod := func(name string, created time.Duration) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: *ago(created)}}
	}
	for _, tc := range []struct {
		name string
		pods []corev1.Pod
		want string
	}{
		{"none", nil, ""},
		{"one", []corev1.Pod{pod("a", time.Minute)}, "a"},
		{"a replacement", []corev1.Pod{pod("first", time.Minute), pod("second", time.Second)}, "second"},
		{"listed newest first", []corev1.Pod{pod("second", time.Second), pod("first", time.Minute)}, "second"},
		{"the same second: by name, stable", []corev1.Pod{pod("b", 0), pod("c", 0), pod("a", 0)}, "c"},
	} {
		got := kubectlNewestPod(tc.pods)
		if (got == nil && tc.want != "") || (got != nil && got.Name != tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, got, tc.want)
		}
	}
}

func TestKubectlLogContainerAndStartedState(t *testing.T) {
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError"}}
	for _, tc := range []struct {
		name      string
		pod       corev1.Pod
		container string
		started   bool
		state     string
	}{
		{"the runner container, running", corev1.Pod{
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "sidecar"}, {Name: "runner"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "sidecar", State: waiting}, {Name: "runner", State: running}}},
		}, "runner", true, "Running (CreateContainerConfigError)"},
		{"the only container, waiting for its Secret", corev1.Pod{
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "main"}}},
			Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "main", State: waiting}}},
		}, "main", false, "Pending (CreateContainerConfigError)"},
		{"restarted after a crash: the last one has a log", corev1.Pod{
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "runner"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "runner", State: waiting,
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137}}}}},
		}, "runner", true, "Running (CreateContainerConfigError)"},
		{"not scheduled", corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "runner"}}}, Status: corev1.PodStatus{Phase: corev1.PodPending}},
			"runner", false, "Pending"},
		{"ended, its status gone", corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "runner"}}}, Status: corev1.PodStatus{Phase: corev1.PodSucceeded}},
			"runner", true, "Succeeded"},
	} {
		if got := kubectlLogContainer(&tc.pod); got != tc.container {
			t.Errorf("%s: container %q, want %q", tc.name, got, tc.container)
		}
		if got := kubectlContainerStarted(&tc.pod); got != tc.started {
			t.Errorf("%s: started %v, want %v", tc.name, got, tc.started)
		}
		if got := kubectlPodState(&tc.pod); got != tc.state {
			t.Errorf("%s: state %q, want %q", tc.name, got, tc.state)
		}
	}
}

func TestKubectlJobNameOfARunComesFromTheStatusOrTheRunID(t *testing.T) {
	p := &etlv1.ETLPipeline{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "orders"}}
	if _, err := kubectlJobNameOf(p, ""); err == nil || !strings.Contains(err.Error(), "has not run yet") {
		t.Errorf("no run: %v, want 'has not run yet'", err)
	}
	p.Status.Run = &etlv1.RunStatus{ID: "r3", JobName: "team-a-orders-r3"}
	p.Status.History = []etlv1.RunSummary{{ID: "r3"}, {ID: "r2"}}
	for _, tc := range []struct {
		runID, want, err string
	}{
		{"", "team-a-orders-r3", ""},
		{"r3", "team-a-orders-r3", ""},
		{"r2", controllers.JobName("team-a", "orders", "r2"), ""},
		{"r1", "", `no run "r1"`},
	} {
		got, err := kubectlJobNameOf(p, tc.runID)
		if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("run %q: %q, %v; want %q, %q", tc.runID, got, err, tc.want, tc.err)
		}
	}
}
