//go:build linux && (amd64 || arm64)

package sandbox

import "golang.org/x/sys/unix"

// deniedSyscalls are the calls the filter refuses:
//   - socket(2), of every family: no network, no netlink, no unix socket to a daemon.
//     socketpair(2) stays: it connects the child to itself only;
//   - io_uring, whose operations open sockets and files without the calls above;
//   - ptrace and process_vm_readv/writev (Landlock also confines them to the child's domain);
//   - bpf, perf_event_open, userfaultfd and the keyring calls: kernel surface a transform never
//     needs;
//   - with signals, every call that sends a signal, for a Landlock without signal scoping.
func deniedSyscalls(signals bool) []uint32 {
	nrs := []uint32{
		unix.SYS_SOCKET,
		unix.SYS_IO_URING_SETUP, unix.SYS_IO_URING_ENTER, unix.SYS_IO_URING_REGISTER,
		unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV,
		unix.SYS_BPF, unix.SYS_PERF_EVENT_OPEN, unix.SYS_USERFAULTFD,
		unix.SYS_KEYCTL, unix.SYS_ADD_KEY, unix.SYS_REQUEST_KEY,
	}
	if signals {
		nrs = append(nrs, unix.SYS_KILL, unix.SYS_TKILL, unix.SYS_TGKILL, unix.SYS_RT_SIGQUEUEINFO,
			unix.SYS_RT_TGSIGQUEUEINFO, unix.SYS_PIDFD_SEND_SIGNAL)
	}
	return nrs
}
