package sandbox

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offsets in struct seccomp_data.
const (
	seccompDataNr   = 0
	seccompDataArch = 4
)

// x32Bit marks the x32 ABI's system call numbers on amd64: the same calls as amd64's under
// other numbers, which a filter matching amd64's numbers alone would let through.
const x32Bit = 0x40000000

// seccompFilter is the BPF program that refuses the calls in denied with EPERM (Python raises
// PermissionError) and allows the rest. A call of another architecture (a 32-bit binary the
// child runs) kills the process: its numbers mean other calls. With x32, every x32 call is
// refused.
func seccompFilter(arch uint32, x32 bool, denied []uint32) []unix.SockFilter {
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: seccompDataArch},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: arch, Jt: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_KILL_PROCESS},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: seccompDataNr},
	}
	header := len(prog)
	checks := len(denied)
	if x32 {
		checks++
	}
	// A check that matches jumps over the checks after it and the allow, to the deny at
	// header+checks+1; the offset counts from the next instruction.
	jump := func() uint8 { return uint8(header + checks - len(prog)) }
	if x32 {
		prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, K: x32Bit, Jt: jump()})
	}
	for _, nr := range denied {
		prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: nr, Jt: jump()})
	}
	return append(prog,
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
	)
}

// installSeccomp installs the filter on the calling thread only: without
// SECCOMP_FILTER_FLAG_TSYNC the runner's other threads keep their sockets.
func installSeccomp(signals bool) error {
	filter := seccompFilter(auditArch, hasX32, deniedSyscalls(signals))
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))) // #nosec G103 -- seccomp(2) takes the program's address
	runtime.KeepAlive(filter)
	if errno != 0 {
		return fmt.Errorf("install the seccomp filter: %w", errno)
	}
	return nil
}

// seccompSupport reports whether a filter can be installed, or why not.
func seccompSupport() (bool, string) {
	if auditArch == 0 {
		return false, "no filter is built for " + runtime.GOARCH
	}
	action := uint32(unix.SECCOMP_RET_ERRNO)
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&action))) // #nosec G103 -- seccomp(2) takes the action's address
	switch {
	case errno == 0:
		return true, ""
	case errors.Is(errno, unix.ENOSYS):
		return false, "the kernel is built without it (CONFIG_SECCOMP)"
	case errors.Is(errno, unix.EINVAL):
		return false, "the kernel is built without filters (CONFIG_SECCOMP_FILTER)"
	}
	return false, fmt.Sprintf("seccomp(SECCOMP_GET_ACTION_AVAIL): %v", errno)
}
