package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// envTerminationLog names the host file that plays the container's terminationMessagePath.
const envTerminationLog = "SLUICE_TERMINATION_LOG"

// proc is the process that plays a pod's container.
type proc struct {
	key    string // namespace/name
	uid    types.UID
	pod    *corev1.Pod // as it was when it started
	binary string
	files  podFiles
	tokens []*tokenFile
	cmd    *exec.Cmd
	pid    int
	start  metav1.Time

	// exited is closed once the process is reaped and the rest of its group killed; exit
	// holds how it ended from then on.
	exited chan struct{}
	exit   exit

	mu          sync.Mutex
	terminating bool
	reported    bool // Running was written to the pod status
	settled     bool // the exit was written to the pod status (or could not be)
}

func (p *proc) isReported() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reported
}

// isSettled reports whether the process ended and its end was reported.
func (p *proc) isSettled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.settled
}

// startProcess starts binary in a process group of its own, its stdout and stderr appended
// to the container's log file, and records its pid in the pod directory.
func startProcess(ctx context.Context, pod *corev1.Pod, binary string, argv, environ []string, dir string, files podFiles) (*proc, error) {
	c := &pod.Spec.Containers[0]
	logFile, err := os.OpenFile(files.log(c.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	defer func() { _ = logFile.Close() }() // the child has its own descriptor
	// Not canceled with ctx: when the agent stops, stopAll ends the process with a grace period.
	cmd := exec.CommandContext(context.WithoutCancel(ctx), binary, argv...) // #nosec G702 -- running the pod's program is the agent's job
	cmd.Env = environ
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	p := &proc{
		key: pod.Namespace + "/" + pod.Name, uid: pod.UID, pod: pod.DeepCopy(), binary: binary, files: files,
		cmd: cmd, pid: cmd.Process.Pid, start: metav1.Now(), exited: make(chan struct{}),
	}
	if err := os.WriteFile(files.pid(), []byte(strconv.Itoa(p.pid)), 0o600); err != nil { // #nosec G703 -- the pod directory
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		_ = cmd.Wait()
		return nil, fmt.Errorf("write pid file: %w", err)
	}
	return p, nil
}

// wait reaps the process, kills what is left of its group (a container's processes end with
// it) and records how it ended.
func (p *proc) wait() {
	_ = p.cmd.Wait()
	finished := metav1.Now()
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	code := exitCode(p.cmd.ProcessState)
	c := &p.pod.Spec.Containers[0]
	file, _ := readAtMost(p.files.termination(), maxTerminationMessage)
	msg := terminationMessage(file, func() string {
		data, _ := readTail(p.files.log(c.Name), 64<<10)
		return tail(data, fallbackLogLines, fallbackLogBytes)
	}, c.TerminationMessagePolicy, code)
	p.exit = exit{code: code, message: msg, started: p.start, finished: finished}
	close(p.exited)
}

// terminate sends SIGTERM to the process group, and SIGKILL once grace has passed. It
// reports whether this call started the termination.
func (p *proc) terminate(grace time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.terminating || p.done() {
		return false
	}
	p.terminating = true
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	go func() {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.exited:
		case <-t.C:
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		}
	}()
	return true
}

func (p *proc) done() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// exitCode is the container exit code: the process's, or 128+signal when a signal ended it.
func exitCode(ps *os.ProcessState) int32 {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return int32(128 + int(ws.Signal())) // #nosec G115 -- signal numbers are small
	}
	return int32(ps.ExitCode()) // #nosec G115 -- an exit status fits in a byte
}

func readAtMost(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	return io.ReadAll(io.LimitReader(f, n))
}

// readTail returns the last n bytes of a file.
func readTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path) // #nosec G703 -- a file of the pod directory
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if off := st.Size() - n; off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(f)
}

// killStale kills the process group a previous agent started for a pod, if it still runs.
// The pid is trusted only when the process's environment names this pod's termination log,
// so that a recycled pid is never killed. It reports whether a pid file was found.
func killStale(files podFiles) bool {
	data, err := os.ReadFile(files.pid())
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return true
	}
	environ, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	marker := []byte("\x00" + envTerminationLog + "=" + files.termination() + "\x00")
	if err == nil && bytes.Contains(append(append([]byte{0}, environ...), 0), marker) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	return true
}
