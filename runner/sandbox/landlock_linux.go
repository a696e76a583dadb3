package sandbox

import (
	"errors"
	"fmt"

	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// handledFS is every filesystem right that Landlock ABI abi knows: a right the ruleset
// handles is denied wherever no rule grants it, so handling them all denies what Rules leave
// out.
func handledFS(abi int) uint64 {
	if abi < 1 {
		return 0
	}
	h := uint64(ll.AccessFSExecute | ll.AccessFSWriteFile | ll.AccessFSReadFile | ll.AccessFSReadDir |
		ll.AccessFSRemoveDir | ll.AccessFSRemoveFile | ll.AccessFSMakeChar | ll.AccessFSMakeDir |
		ll.AccessFSMakeReg | ll.AccessFSMakeSock | ll.AccessFSMakeFifo | ll.AccessFSMakeBlock | ll.AccessFSMakeSym)
	if abi >= abiRefer {
		h |= ll.AccessFSRefer
	}
	if abi >= abiTruncate {
		h |= ll.AccessFSTruncate
	}
	if abi >= abiIoctlDev {
		h |= ll.AccessFSIoctlDev
	}
	if abi >= abiResolveUnix {
		h |= ll.AccessFSResolveUnix
	}
	return h
}

// handledNet is every network right of ABI abi. No rule grants one: every TCP (and, from
// ABI 10, UDP) bind and connect is denied.
func handledNet(abi int) uint64 {
	var h uint64
	if abi >= abiTCP {
		h |= ll.AccessNetBindTCP | ll.AccessNetConnectTCP
	}
	if abi >= abiUDP {
		h |= ll.AccessNetBindUDP | ll.AccessNetConnectSendUDP
	}
	return h
}

// scoped keeps signals and abstract unix socket connections inside the child's domain.
func scoped(abi int) uint64 {
	if abi < abiScopes {
		return 0
	}
	return ll.ScopeAbstractUnixSocket | ll.ScopeSignal
}

// pathAccess is what a rule grants on a file or directory. Read-only paths may be executed
// (the interpreter, and the dynamic loader the kernel opens for it); writable ones may not,
// so that the child cannot write a program and run it. No rule grants device ioctls, sockets
// or device nodes.
func pathAccess(abi int, dir, writable bool) uint64 {
	var a uint64
	switch {
	case dir && writable:
		a = ll.AccessFSReadFile | ll.AccessFSReadDir | ll.AccessFSWriteFile | ll.AccessFSRemoveDir |
			ll.AccessFSRemoveFile | ll.AccessFSMakeDir | ll.AccessFSMakeReg | ll.AccessFSMakeFifo |
			ll.AccessFSMakeSym | ll.AccessFSRefer | ll.AccessFSTruncate
	case dir:
		a = ll.AccessFSExecute | ll.AccessFSReadFile | ll.AccessFSReadDir
	case writable:
		// Truncate too: Python opens a file for writing with O_TRUNC (open(os.devnull, "w")).
		a = ll.AccessFSReadFile | ll.AccessFSWriteFile | ll.AccessFSTruncate
	default:
		a = ll.AccessFSExecute | ll.AccessFSReadFile
	}
	return a & handledFS(abi)
}

// restrictLandlock confines the calling thread to r, with every right of ABI abi handled.
func restrictLandlock(abi int, r Rules) error {
	attr := ll.RulesetAttr{HandledAccessFS: handledFS(abi), HandledAccessNet: handledNet(abi), Scoped: scoped(abi)}
	ruleset, err := ll.LandlockCreateRuleset(&attr, 0)
	if err != nil {
		return fmt.Errorf("create a landlock ruleset (ABI %d): %w", abi, err)
	}
	defer func() { _ = unix.Close(ruleset) }()
	for _, p := range r.ReadOnly {
		if err := allowPath(ruleset, abi, p, false); err != nil {
			return err
		}
	}
	for _, p := range r.ReadWrite {
		if err := allowPath(ruleset, abi, p, true); err != nil {
			return err
		}
	}
	// Without LANDLOCK_RESTRICT_SELF_TSYNC: this thread only.
	if err := ll.LandlockRestrictSelf(ruleset, 0); err != nil {
		return fmt.Errorf("landlock_restrict_self: %w", err)
	}
	return nil
}

// allowPath adds the rule for one path. The rule holds the inode the path resolves to now, so
// a symlink grants its target.
func allowPath(ruleset, abi int, path string, writable bool) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("landlock rule for %s: %w", path, err)
	}
	defer func() { _ = unix.Close(fd) }()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("landlock rule for %s: %w", path, err)
	}
	dir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	rule := ll.PathBeneathAttr{AllowedAccess: pathAccess(abi, dir, writable), ParentFd: fd}
	if err := ll.LandlockAddPathBeneathRule(ruleset, &rule, 0); err != nil {
		return fmt.Errorf("landlock rule for %s: %w", path, err)
	}
	return nil
}

// landlockABI asks the kernel for its Landlock ABI, or why it has none.
func landlockABI() (int, string) {
	abi, err := ll.LandlockGetABIVersion()
	switch {
	case err == nil && abi > 0:
		return abi, ""
	case errors.Is(err, unix.ENOSYS):
		return 0, "the kernel is built without it (CONFIG_SECURITY_LANDLOCK)"
	case errors.Is(err, unix.EOPNOTSUPP):
		return 0, "not enabled at boot: the lsm= kernel parameter lacks landlock"
	case err != nil:
		return 0, fmt.Sprintf("landlock_create_ruleset: %v", err)
	}
	return 0, fmt.Sprintf("the kernel reports ABI %d", abi)
}
