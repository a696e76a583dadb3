package python

import (
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/sandbox"
	"github.com/sluice-dev/sluice/runner/sandbox/sandboxtest"
)

// escapeTask tries, for each row, what the row's case names, and returns what came of it:
// "allowed", or the exception's type and errno. Reporting through the row's value lets the
// test tell which exception the sandbox raised.
const escapeTask = `
import ctypes, os, signal, socket, subprocess, tempfile

def attempt(case, arg):
    if case == "token":
        return open("/var/run/secrets/kubernetes.io/serviceaccount/token").read()
    if case == "secret file":
        return open(arg).read()
    if case == "/etc/passwd":
        return open("/etc/passwd").read()
    if case == "write outside":
        return open(arg, "w").write("x")
    if case == "runner memory":
        return open("/proc/%s/mem" % arg, "rb").read(1)
    if case == "tcp to postgres' port":
        return socket.create_connection(("127.0.0.1", int(arg)), timeout=5).close()
    if case == "udp socket":
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    if case == "unix socket":
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
    if case == "kill 0 to the runner":
        return os.kill(int(arg), 0)
    if case == "SIGTERM to the runner":
        return os.kill(int(arg), signal.SIGTERM)
    if case == "ptrace the runner":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.ptrace(16, int(arg), None, None) != 0:  # PTRACE_ATTACH
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return None
    if case == "a shell":
        return subprocess.run(["/bin/sh", "-c", "cat /etc/passwd"], capture_output=True).stdout
    if case == "its own directory":
        with open("scratch", "w") as f:
            f.write("kept")
        with tempfile.NamedTemporaryFile("w+") as f:
            f.write("temp")
            f.seek(0)
            return open("scratch").read() + "+" + f.read()
    if case == "stdlib":
        import base64, collections, csv, datetime, decimal, hashlib, io, itertools, json, math, re
        import statistics, unicodedata, uuid, zoneinfo
        d = datetime.datetime(2024, 5, 1, 9, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
        return "%s %s %s %s %s" % (hashlib.sha256(b"sluice").hexdigest()[:8], re.sub(r"\d", "#", "a1b2"),
                                   decimal.Decimal("1.10") + decimal.Decimal("2.205"), d.utcoffset(),
                                   json.dumps({"k": [1, 2]}))
    if case == "self signal":
        return os.kill(os.getpid(), 0)
    raise AssertionError("unknown case " + case)

def transform(row):
    try:
        v = attempt(row["case"], row["arg"])
        row["result"] = "allowed" if v is None or v == 1 else "allowed: " + str(v)[:80]
    except OSError as e:
        row["result"] = "%s errno %s" % (type(e).__name__, e.errno)
    return row
`

// TestSandboxKeepsTheWorkerIn: a transform cannot read the service-account token or any
// file outside its directory and its Python, cannot open a socket (TCP to a port listening on
// 127.0.0.1 included), and can neither signal nor trace the runner, while ordinary transforms,
// the standard library and its own directory keep working. It runs with what this kernel
// offers, and again as older kernels would confine the worker: Landlock without signal
// scoping (ABI 5) and without TCP rules (ABI 1), where seccomp takes over.
func TestSandboxKeepsTheWorkerIn(t *testing.T) {
	sandboxtest.Require(t)
	caps := sandbox.Detect()
	interpreters := []string{testPython()}
	if DefaultPython != testPython() {
		interpreters = append(interpreters, DefaultPython) // a pyenv shim here: a script, not Python
	}
	for _, python := range interpreters {
		for _, abi := range []int{caps.LandlockABI, 5, 1} {
			if abi > caps.LandlockABI {
				continue
			}
			t.Run(python+" landlock "+strconv.Itoa(abi), func(t *testing.T) {
				older := caps
				older.LandlockABI = abi
				s := start(t, Options{Python: python, detect: func() sandbox.Capabilities { return older }}, escapeTask)
				t.Logf("confinement: %s", s.Confinement())
				if !strings.HasPrefix(s.Confinement(), "landlock ABI "+strconv.Itoa(abi)+" ") ||
					!strings.Contains(s.Confinement(), "seccomp (sockets") {
					t.Errorf("Confinement() = %q, want Landlock ABI %d and seccomp", s.Confinement(), abi)
				}
				// The worker may signal itself where Landlock scopes signals; seccomp, which
				// takes over before ABI 6, refuses every signal.
				self := "allowed"
				if abi < 6 {
					self = "PermissionError errno 1"
				}
				escapes(t, s, self)
			})
		}
	}
}

// escapes runs escapeTask's cases through s.
func escapes(t *testing.T, s *Stage, self string) {
	t.Helper()
	outside := t.TempDir()
	secret := filepath.Join(outside, "token")
	if err := os.WriteFile(secret, []byte("s3cr3t-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- struct{}{}
			_ = c.Close()
		}
	}()
	// A SIGTERM that got through must fail the test, not end it.
	terms := make(chan os.Signal, 1)
	signal.Notify(terms, syscall.SIGTERM)
	defer signal.Stop(terms)

	pid := strconv.Itoa(os.Getpid())
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	// A token the pod does not have here is missing, not readable.
	token := "PermissionError errno 13"
	if _, err := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/token"); os.IsNotExist(err) {
		token = "FileNotFoundError errno 2"
	}
	cases := []struct{ name, arg, want string }{
		{"token", "", token},
		{"secret file", secret, "PermissionError errno 13"},
		{"/etc/passwd", "", "PermissionError errno 13"},
		{"write outside", filepath.Join(outside, "new"), "PermissionError errno 13"},
		{"runner memory", pid, "PermissionError errno 13"},
		{"tcp to postgres' port", port, "PermissionError errno 1"},
		{"udp socket", "", "PermissionError errno 1"},
		{"unix socket", "", "PermissionError errno 1"},
		{"kill 0 to the runner", pid, "PermissionError errno 1"},
		{"SIGTERM to the runner", pid, "PermissionError errno 1"},
		{"ptrace the runner", pid, "PermissionError errno 1"},
		{"a shell", "", "PermissionError errno 13"},
		{"its own directory", "", "allowed: kept+temp"},
		{"stdlib", "", `allowed: 0f5aec3c a#b# 3.305 2:00:00 {"k": [1, 2]}`},
		{"self signal", "", self},
	}
	in := &batch.Batch{Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "case", Type: pgtype.TextOID},
		{Name: "arg", Type: pgtype.TextOID}}}
	for i, c := range cases {
		in.Rows = append(in.Rows, []any{int64(i + 1), c.name, c.arg})
	}
	out, err := apply(t, s, in)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	result := out.Index("result")
	for i, c := range cases {
		got := out.Rows[i][result]
		if got != c.want {
			t.Errorf("%s: %v, want %s", c.name, got, c.want)
		}
		if strings.Contains(textOf(got), "s3cr3t") || strings.Contains(textOf(got), "root:") {
			t.Errorf("%s: the worker read a secret: %v", c.name, got)
		}
	}
	select {
	case <-accepted:
		t.Error("the worker connected to the listening port")
	case <-terms:
		t.Error("the worker's SIGTERM reached the runner")
	case <-time.After(100 * time.Millisecond):
	}
	// The runner itself keeps its sockets and its files.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("the runner cannot connect any more: %v", err)
	}
	_ = conn.Close()
	if _, err := os.ReadFile(secret); err != nil {
		t.Fatalf("the runner cannot read its files any more: %v", err)
	}
}

// TestSandboxFailsClosed: on a kernel without what the sandbox requires, Start fails with a
// business error that names what is missing, before any row; with AllowUnsandboxed it
// starts the worker unconfined and says so.
func TestSandboxFailsClosed(t *testing.T) {
	const code = "def transform(row):\n    row['passwd'] = len(open('/etc/passwd').read()) > 0\n    return row\n"
	cases := []struct {
		name string
		caps sandbox.Capabilities
		want string
	}{
		{"no landlock", sandbox.Capabilities{LandlockMissing: "not enabled at boot: the lsm= kernel parameter lacks landlock", Seccomp: true},
			"the kernel lacks Landlock (not enabled at boot: the lsm= kernel parameter lacks landlock)"},
		{"no seccomp", sandbox.Capabilities{LandlockABI: 7, SeccompMissing: "the kernel is built without it (CONFIG_SECCOMP)"},
			"the kernel lacks seccomp filters (the kernel is built without it (CONFIG_SECCOMP))"},
		{"neither", sandbox.Capabilities{LandlockMissing: "the kernel is built without it (CONFIG_SECURITY_LANDLOCK)",
			SeccompMissing: "the kernel is built without it (CONFIG_SECCOMP)"},
			"the kernel lacks Landlock (the kernel is built without it (CONFIG_SECURITY_LANDLOCK)) and seccomp filters"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			detect := func() sandbox.Capabilities { return c.caps }
			_, err := startErr(t, Options{detect: detect}, code)
			if err == nil || failure.Classify(err) != etlv1.ErrorBusiness {
				t.Fatalf("Start = %v, want a business error", err)
			}
			for _, w := range []string{"python transforms cannot run sandboxed on this node", c.want, "runner.allowUnsandboxedPython"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the error does not contain %q: %v", w, err)
				}
			}

			s := start(t, Options{detect: detect, AllowUnsandboxed: true}, code)
			if got := s.Confinement(); !strings.HasPrefix(got, "none: "+c.want) {
				t.Errorf("Confinement() = %q, want it to start with none: and name what is missing", got)
			}
			out, err := apply(t, s, idRows(1))
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if out.Rows[0][2] != true {
				t.Errorf("the unconfined worker could not read /etc/passwd: %v", out.Rows[0])
			}
		})
	}
}

// TestWorkerRules: the worker may read its interpreter, its installation and the shared
// libraries, write only its directory and /dev/null, and nothing of /etc, /proc, /var or /.
func TestWorkerRules(t *testing.T) {
	cases := []struct {
		name string
		inst installation
		want []string
	}{
		{"debian", installation{Executable: "/usr/bin/python3", Prefixes: []string{"/usr", "/usr", "/usr", "/usr"},
			Path: []string{"/usr/lib/python311.zip", "/usr/lib/python3.11", "/usr/lib/python3.11/lib-dynload",
				"/usr/local/lib/python3.11/dist-packages", "/usr/lib/python3/dist-packages"}},
			[]string{"/usr/bin/python3", "/usr/pyvenv.cfg", "/usr/lib/python311.zip", "/usr/lib/python3.11",
				"/usr/lib/python3.11/lib-dynload", "/usr/local/lib/python3.11/dist-packages", "/usr/lib/python3/dist-packages"}},
		{"pyenv", installation{Executable: "/root/.pyenv/versions/3.11.7/bin/python3",
			Prefixes: []string{"/root/.pyenv/versions/3.11.7", "/root/.pyenv/versions/3.11.7"},
			Path:     []string{"/root/.pyenv/versions/3.11.7/lib/python3.11"}},
			[]string{"/root/.pyenv/versions/3.11.7/bin/python3", "/root/.pyenv/versions/3.11.7/lib",
				"/root/.pyenv/versions/3.11.7/lib64", "/root/.pyenv/versions/3.11.7/pyvenv.cfg",
				"/root/.pyenv/versions/3.11.7/lib/python3.11"}},
		{"a virtual environment, a relative and a root entry in sys.path", installation{Executable: "/opt/venv/bin/python",
			Prefixes: []string{"/opt/venv", "/usr", "/opt/venv", "/usr"}, Path: []string{"", ".", "/", "/opt/app/"}},
			[]string{"/opt/venv/bin/python", "/opt/venv/lib", "/opt/venv/lib64", "/opt/venv/pyvenv.cfg", "/usr/pyvenv.cfg", "/opt/app"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := workerRules(c.inst, "/tmp/sluice-python-1")
			want := slices.Concat(sharedLibraries, readOnlyData, c.want)
			if !sameSet(r.ReadOnly, want) {
				t.Errorf("read-only %v, want %v", r.ReadOnly, want)
			}
			if !sameSet(r.ReadWrite, []string{"/tmp/sluice-python-1", "/dev/null"}) {
				t.Errorf("read-write %v", r.ReadWrite)
			}
			for _, p := range slices.Concat(r.ReadOnly, r.ReadWrite) {
				for _, banned := range []string{"/", "/etc", "/proc", "/var", "/tmp", "/root", "/usr", "/usr/bin", "/usr/share"} {
					if p == banned {
						t.Errorf("the rules open %s", p)
					}
				}
				if strings.HasPrefix(p, "/etc/") && p != "/etc/ld.so.cache" {
					t.Errorf("the rules open %s", p)
				}
			}
		})
	}
}

// sameSet reports whether a and b hold the same paths, a each once.
func sameSet(a, b []string) bool {
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	return len(slices.Compact(slices.Clone(a))) == len(a) && slices.Equal(a, slices.Compact(b))
}
