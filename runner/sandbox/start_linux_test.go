package sandbox

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// requirePlan is the plan this kernel allows. In CI a kernel that cannot confine fails the
// test; elsewhere it skips it.
func requirePlan(t *testing.T) Plan {
	t.Helper()
	caps := Detect()
	p, err := Decide(caps, false)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("this kernel cannot confine a child: %v", err)
		}
		t.Skipf("this kernel cannot confine a child: %v", err)
	}
	t.Logf("confinement: %s", p)
	return p
}

// programs are what the test's shell children need to run.
var programs = []string{"/bin", "/usr/bin", "/lib", "/lib64", "/usr/lib", "/usr/lib64"}

// statusOf returns the fields of a /proc status file.
func statusOf(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for line := range strings.Lines(string(data)) {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields
}

// confinedThreads counts the test process's threads that carry no_new_privs or a seccomp
// filter.
func confinedThreads(t *testing.T) int {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range tasks {
		if _, err := os.Stat(p); err != nil {
			continue // a thread that ended meanwhile
		}
		st := statusOf(t, p)
		if st["NoNewPrivs"] != "0" || st["Seccomp"] != "0" {
			n++
		}
	}
	return n
}

// TestStartConfinesTheChildOnly: the child carries no_new_privs and the seccomp filter, one
// thread of the runner does while the child runs (the one that started it), and none once it
// has ended; the runner keeps its sockets throughout.
func TestStartConfinesTheChildOnly(t *testing.T) {
	p := requirePlan(t)
	if n := confinedThreads(t); n != 0 {
		t.Fatalf("%d threads of the test process are confined before the start", n)
	}
	// The child prints its own status, then waits for its stdin to close.
	cmd := exec.Command("/bin/sh", "-c", "cat /proc/self/status; read x; exit 0")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	exited, err := Start(cmd, p, Rules{ReadOnly: append([]string{"/proc"}, programs...)})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	child := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			child[k] = strings.TrimSpace(v)
		}
		if strings.HasPrefix(sc.Text(), "Seccomp_filters:") {
			break
		}
	}
	if child["NoNewPrivs"] != "1" || child["Seccomp"] != "2" {
		t.Errorf("the child has NoNewPrivs %q and Seccomp %q, want 1 and 2 (filter)", child["NoNewPrivs"], child["Seccomp"])
	}
	if n := confinedThreads(t); n != 1 {
		t.Errorf("%d threads of the test process are confined while the child runs, want the one that started it", n)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("the runner lost its sockets: %v", err)
	}
	_ = ln.Close()
	_ = stdin.Close()
	if err := <-exited; err != nil {
		t.Fatalf("the child: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for confinedThreads(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d threads of the test process are still confined after the child ended", confinedThreads(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStartRestrictsTheFilesystem: the child reads and writes in its rules and nowhere else.
func TestStartRestrictsTheFilesystem(t *testing.T) {
	p := requirePlan(t)
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("s3cr3t"), 0o600); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	rules := Rules{ReadOnly: programs, ReadWrite: []string{work, "/dev/null"}}
	cases := []struct {
		name   string
		script string
		fails  bool
	}{
		{"write and read the work dir", `echo hello > ` + work + `/f && cat ` + work + `/f && rm ` + work + `/f`, false},
		{"a file outside", `cat ` + secret, true},
		{"/etc/passwd", `cat /etc/passwd`, true},
		{"a write outside", `echo x > ` + outside + `/new`, true},
		{"the runner's /proc", `cat /proc/` + strconv.Itoa(os.Getpid()) + `/environ`, true},
		{"/dev/null", `echo x > /dev/null`, false},
		{"a program written in the work dir", `cp /bin/true ` + work + `/t && ` + work + `/t`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command("/bin/sh", "-c", c.script)
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			exited, err := Start(cmd, p, rules)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			err = <-exited
			var ee *exec.ExitError
			switch {
			case c.fails && err == nil:
				t.Errorf("the child succeeded: %s", out.String())
			case c.fails && !errors.As(err, &ee):
				t.Errorf("the child: %v", err)
			case !c.fails && err != nil:
				t.Errorf("the child failed: %v: %s", err, out.String())
			}
			if strings.Contains(out.String(), "s3cr3t") {
				t.Errorf("the child read the secret")
			}
			t.Logf("%s", strings.TrimSpace(out.String()))
		})
	}
}
