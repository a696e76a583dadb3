package python

import (
	"sync"
	"syscall"
)

// procAttr puts the worker in a process group of its own (a Ctrl-C meant for the runner
// does not interrupt a task) and has the kernel kill it when the runner dies, even by
// SIGKILL, so that no worker outlives its run. (Pdeathsig fires when the thread that started
// the worker ends: sandbox.Start starts it from a thread of its own that waits for it and
// ends only after it. The worker also ends on its own when its stdin closes.)
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

var hardenOnce sync.Once

// hardenRunner makes the runner process non-dumpable before the first worker starts. The
// worker runs as the runner's user, which could otherwise read the runner's environment (and
// with it the DSNs) from /proc/<runner>/environ, or its memory from /proc/<runner>/mem. A
// non-dumpable process's /proc files belong to root and need CAP_SYS_PTRACE to read.
func hardenRunner() {
	hardenOnce.Do(func() {
		_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0)
	})
}
