package controllers

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodProblem(t *testing.T) {
	created := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	waiting := func(reason, msg string) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p1"}, Status: corev1.PodStatus{Phase: corev1.PodPending,
			ContainerStatuses: []corev1.ContainerStatus{{Name: "runner", State: corev1.ContainerState{
				Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}}}
	}
	unschedulable := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p2"}, Status: corev1.PodStatus{Phase: corev1.PodPending,
		Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
			Message: "0/3 nodes are available: 3 Insufficient memory."}}}}
	cases := []struct {
		name   string
		pods   []corev1.Pod
		now    time.Duration
		reason string
		has    string
	}{
		{"a young job without a pod yet", nil, 5 * time.Second, "", ""},
		{"a job that creates no pod", nil, time.Minute, "NoPod", "has created no pod"},
		{"a missing secret", []corev1.Pod{waiting("CreateContainerConfigError", `secret "warehouse-dsn" not found`)}, time.Second,
			"CreateContainerConfigError", `secret "warehouse-dsn" not found`},
		{"an image that cannot be pulled", []corev1.Pod{waiting("ImagePullBackOff", "Back-off pulling image")}, time.Second, "ImagePullBackOff", "pod p1"},
		{"a pod still creating its container", []corev1.Pod{waiting("ContainerCreating", "")}, time.Second, "", ""},
		{"no node fits", []corev1.Pod{unschedulable}, time.Second, "Unschedulable", "Insufficient memory"},
		{"a running pod", []corev1.Pod{{Status: corev1.PodStatus{Phase: corev1.PodRunning}}}, time.Minute, "", ""},
	}
	for _, tc := range cases {
		got := podProblem(tc.pods, "job-1", created, created.Add(tc.now))
		switch {
		case tc.reason == "" && got != nil:
			t.Errorf("%s: %+v, want no problem", tc.name, got)
		case tc.reason != "" && (got == nil || got.Reason != tc.reason || !strings.Contains(got.Message, tc.has)):
			t.Errorf("%s: %+v, want %s containing %q", tc.name, got, tc.reason, tc.has)
		}
	}
}

func TestReportedEnd(t *testing.T) {
	cases := []struct {
		name string
		t    termination
		want string
	}{
		{"an Idle end", termination{message: `{"runID":"r1","phase":"Idle","rowsRead":5}`}, "Idle"},
		{"a Paused end", termination{message: `{"runID":"r1","phase":"Paused"}`}, "Paused"},
		{"another run's end", termination{message: `{"runID":"r0","phase":"Idle"}`}, ""},
		{"a failure's words", termination{exitCode: 1, message: "Failed: connection refused"}, ""},
		{"exit 0 with log lines", termination{message: "level=INFO msg=done"}, ""},
		{"a phase no run ends in", termination{message: `{"runID":"r1","phase":"Running"}`}, ""},
	}
	for _, tc := range cases {
		got := reportedEnd(tc.t, "r1")
		if (got == nil && tc.want != "") || (got != nil && got.Phase != tc.want) {
			t.Errorf("%s: %+v, want %q", tc.name, got, tc.want)
		}
	}
}
