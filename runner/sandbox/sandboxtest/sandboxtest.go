// Package sandboxtest tells a test whether this kernel can sandbox the python worker. In CI a
// kernel that cannot is a failure; elsewhere the test skips, or runs the worker unconfined.
package sandboxtest

import (
	"os"
	"testing"

	"github.com/sluice-dev/sluice/runner/sandbox"
)

// unconfinable returns why this kernel cannot sandbox the worker, failing t in CI.
func unconfinable(t testing.TB) error {
	t.Helper()
	_, err := sandbox.Decide(sandbox.Detect(), false)
	if err != nil && os.Getenv("CI") == "true" {
		t.Fatalf("this kernel cannot sandbox the python worker: %v", err)
	}
	return err
}

// Require skips a test about the sandbox on a kernel that cannot sandbox the worker.
func Require(t testing.TB) {
	t.Helper()
	if err := unconfinable(t); err != nil {
		t.Skipf("this kernel cannot sandbox the python worker: %v", err)
	}
}

// UnconfinedLocally is whether a test that is not about the sandbox runs the worker
// unconfined: on a kernel that cannot sandbox it, outside CI.
func UnconfinedLocally(t testing.TB) bool {
	t.Helper()
	if err := unconfinable(t); err != nil {
		t.Logf("this kernel cannot sandbox the python worker, which runs unconfined: %v", err)
		return true
	}
	return false
}
