package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Detect asks the kernel what it offers: two system calls that change nothing.
func Detect() Capabilities {
	var c Capabilities
	c.LandlockABI, c.LandlockMissing = landlockABI()
	c.Seccomp, c.SeccompMissing = seccompSupport()
	return c
}

// Start starts cmd confined by p and r, and returns once it has started: exited then receives
// what cmd.Wait returns when the process has ended.
//
// On an OS thread locked to a goroutine of its own, Start sets no_new_privs, restricts the
// thread with Landlock and installs the seccomp filter, each for that thread only, and then
// calls cmd.Start there: os/exec forks from the calling thread (syscall.forkExec clones the
// current M), so the child inherits exactly that thread's confinement. The goroutine then
// waits for the child on the same thread, so that the thread the kernel knows as the child's
// parent, which SysProcAttr.Pdeathsig is tied to, lives as long as the child; and it returns
// without unlocking the thread, which has the runtime end the thread instead of running
// other goroutines on it. Threads the runtime starts while the goroutine is locked are
// created by its template thread, not cloned from the confined one.
//
// The runner's side of cmd.Start runs on the confined thread too: it may create pipes, but
// not open files, so Start gives stdin, stdout and stderr left nil the /dev/null that
// os/exec would open there.
func Start(cmd *exec.Cmd, p Plan, r Rules) (exited <-chan error, err error) {
	warmUp()
	if cmd.Stdin == nil || cmd.Stdout == nil || cmd.Stderr == nil {
		null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		// The child has its own copy once started.
		defer func() { _ = null.Close() }()
		if cmd.Stdin == nil {
			cmd.Stdin = null
		}
		if cmd.Stdout == nil {
			cmd.Stdout = null
		}
		if cmd.Stderr == nil {
			cmd.Stderr = null
		}
	}
	started := make(chan error, 1)
	done := make(chan error, 1)
	go onThreadOfItsOwn(func() {
		if err := confine(p, r); err != nil {
			started <- err
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	})
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}

// onThreadOfItsOwn runs fn locked to an OS thread that ends when fn returns. That cannot be
// the process's main thread: the runtime parks the main thread for good, confinement and
// all, instead of ending it. So when the calling goroutine finds itself there, it keeps the
// main thread while a new goroutine, which must then run on another thread, locks that one,
// and only then lets the main thread go, unconfined.
func onThreadOfItsOwn(fn func()) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			fn()
		}()
		<-locked
		runtime.UnlockOSThread()
		return
	}
	// Never unlocked: when fn returns, the runtime ends the thread.
	fn()
}

var warmOnce sync.Once

// warmUp runs, on an unconfined thread, the once-per-process probe that os runs at its first
// process start to decide whether to use pidfds: the probe signals the runner itself, which
// the confined thread may not, and a failed probe would turn pidfds off for the whole runner.
func warmUp() {
	warmOnce.Do(func() {
		if p, err := os.FindProcess(os.Getpid()); err == nil {
			_ = p.Release()
		}
	})
}

// confine applies p to the calling thread.
func confine(p Plan, r Rules) error {
	if !p.Confined() {
		return nil
	}
	// Landlock and seccomp need it without CAP_SYS_ADMIN; it also keeps a setuid binary from
	// gaining privileges in the child.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	if p.LandlockABI > 0 {
		if err := restrictLandlock(p.LandlockABI, r); err != nil {
			return err
		}
	}
	if p.Seccomp {
		if err := installSeccomp(p.SeccompSignals); err != nil {
			return err
		}
	}
	return nil
}
