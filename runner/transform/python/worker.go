package python

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-dev/sluice/runner/sandbox"
)

// workerScript is the worker's code, passed with -c: nothing is written to disk.
//
//go:embed worker.py
var workerScript string

// Frame kinds (worker.py).
const (
	frameInit   = 'I'
	frameBatch  = 'B'
	frameReady  = 'K'
	frameResult = 'R'
	frameError  = 'E'
)

// headerSize is a frame's header: the payload length (uint32, little endian) and the kind.
const headerSize = 5

// maxFrame bounds a frame from the worker: a batch's rows, however many a task fans out,
// are far below it; a bigger length means the stream is corrupt.
const maxFrame = 1 << 30

// interruptGrace is how long a worker interrupted at its time limit has to report where it
// was before it is killed.
const interruptGrace = 2 * time.Second

// worker is one python3 process.
type worker struct {
	cmd *exec.Cmd
	// in and out are the runner's ends of the worker's stdin and stdout: os pipes, so that
	// reads and writes take deadlines.
	in, out *os.File
	r       *bufio.Reader
	stderr  *tail
	// done is closed when the process has exited and its stderr is drained; state is then
	// its exit status.
	done  chan struct{}
	state *os.ProcessState
	buf   []byte
}

// env is the worker's whole environment, with tmp as its TMPDIR. Nothing of the runner's is
// passed but PATH: the runner's environment holds the DSNs of its connections.
func env(tmp string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	return []string{
		"PATH=" + path,
		"LANG=C.UTF-8",
		"TMPDIR=" + tmp,
		// Deterministic str hashes, so that a set's iteration order (and anything derived
		// from hash()) is the same when a batch is replayed. It is why the worker does not run
		// with -I or -E, which would ignore it.
		"PYTHONHASHSEED=0",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONUTF8=1",
		// Python 3.11+: do not put the working directory first on sys.path.
		"PYTHONSAFEPATH=1",
	}
}

// startWorker starts python3, confined by plan, and sends it the tasks. It returns when the
// worker has compiled them and run their setup(), or with the error that stopped it.
func startWorker(ctx context.Context, opts *Options, plan sandbox.Plan, log *slog.Logger) (*worker, error) {
	path, err := exec.LookPath(opts.Python)
	if err != nil {
		return nil, &startError{fmt.Errorf("python interpreter %q not found: %w", opts.Python, err)}
	}
	hardenRunner()
	// The worker's working directory and TMPDIR, the only place it may write; it goes with
	// the worker.
	dir, err := os.MkdirTemp("", "sluice-python-")
	if err != nil {
		return nil, fmt.Errorf("start python worker: %w", err)
	}
	w, err := spawn(ctx, path, dir, plan, log)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return w, nil
}

// spawn starts the worker process in dir.
func spawn(ctx context.Context, path, dir string, plan sandbox.Plan, log *slog.Logger) (*worker, error) {
	exe := path
	var rules sandbox.Rules
	if plan.Confined() {
		probeCtx, cancel := context.WithTimeout(ctx, probeTimeout)
		inst, err := installationOf(probeCtx, path, dir)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
			// The run was cancelled meanwhile: not the interpreter's fault.
			return nil, context.Cause(ctx)
		case err != nil:
			return nil, &startError{err}
		}
		exe = inst.Executable
		rules = workerRules(inst, dir)
	}
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start python worker: %w", err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		_ = stdinR.Close()
		_ = stdinW.Close()
		return nil, fmt.Errorf("start python worker: %w", err)
	}
	// -s: no user site-packages. Not -I (isolated mode): it would ignore PYTHONHASHSEED, and
	// the environment is built from nothing anyway. Not -S: a derived image may install
	// packages the tasks import.
	// The worker lives until the stage closes it, not until the context of its start ends.
	cmd := exec.CommandContext(context.WithoutCancel(ctx), exe, "-s", "-c", workerScript) // #nosec G204 -- the operator's interpreter, our script
	cmd.Env = env(dir)
	cmd.Dir = dir
	cmd.Stdin = stdinR
	cmd.Stdout = stdoutW
	w := &worker{cmd: cmd, in: stdinW, out: stdoutR, done: make(chan struct{}),
		stderr: &tail{log: log, budget: stderrLogBudget}}
	cmd.Stderr = w.stderr
	cmd.SysProcAttr = procAttr()
	// A task's stray subprocess holding stderr open must not keep Wait from returning.
	cmd.WaitDelay = time.Second
	exited, err := sandbox.Start(cmd, plan, rules)
	_ = stdinR.Close()
	_ = stdoutW.Close()
	if err != nil {
		_ = stdinW.Close()
		_ = stdoutR.Close()
		return nil, &startError{fmt.Errorf("start python worker %s: %w", exe, err)}
	}
	w.r = bufio.NewReaderSize(stdoutR, 1<<16)
	go func() {
		// The channel orders Wait's writes before these reads. How the worker ended is in
		// ProcessState, which exitReport words when it matters.
		if err := <-exited; err != nil {
			log.Debug("python worker exited", "status", err.Error())
		}
		w.state = cmd.ProcessState
		_ = os.RemoveAll(dir)
		close(w.done)
	}()
	return w, nil
}

// probeTimeout bounds asking the interpreter where it lives: a python3 that starts and exits.
const probeTimeout = 30 * time.Second

// startError is a worker that could not start: no interpreter, or not executable.
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// errTimeout is a round trip that outlived its time limit.
var errTimeout = errors.New("time limit exceeded")

// roundTrip sends a frame and reads the answer within limit. On errTimeout the caller
// interrupts the worker; on any other error the worker is gone or must go.
func (w *worker) roundTrip(ctx context.Context, frame []byte, limit time.Duration) (byte, []byte, error) {
	deadline := time.Now().Add(limit)
	_ = w.in.SetWriteDeadline(deadline)
	_ = w.out.SetReadDeadline(deadline)
	// A cancelled run must not wait for the worker: moving the deadlines to the past wakes
	// the blocked read or write.
	stop := context.AfterFunc(ctx, func() {
		past := time.Unix(1, 0)
		_ = w.in.SetWriteDeadline(past)
		_ = w.out.SetReadDeadline(past)
	})
	defer stop()
	if _, err := w.in.Write(frame); err != nil {
		return 0, nil, w.ioError(ctx, err)
	}
	kind, payload, err := w.read()
	if err != nil {
		return 0, nil, w.ioError(ctx, err)
	}
	return kind, payload, nil
}

func (w *worker) ioError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errTimeout
	}
	return err
}

// read reads one frame. The payload is valid until the next read.
func (w *worker) read() (byte, []byte, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(w.r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(h[:4])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("python worker sent a frame of %d bytes", n)
	}
	if cap(w.buf) < int(n) {
		w.buf = make([]byte, n)
	}
	w.buf = w.buf[:n]
	if _, err := io.ReadFull(w.r, w.buf); err != nil {
		return 0, nil, err
	}
	return h[4], w.buf, nil
}

// interrupt asks the worker where it is (SIGINT raises KeyboardInterrupt in the running task)
// and returns its error frame, if it sends one in time. The worker is killed afterwards
// regardless.
func (w *worker) interrupt() []byte {
	if err := w.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return nil
	}
	_ = w.out.SetReadDeadline(time.Now().Add(interruptGrace))
	for {
		kind, payload, err := w.read()
		if err != nil {
			return nil
		}
		// A result that was on its way when the time ran out is skipped.
		if kind == frameError {
			return payload
		}
	}
}

// kill ends the worker at once and waits for it.
func (w *worker) kill() {
	_ = w.cmd.Process.Kill()
	w.wait(5 * time.Second)
	w.closePipes()
}

// stop ends a worker that is not busy: closing its stdin ends its loop.
func (w *worker) stop() {
	_ = w.in.Close()
	select {
	case <-w.done:
	case <-time.After(2 * time.Second):
		_ = w.cmd.Process.Kill()
		w.wait(5 * time.Second)
	}
	w.closePipes()
}

func (w *worker) closePipes() {
	_ = w.in.Close()
	_ = w.out.Close()
}

// wait waits at most d for the process to exit and its stderr to drain.
func (w *worker) wait(d time.Duration) bool {
	select {
	case <-w.done:
		return true
	case <-time.After(d):
		return false
	}
}

// exitReport describes how a worker that stopped answering ended, with the end of its
// stderr. memory is set when Python said it ran out of memory.
func (w *worker) exitReport() (msg string, memory, signaled bool) {
	exited := w.wait(3 * time.Second)
	if !exited {
		_ = w.cmd.Process.Kill()
		exited = w.wait(2 * time.Second)
	}
	status := "it stopped answering"
	// state is written before done closes: read it only after.
	if st := w.state; exited && st != nil {
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			status = "it was killed by signal " + ws.Signal().String()
			signaled = true
		} else {
			status = fmt.Sprintf("it exited with status %d", st.ExitCode())
		}
	}
	text := w.stderr.String()
	memory = strings.Contains(text, "MemoryError") || strings.Contains(text, "Cannot allocate memory") ||
		strings.Contains(text, "out of memory")
	// What the worker wrote (a task's print, Python's own report of a crash) may quote rows:
	// it went to the runner's log, and the error only points there.
	if text != "" {
		status += "; its last output is in the runner's log (python stderr)"
	}
	return status, memory, signaled
}

// stderrTail is how much of the worker's stderr is kept for error messages.
const stderrTail = 2048

// stderrLogBudget bounds how much of the worker's stderr goes to the runner's log: a task
// that prints for every row must not flood it.
const stderrLogBudget = 64 << 10

// tail receives the worker's stderr: it logs complete lines (print() in a task, warnings)
// until the budget is spent and keeps the last bytes for error messages.
type tail struct {
	mu     sync.Mutex
	log    *slog.Logger
	budget int
	line   []byte
	last   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.last = append(t.last, p...)
	if len(t.last) > 2*stderrTail {
		t.last = append(t.last[:0], t.last[len(t.last)-stderrTail:]...)
	}
	if t.log == nil || t.budget <= 0 {
		return len(p), nil
	}
	t.line = append(t.line, p...)
	for {
		i := bytes.IndexByte(t.line, '\n')
		if i < 0 {
			break
		}
		if t.budget > 0 {
			t.log.Info("python output", "line", string(t.line[:i]))
			t.budget -= i + 1
			if t.budget <= 0 {
				t.log.Warn("python output exceeds the log budget; further output is not logged", "budget", stderrLogBudget)
			}
		}
		t.line = t.line[i+1:]
	}
	if len(t.line) > stderrTail {
		t.line = t.line[:0]
	}
	return len(p), nil
}

// String returns the last bytes written, starting at a line.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.last
	if len(s) > stderrTail {
		s = s[len(s)-stderrTail:]
		if i := bytes.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
	}
	return strings.TrimRight(string(s), "\n")
}
