package python

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"

	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/sandbox"
)

// sharedLibraries are where the interpreter's shared libraries, and the dynamic loader that
// the kernel opens to run it, live.
var sharedLibraries = []string{"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib"}

// readOnlyData are public files the worker may read: the dynamic loader's cache, without
// which it finds only libraries in its built-in directories (not /usr/local/lib, where a
// derived image may put an extension's library), zoneinfo's time zones, and the random
// source of a Python without getrandom(2). Not /etc/localtime: without it, local time is UTC
// on every node, as a replayed batch needs.
var readOnlyData = []string{"/etc/ld.so.cache", "/usr/share/zoneinfo", "/dev/urandom"}

// decidePlan is the worker's confinement on this kernel, or the business error that fails
// the run when the kernel lacks what the sandbox requires (sandbox.Decide) and
// AllowUnsandboxed is off.
func decidePlan(opts *Options) (sandbox.Plan, error) {
	detect := opts.detect
	if detect == nil {
		detect = sandbox.Detect
	}
	plan, err := sandbox.Decide(detect(), opts.AllowUnsandboxed)
	if err != nil {
		return plan, failure.Business(fmt.Errorf("python transforms cannot run sandboxed on this node: %w "+
			"(runner.allowUnsandboxedPython lets them run unconfined)", err))
	}
	return plan, nil
}

// Confinement describes what confines the worker: "landlock ABI 7 (filesystem, tcp,
// signals, ptrace); seccomp (sockets, io_uring, ptrace)", or "none: ..." when the kernel
// cannot and Options.AllowUnsandboxed let it run unconfined.
func (s *Stage) Confinement() string { return s.plan.String() }

// installation is where an interpreter lives, as it reports itself.
type installation struct {
	// Executable is the interpreter to run: sys.executable, which is the real interpreter
	// when the configured one is a wrapper (a pyenv shim is a shell script), and keeps a
	// virtual environment's path, by which Python finds the environment's pyvenv.cfg.
	Executable string `json:"executable"`
	// Prefixes are sys.prefix, sys.base_prefix, sys.exec_prefix and sys.base_exec_prefix.
	Prefixes []string `json:"prefixes"`
	// Path is sys.path: the standard library and the site directories.
	Path []string `json:"path"`
}

// probeScript asks an interpreter where it lives. It runs the operator's interpreter with no
// task code, before any sandbox, with the worker's flags and environment.
const probeScript = `import json, sys
json.dump({"executable": sys.executable, "path": sys.path,
           "prefixes": [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]}, sys.stdout)`

// installations caches probes by interpreter path: a run starts a new worker after a batch
// failed with an infrastructure error, and the interpreter did not move meanwhile.
var installations sync.Map

// installationOf returns where the interpreter at path lives.
func installationOf(ctx context.Context, path, tmp string) (installation, error) {
	if inst, ok := installations.Load(path); ok {
		return inst.(installation), nil
	}
	cmd := exec.CommandContext(ctx, path, "-s", "-c", probeScript) // #nosec G204 -- the operator's interpreter, our script
	cmd.Env = env(tmp)
	cmd.Dir = "/"
	out, err := cmd.Output()
	if err != nil {
		return installation{}, fmt.Errorf("python interpreter %s does not say where it is installed: %w", path, err)
	}
	var inst installation
	if err := json.Unmarshal(out, &inst); err != nil || !filepath.IsAbs(inst.Executable) {
		return installation{}, fmt.Errorf("python interpreter %s does not say where it is installed: %q", path, out)
	}
	installations.Store(path, inst)
	return inst, nil
}

// workerRules are what the sandboxed worker may reach: read-only, the interpreter, its
// installation (<prefix>/lib, <prefix>/lib64, a virtual environment's pyvenv.cfg, and the
// directories of sys.path), the shared libraries and the standard library's public data;
// read-write, its own working directory and /dev/null. Not /etc, /proc, /var, /tmp or the
// runner's files. "/" in sys.path is left out: it would open everything.
func workerRules(inst installation, workDir string) sandbox.Rules {
	ro := slices.Concat(sharedLibraries, readOnlyData, []string{inst.Executable})
	for _, p := range inst.Prefixes {
		if filepath.IsAbs(p) {
			ro = append(ro, filepath.Join(p, "lib"), filepath.Join(p, "lib64"), filepath.Join(p, "pyvenv.cfg"))
		}
	}
	for _, p := range inst.Path {
		if p = filepath.Clean(p); filepath.IsAbs(p) && p != "/" {
			ro = append(ro, p)
		}
	}
	return sandbox.Rules{ReadOnly: unique(ro), ReadWrite: []string{workDir, "/dev/null"}}
}

// unique drops repeated paths, keeping the first of each.
func unique(paths []string) []string {
	seen := make(map[string]bool, len(paths))
	out := paths[:0]
	for _, p := range paths {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}
