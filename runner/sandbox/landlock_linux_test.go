package sandbox

import (
	"testing"

	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// TestHandledRights: the ruleset handles every right the kernel's ABI knows (a right it does
// not handle would be allowed everywhere) and none it does not (the kernel refuses those).
func TestHandledRights(t *testing.T) {
	cases := []struct {
		abi           int
		fs, net, scop uint64
	}{
		{abi: 0},
		{abi: 1, fs: 1<<13 - 1},
		{abi: 2, fs: 1<<14 - 1},
		{abi: 3, fs: 1<<15 - 1},
		{abi: 4, fs: 1<<15 - 1, net: 1<<2 - 1},
		{abi: 5, fs: 1<<16 - 1, net: 1<<2 - 1},
		{abi: 6, fs: 1<<16 - 1, net: 1<<2 - 1, scop: 1<<2 - 1},
		{abi: 7, fs: 1<<16 - 1, net: 1<<2 - 1, scop: 1<<2 - 1},
		{abi: 9, fs: 1<<17 - 1, net: 1<<2 - 1, scop: 1<<2 - 1},
		{abi: 10, fs: 1<<17 - 1, net: 1<<4 - 1, scop: 1<<2 - 1},
	}
	for _, c := range cases {
		if got := handledFS(c.abi); got != c.fs {
			t.Errorf("ABI %d: filesystem rights %#x, want %#x", c.abi, got, c.fs)
		}
		if got := handledNet(c.abi); got != c.net {
			t.Errorf("ABI %d: network rights %#x, want %#x", c.abi, got, c.net)
		}
		if got := scoped(c.abi); got != c.scop {
			t.Errorf("ABI %d: scopes %#x, want %#x", c.abi, got, c.scop)
		}
	}
}

// TestPathAccess: a rule on a file grants only file rights (the kernel refuses directory
// rights there), a writable path is never executable, and a read-only one is never written.
func TestPathAccess(t *testing.T) {
	const fileRights = ll.AccessFSExecute | ll.AccessFSWriteFile | ll.AccessFSReadFile | ll.AccessFSTruncate | ll.AccessFSIoctlDev
	const writes = ll.AccessFSWriteFile | ll.AccessFSRemoveDir | ll.AccessFSRemoveFile | ll.AccessFSMakeChar |
		ll.AccessFSMakeDir | ll.AccessFSMakeReg | ll.AccessFSMakeSock | ll.AccessFSMakeFifo | ll.AccessFSMakeBlock |
		ll.AccessFSMakeSym | ll.AccessFSRefer | ll.AccessFSTruncate
	for abi := 1; abi <= 10; abi++ {
		for _, dir := range []bool{false, true} {
			for _, writable := range []bool{false, true} {
				a := pathAccess(abi, dir, writable)
				if a&^handledFS(abi) != 0 {
					t.Errorf("ABI %d dir=%v writable=%v: %#x grants rights the ruleset does not handle", abi, dir, writable, a)
				}
				if !dir && a&^fileRights != 0 {
					t.Errorf("ABI %d: a file rule grants directory rights %#x", abi, a&^fileRights)
				}
				if writable && a&ll.AccessFSExecute != 0 {
					t.Errorf("ABI %d dir=%v: a writable path is executable", abi, dir)
				}
				if !writable && a&writes != 0 {
					t.Errorf("ABI %d dir=%v: a read-only path grants writes %#x", abi, dir, a&writes)
				}
				if a&(ll.AccessFSIoctlDev|ll.AccessFSMakeChar|ll.AccessFSMakeBlock|ll.AccessFSMakeSock|ll.AccessFSResolveUnix) != 0 {
					t.Errorf("ABI %d: a rule grants devices or sockets: %#x", abi, a)
				}
			}
		}
	}
}
