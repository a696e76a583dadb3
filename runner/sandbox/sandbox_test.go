package sandbox

import (
	"strings"
	"testing"
)

// TestDecide: Landlock and seccomp are required; without one of them the child is refused,
// or runs with nothing applied when the caller allows it, and either way the missing
// mechanism is named. Signals go to seccomp when Landlock cannot scope them.
func TestDecide(t *testing.T) {
	cases := []struct {
		name  string
		caps  Capabilities
		allow bool
		want  Plan
		desc  string
		err   string
	}{
		{name: "landlock 7 and seccomp", caps: Capabilities{LandlockABI: 7, Seccomp: true},
			want: Plan{LandlockABI: 7, Seccomp: true},
			desc: "landlock ABI 7 (filesystem, tcp, signals, ptrace); seccomp (sockets, io_uring, ptrace)"},
		{name: "landlock 6 scopes signals", caps: Capabilities{LandlockABI: 6, Seccomp: true},
			want: Plan{LandlockABI: 6, Seccomp: true},
			desc: "landlock ABI 6 (filesystem, tcp, signals, ptrace); seccomp (sockets, io_uring, ptrace)"},
		{name: "landlock 5 leaves signals to seccomp", caps: Capabilities{LandlockABI: 5, Seccomp: true},
			want: Plan{LandlockABI: 5, Seccomp: true, SeccompSignals: true},
			desc: "landlock ABI 5 (filesystem, tcp, ptrace); seccomp (sockets, io_uring, ptrace, signals)"},
		{name: "landlock 1 confines files only", caps: Capabilities{LandlockABI: 1, Seccomp: true},
			want: Plan{LandlockABI: 1, Seccomp: true, SeccompSignals: true},
			desc: "landlock ABI 1 (filesystem, ptrace); seccomp (sockets, io_uring, ptrace, signals)"},
		{name: "landlock 10 restricts udp", caps: Capabilities{LandlockABI: 10, Seccomp: true},
			want: Plan{LandlockABI: 10, Seccomp: true},
			desc: "landlock ABI 10 (filesystem, tcp, udp, signals, ptrace); seccomp (sockets, io_uring, ptrace)"},
		{name: "no landlock fails closed",
			caps: Capabilities{LandlockMissing: "not enabled at boot: the lsm= kernel parameter lacks landlock", Seccomp: true},
			err:  "the kernel lacks Landlock (not enabled at boot: the lsm= kernel parameter lacks landlock)"},
		{name: "no seccomp fails closed, even with landlock's tcp rules",
			caps: Capabilities{LandlockABI: 7, SeccompMissing: "the kernel is built without it (CONFIG_SECCOMP)"},
			err:  "the kernel lacks seccomp filters (the kernel is built without it (CONFIG_SECCOMP))"},
		{name: "neither names both", caps: Capabilities{},
			err: "the kernel lacks Landlock (unavailable) and seccomp filters (unavailable)"},
		{name: "no landlock, allowed: nothing applied", caps: Capabilities{LandlockMissing: "x", Seccomp: true}, allow: true,
			want: Plan{Unconfined: "the kernel lacks Landlock (x); running unconfined as allowed"},
			desc: "none: the kernel lacks Landlock (x); running unconfined as allowed"},
		{name: "allowing changes nothing on a kernel that has both", caps: Capabilities{LandlockABI: 7, Seccomp: true}, allow: true,
			want: Plan{LandlockABI: 7, Seccomp: true},
			desc: "landlock ABI 7 (filesystem, tcp, signals, ptrace); seccomp (sockets, io_uring, ptrace)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Decide(c.caps, c.allow)
			if c.err != "" {
				if err == nil || err.Error() != c.err {
					t.Fatalf("Decide = %+v, %v; want the error %q", p, err, c.err)
				}
				return
			}
			if err != nil || p != c.want {
				t.Fatalf("Decide = %+v, %v; want %+v", p, err, c.want)
			}
			if p.String() != c.desc {
				t.Errorf("String() = %q, want %q", p.String(), c.desc)
			}
			if p.Confined() == strings.HasPrefix(p.String(), "none:") {
				t.Errorf("Confined() = %v for %q", p.Confined(), p.String())
			}
		})
	}
}
