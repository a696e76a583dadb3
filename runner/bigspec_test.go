package runner

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
)

// TestSpecAtTheCRDsSizeLimitRuns: a tasks plan as large as the CRD admits (16 tasks of about
// 64 KiB each, about a megabyte) reaches the runner process in parts; in one environment
// string, Linux refuses to start the process at all (E2BIG).
func TestSpecAtTheCRDsSizeLimitRuns(t *testing.T) {
	bin := buildSluice(t)
	db := newTestDB(t, "main")
	createSource(t, db, 30)
	createTarget(t, db, "items")
	pad := func(n int) string { return strings.Repeat("#"+strings.Repeat("x", 98)+"\n", n/100) }
	var tasks []pyTask
	for i := range 15 {
		code := "def transform(row):\n    return row\n" + pad(65536-40)
		tasks = append(tasks, pyTask{name: "t" + string(rune('a'+i)), code: code})
	}
	query := "SELECT id, updated_at, name, amount, doc FROM src\n-- " + strings.Repeat("y", 65536-70)
	spec := tasksSpecJSON(t, specOpts{sourceConn: "main", batch: 10, query: query}, 0, tasks...)
	if len(spec) < 1000<<10 {
		t.Fatalf("the spec is %d bytes, want about a megabyte", len(spec))
	}
	cfg := writeConfig(t, testConfig(db))
	args := []string{"--config", cfg, "--no-status", "--termination-log", "", "--log-level", "warn", "--python", pythonForTests(),
		"--metrics-bind-address", "0"}

	whole := runEnv(envOf(db), spec, "run-0")
	cmd := exec.Command(bin, append([]string{"runner"}, args...)...)
	for k, v := range whole {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if err := cmd.Run(); err == nil || !strings.Contains(err.Error(), "argument list too long") {
		t.Fatalf("one environment string of %d bytes: %v, want E2BIG", len(spec), err)
	}

	env := runEnv(envOf(db), "", "run-1")
	delete(env, configv1.EnvSpec)
	for _, v := range configv1.SpecEnv(spec) {
		env[v.Name] = v.Value
	}
	p := startRunner(t, bin, env, args...)
	if code := p.wait(t, 2*time.Minute); code != configv1.ExitOK {
		t.Fatalf("runner exited %d:\n%s", code, p.log)
	}
	sinkMatchesSource(t, db, db, "items")
}
