//go:build linux && (amd64 || arm64)

package sandbox

import (
	"testing"

	"golang.org/x/sys/unix"
)

// runFilter evaluates the instructions seccompFilter emits, as the kernel would.
func runFilter(t *testing.T, prog []unix.SockFilter, arch, nr uint32) uint32 {
	t.Helper()
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		ins := prog[pc]
		switch ins.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			switch ins.K {
			case seccompDataNr:
				acc = nr
			case seccompDataArch:
				acc = arch
			default:
				t.Fatalf("load of offset %d", ins.K)
			}
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			match := acc == ins.K
			if ins.Code&0xf0 == unix.BPF_JGE {
				match = acc >= ins.K
			}
			if match {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return ins.K
		default:
			t.Fatalf("instruction %#x", ins.Code)
		}
	}
	t.Fatal("the filter runs off its end")
	return 0
}

// TestSeccompFilter: the filter refuses exactly the denied calls with EPERM, every x32 call,
// and kills a process that makes a call of another architecture.
func TestSeccompFilter(t *testing.T) {
	const eperm = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	for _, signals := range []bool{false, true} {
		denied := deniedSyscalls(signals)
		prog := seccompFilter(auditArch, hasX32, denied)
		if len(prog) > 255 {
			t.Fatalf("%d instructions: the jumps do not fit", len(prog))
		}
		kill := uint32(unix.SECCOMP_RET_ALLOW)
		if signals {
			kill = eperm
		}
		cases := []struct {
			name     string
			arch, nr uint32
			want     uint32
		}{
			{"socket", auditArch, unix.SYS_SOCKET, eperm},
			{"io_uring_setup", auditArch, unix.SYS_IO_URING_SETUP, eperm},
			{"ptrace", auditArch, unix.SYS_PTRACE, eperm},
			{"read", auditArch, unix.SYS_READ, unix.SECCOMP_RET_ALLOW},
			{"openat", auditArch, unix.SYS_OPENAT, unix.SECCOMP_RET_ALLOW},
			{"socketpair", auditArch, unix.SYS_SOCKETPAIR, unix.SECCOMP_RET_ALLOW},
			{"kill", auditArch, unix.SYS_KILL, kill},
			{"pidfd_send_signal", auditArch, unix.SYS_PIDFD_SEND_SIGNAL, kill},
			{"another architecture", unix.AUDIT_ARCH_I386, unix.SYS_READ, unix.SECCOMP_RET_KILL_PROCESS},
		}
		if hasX32 {
			// 41 is socket in the x32 table too.
			cases = append(cases, cases[0])
			cases[len(cases)-1].name, cases[len(cases)-1].nr = "x32 socket", x32Bit|41
		}
		for _, c := range cases {
			if got := runFilter(t, prog, c.arch, c.nr); got != c.want {
				t.Errorf("signals=%v, %s: %#x, want %#x", signals, c.name, got, c.want)
			}
		}
		for _, nr := range denied {
			if got := runFilter(t, prog, auditArch, nr); got != eperm {
				t.Errorf("signals=%v, call %d: %#x, want EPERM", signals, nr, got)
			}
		}
	}
}
