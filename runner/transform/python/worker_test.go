package python

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// TestWorkerHasNoAccessToCredentials has a task report its environment, its arguments and
// its open descriptors while the runner's process holds a secret in its environment and an
// open socket: none of them may reach the worker.
func TestWorkerHasNoAccessToCredentials(t *testing.T) {
	const secret = "postgres://runner:s3cr3t-pa55@db.example:5432/app"
	t.Setenv("SLUICE_POSTGRES_DSN_MAIN", secret)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()

	s := start(t, Options{}, `
import json, os, stat, sys
def kind(mode):
    for name, test in (("fifo", stat.S_ISFIFO), ("chr", stat.S_ISCHR), ("sock", stat.S_ISSOCK), ("reg", stat.S_ISREG)):
        if test(mode):
            return name
    return "other"
def transform(row):
    # The sandbox keeps the worker out of /proc: it tells its descriptors by fstat.
    fds = {}
    for fd in range(256):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        fds[str(fd)] = "%s:%d:%d" % (kind(st.st_mode), st.st_dev, st.st_ino)
    try:
        with open("/proc/%d/environ" % os.getppid(), "rb") as f:
            parent = f.read().decode("latin-1")
    except OSError as e:
        parent = "unreadable: " + type(e).__name__
    return {"id": row["id"], "env": json.dumps(dict(os.environ)), "argv": json.dumps(sys.argv),
            "fds": json.dumps(fds), "parent": parent, "cwd": os.getcwd()}
`)
	out, err := apply(t, s, idRows(1))
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	row := out.Rows[0]
	var env map[string]string
	var argv []string
	var fds map[string]string
	for i, v := range []any{&env, &argv, &fds} {
		if err := json.Unmarshal([]byte(row[i+1].(string)), v); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for k, v := range env {
		names = append(names, k)
		if strings.Contains(v, "s3cr3t") || strings.Contains(v, "postgres://") {
			t.Errorf("environment variable %s=%q carries the secret", k, v)
		}
	}
	sort.Strings(names)
	want := []string{"LANG", "PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED", "PYTHONSAFEPATH", "PYTHONUTF8", "TMPDIR"}
	// Python adds LC_CTYPE when it coerces the C locale.
	if strings.Join(names, ",") != strings.Join(want, ",") && strings.Join(names, ",") != strings.Join(append(want[:1:1], append([]string{"LC_CTYPE"}, want[1:]...)...), ",") {
		t.Errorf("the worker's environment is %v, want only %v", names, want)
	}
	if strings.Contains(strings.Join(argv, " "), "s3cr3t") {
		t.Errorf("the worker's arguments carry the secret: %v", argv)
	}
	t.Logf("descriptors: %v", fds)
	if len(fds) > 5 {
		t.Errorf("the worker has %d descriptors open, want stdin, stdout, stderr and its two protocol pipes: %v", len(fds), fds)
	}
	var null syscall.Stat_t
	if err := syscall.Stat(os.DevNull, &null); err != nil {
		t.Fatal(err)
	}
	devNull := fmt.Sprintf("chr:%d:%d", null.Dev, null.Ino)
	for fd, what := range fds {
		if !strings.HasPrefix(what, "fifo:") && what != devNull {
			t.Errorf("descriptor %s is %s: only pipes and /dev/null may be open", fd, what)
		}
	}
	if fds["0"] != devNull || fds["1"] != fds["2"] || fds["2"] == "" {
		t.Errorf("stdin %q should be /dev/null (%s) and stdout %q the stderr pipe %q", fds["0"], devNull, fds["1"], fds["2"])
	}
	cwd := row[5].(string)
	if filepath.Dir(cwd) != filepath.Clean(os.TempDir()) || !strings.HasPrefix(filepath.Base(cwd), "sluice-python-") {
		t.Errorf("the worker's working directory is %v, want a directory of its own in %s", cwd, os.TempDir())
	}
	parent := row[4].(string)
	switch {
	case strings.HasPrefix(parent, "unreadable"):
		t.Logf("the runner's /proc environ: %s", parent)
	case s.plan.Confined():
		t.Errorf("the sandboxed worker read the runner's /proc environ: %.80q...", parent)
	case os.Geteuid() != 0:
		t.Errorf("the worker read the runner's /proc environ: %.80q...", parent)
	default:
		// Root with CAP_SYS_PTRACE reads any process's /proc files when no sandbox keeps it
		// out; the image runs the runner as an unprivileged user, for whom the runner is not
		// dumpable.
		t.Logf("running as root, unsandboxed: the worker can read the runner's /proc environ here")
	}
	_ = s.Close()
	if _, err := os.Stat(cwd); !os.IsNotExist(err) {
		t.Errorf("the worker's directory %s outlives it: %v", cwd, err)
	}
}

// TestPrintGoesToTheLog: what a task prints, on sys.stdout or straight to fd 1, reaches the
// runner's log and leaves the protocol intact.
func TestPrintGoesToTheLog(t *testing.T) {
	var log syncBuffer
	s := start(t, Options{Log: testLogger(&log)}, `
import os
def transform(row):
    print("hello from", row["id"])
    os.write(1, b"raw write\n")
    return row
`)
	out, err := apply(t, s, idRows(3))
	if err != nil || out.Len() != 3 {
		t.Fatalf("Apply = %v, %v", out, err)
	}
	_ = s.Close()
	for _, want := range []string{`line="hello from 3"`, `line="raw write"`} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the log lacks %s:\n%s", want, log.String())
		}
	}
}
