package main

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestTerminationMessageIsTheFileOrTheLogTailOnFailure(t *testing.T) {
	logTail := func() string { return "last lines" }
	cases := []struct {
		name   string
		file   string
		policy corev1.TerminationMessagePolicy
		code   int32
		want   string
	}{
		{name: "the file wins", file: "bad input", policy: corev1.TerminationMessageFallbackToLogsOnError, code: 42, want: "bad input"},
		{name: "fallback on failure", policy: corev1.TerminationMessageFallbackToLogsOnError, code: 1, want: "last lines"},
		{name: "no fallback on success", policy: corev1.TerminationMessageFallbackToLogsOnError, code: 0, want: ""},
		{name: "no fallback with the File policy", policy: corev1.TerminationMessageReadFile, code: 1, want: ""},
		{name: "4 KiB at most", file: strings.Repeat("x", 5000), policy: corev1.TerminationMessageReadFile, code: 1, want: strings.Repeat("x", 4096)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := terminationMessage([]byte(tc.file), logTail, tc.policy, tc.code); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTailKeepsTheLastLinesWithinTheByteCap(t *testing.T) {
	var b strings.Builder
	for i := range 100 {
		b.WriteString("line ")
		b.WriteString(strings.Repeat("x", i%3))
		b.WriteString("\n")
	}
	got := tail([]byte(b.String()), 80, 2048)
	if n := strings.Count(got, "\n") + 1; n != 80 {
		t.Fatalf("%d lines, want 80", n)
	}
	if got := tail([]byte("a\nb\nc\n"), 2, 2048); got != "b\nc" {
		t.Fatalf("got %q", got)
	}
	if got := tail([]byte(strings.Repeat("y", 3000)), 80, 2048); len(got) != 2048 {
		t.Fatalf("%d bytes, want 2048", len(got))
	}
}

func TestTerminatedStatusIsTruthful(t *testing.T) {
	pod := podWith(nil)
	now := metav1.Now()
	for _, tc := range []struct {
		code   int32
		phase  corev1.PodPhase
		reason string
	}{
		{0, corev1.PodSucceeded, "Completed"},
		{2, corev1.PodFailed, "Error"},
		{143, corev1.PodFailed, "Error"},
	} {
		st := terminatedStatus(pod, "/bin/sluice", 7, exit{code: tc.code, message: "m", started: now, finished: now})
		term := st.ContainerStatuses[0].State.Terminated
		if st.Phase != tc.phase || term == nil || term.ExitCode != tc.code || term.Reason != tc.reason || term.Message != "m" {
			t.Errorf("exit %d: phase %s, terminated %+v", tc.code, st.Phase, term)
		}
		if st.PodIP != localIP || st.ContainerStatuses[0].Name != "runner" {
			t.Errorf("exit %d: podIP %q, container %q", tc.code, st.PodIP, st.ContainerStatuses[0].Name)
		}
	}
}
