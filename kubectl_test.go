package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestKubectlPluginArgsFollowTheExecutableName(t *testing.T) {
	for _, tc := range []struct {
		argv0  string
		args   []string
		want   []string
		plugin bool
	}{
		{"/usr/local/bin/kubectl-sluice", []string{"status", "-A"}, []string{"status", "-A"}, true},
		{"kubectl-sluice", nil, nil, true},
		{"kubectl-sluice.exe", []string{"status"}, []string{"status"}, true},
		// kubectl asks kubectl_complete-sluice for completions without cobra's request verb.
		{"/home/u/bin/kubectl_complete-sluice", []string{"status", ""}, []string{"__complete", "status", ""}, true},
		{"/usr/local/bin/sluice", []string{"kubectl", "status"}, nil, false},
		{"./bin/sluice-kubectl", nil, nil, false},
	} {
		got, ok := kubectlPluginArgs(tc.argv0, tc.args)
		if ok != tc.plugin || !slices.Equal(got, tc.want) {
			t.Errorf("kubectlPluginArgs(%q, %q) = %q, %v; want %q, %v", tc.argv0, tc.args, got, ok, tc.want, tc.plugin)
		}
	}
}

func TestKubectlExitCodeTellsUsageFromRuntimeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, 0},
		{"usage", kubectlUsageErrorf("a pipeline NAME is required"), 2},
		{"wrapped usage", fmt.Errorf("status: %w", kubectlUsageErrorf("bad")), 2},
		{"runtime", errors.New(`ETLPipeline "x" not found in namespace "y"`), 1},
		{"interrupted", context.Canceled, 1},
	} {
		if got := kubectlExitCode(tc.err); got != tc.want {
			t.Errorf("%s: kubectlExitCode(%v) = %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
}

// runKubectlTest runs the plugin in process and returns its exit code, stdout and stderr.
func runKubectlTest(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := runKubectlContext(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestKubectlUsageErrorsExit2WithoutACluster(t *testing.T) {
	// No kubeconfig at all: a usage error must be found before any client is made.
	t.Setenv("KUBECONFIG", "/nonexistent/kubeconfig")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "a command is required"},
		{[]string{"stauts"}, `unknown command "stauts" (did you mean "status"?)`},
		{[]string{"status", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"status", "a", "b"}, "one pipeline NAME expected, got 2 arguments"},
		{[]string{"status", "-o", "wide"}, `unsupported output format "wide"`},
		{[]string{"status", "x", "-A"}, "cannot be combined with --all-namespaces"},
		{[]string{"pause"}, "a pipeline NAME is required"},
		{[]string{"resume", "a", "b"}, "one pipeline NAME expected"},
		{[]string{"run", "x", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"run", "x", "--wait=maybe"}, "invalid argument"},
		{[]string{"logs", "x", "--tail", "-5"}, "--tail must be -1"},
		{[]string{"logs", "x", "--tail", "many"}, "invalid argument"},
		{[]string{"completion", "tcsh"}, `unsupported shell "tcsh"`},
		{[]string{"completion"}, "one shell expected"},
		{[]string{"checkpoint"}, "a pipeline NAME is required"},
		{[]string{"checkpoint", "rewind", "x"}, "usage: checkpoint NAME, checkpoint reset NAME"},
		{[]string{"checkpoint", "set", "x"}, "checkpoint set needs --values"},
		{[]string{"checkpoint", "reset", "x", "--values", "1"}, "checkpoint reset takes no --values"},
		{[]string{"checkpoint", "x", "--values", "1"}, "--values goes with 'checkpoint set'"},
		{[]string{"checkpoint", "reset", "x", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"rejects", "x", "--replay", "-o", "json"}, "--replay and -o do not go together"},
	} {
		code, stdout, stderr := runKubectlTest(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "--help' for usage") {
			t.Errorf("kubectl sluice %q: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr, tc.want)
		}
		if tc.args != nil && stdout != "" {
			t.Errorf("kubectl sluice %q wrote to stdout: %q", tc.args, stdout)
		}
	}
}

func TestKubectlHelpDocumentsTheExitCodesAndCompletionScriptsNeedNoCluster(t *testing.T) {
	t.Setenv("KUBECONFIG", "/nonexistent/kubeconfig")
	code, stdout, _ := runKubectlTest(t, "--help")
	if code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, want := range []string{"Exit codes:", "0  success", "1  a runtime error", "2  a usage error", "kubectl sluice [command]", "status", "pause", "resume", "run", "logs", "completion"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("--help lacks %q:\n%s", want, stdout)
		}
	}
	for shell, want := range map[string]string{"bash": "bash completion V2 for kubectl-sluice", "zsh": "#compdef kubectl-sluice", "fish": "fish completion for kubectl-sluice"} {
		code, stdout, stderr := runKubectlTest(t, "completion", shell)
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("completion %s: exit %d, stderr %q, script starts %q; want %q", shell, code, stderr, head(stdout), want)
		}
	}
	code, _, stderr := runKubectlTest(t, "status")
	if code != 1 || !strings.Contains(stderr, "load kubeconfig") && !strings.Contains(stderr, "no Kubernetes configuration") {
		t.Errorf("status without a kubeconfig: exit %d, stderr %q; want exit 1 naming the kubeconfig", code, stderr)
	}
}

func head(s string) string {
	if len(s) > 80 {
		return s[:80]
	}
	return s
}

func TestKubectlRunRequestValueIsNewEvenWithinTheSameSecond(t *testing.T) {
	now := time.Date(2025, 6, 1, 10, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))
	for _, tc := range []struct {
		current, want string
	}{
		{"", "2025-06-01T08:00:00Z"},
		{"2025-06-01T07:59:59Z", "2025-06-01T08:00:00Z"},
		{"secret-created", "2025-06-01T08:00:00Z"},
		{"2025-06-01T08:00:00Z", "2025-06-01T08:00:00.123456789Z"},
	} {
		got := kubectlRunRequestValue(now, tc.current)
		if got != tc.want {
			t.Errorf("kubectlRunRequestValue(now, %q) = %q, want %q", tc.current, got, tc.want)
		}
		if _, err := time.Parse(time.RFC3339, got); err != nil {
			t.Errorf("%q is not RFC 3339: %v", got, err)
		}
	}
}
