// Package sandbox confines a child process of the runner (the Python worker) with what the
// Linux kernel offers an unprivileged process: Landlock for the filesystem, TCP, signals and
// ptrace, a seccomp filter for sockets, and no_new_privs, which both need.
//
// Only the child is confined, never the runner, which reads its service-account token and
// talks to Postgres, Elasticsearch and the API server. Landlock domains, seccomp filters and
// no_new_privs belong to a thread, and a forked process inherits those of the thread that
// forked it. Start therefore confines a fresh OS thread of its own, forks the child from it
// (Go forks from the calling thread) and lets that thread die with its confinement when the
// child has ended, instead of handing it back to the Go scheduler.
package sandbox

import (
	"errors"
	"fmt"
	"strings"
)

// Landlock ABI versions that brought what Start uses.
const (
	abiRefer       = 2  // rename and link between directories
	abiTruncate    = 3  // truncate(2) and O_TRUNC
	abiTCP         = 4  // TCP bind and connect
	abiIoctlDev    = 5  // ioctl on devices
	abiScopes      = 6  // signals and abstract unix sockets stay inside the domain
	abiResolveUnix = 9  // connecting to a named unix socket
	abiUDP         = 10 // UDP bind, connect and send
)

// Capabilities are what the running kernel offers for confinement (Detect).
type Capabilities struct {
	// LandlockABI is the kernel's Landlock ABI version; 0 when Landlock is unavailable, and
	// LandlockMissing says why.
	LandlockABI     int
	LandlockMissing string
	// Seccomp is whether a seccomp filter can be installed on this kernel and architecture;
	// when not, SeccompMissing says why.
	Seccomp        bool
	SeccompMissing string
}

// Plan is the confinement a child gets.
type Plan struct {
	// LandlockABI is the ABI whose rights the child's Landlock ruleset handles; 0 for none.
	LandlockABI int
	// Seccomp installs the filter that refuses socket(2) and the other calls of
	// deniedSyscalls; SeccompSignals adds the calls that send signals, for a Landlock that
	// cannot scope them.
	Seccomp, SeccompSignals bool
	// Unconfined says why nothing is applied: the kernel lacks what is required and the
	// caller allowed that. Empty for a confined child.
	Unconfined string
}

// Confined reports whether the plan confines the child at all.
func (p Plan) Confined() bool { return p.Unconfined == "" }

// String describes the plan for status and logs: "landlock ABI 7 (filesystem, tcp, signals,
// ptrace); seccomp (sockets, io_uring, ptrace)", or "none: ..." for an unconfined child.
func (p Plan) String() string {
	if !p.Confined() {
		return "none: " + p.Unconfined
	}
	var parts []string
	if p.LandlockABI > 0 {
		what := []string{"filesystem"}
		if p.LandlockABI >= abiTCP {
			what = append(what, "tcp")
		}
		if p.LandlockABI >= abiUDP {
			what = append(what, "udp")
		}
		if p.LandlockABI >= abiScopes {
			what = append(what, "signals")
		}
		what = append(what, "ptrace")
		parts = append(parts, fmt.Sprintf("landlock ABI %d (%s)", p.LandlockABI, strings.Join(what, ", ")))
	}
	if p.Seccomp {
		what := "sockets, io_uring, ptrace"
		if p.SeccompSignals {
			what += ", signals"
		}
		parts = append(parts, "seccomp ("+what+")")
	}
	return strings.Join(parts, "; ")
}

// Decide returns the confinement of a child on a kernel with capabilities c.
//
// Required, so that the child can read no file but those of Rules, open no network
// connection, and neither signal nor trace the runner:
//   - Landlock, any ABI: nothing else confines the filesystem without privileges. Any ABI
//     also keeps the child from ptrace on processes outside its domain, the runner included.
//     Before ABI 3 a file the runner's user may write can still be truncated.
//   - seccomp filters: Landlock restricts TCP only (from ABI 4) and UDP only from ABI 10,
//     never raw or netlink sockets, so the filter refuses socket(2) of every family, and
//     io_uring, whose operations would bypass it.
//
// Signals to the runner are refused by Landlock's scope from ABI 6, and else by the seccomp
// filter refusing every call that sends a signal (the child then cannot signal itself either).
// Landlock's TCP rules apply too when the ABI has them, behind the filter.
//
// When something required is missing, Decide fails, naming it, unless allowUnconfined is
// set: the child then runs with no confinement at all, and the plan says so. A partial
// sandbox would look like one while leaving open what is missing.
func Decide(c Capabilities, allowUnconfined bool) (Plan, error) {
	var missing []string
	if c.LandlockABI < 1 {
		missing = append(missing, "Landlock ("+orUnknown(c.LandlockMissing)+")")
	}
	if !c.Seccomp {
		missing = append(missing, "seccomp filters ("+orUnknown(c.SeccompMissing)+")")
	}
	if len(missing) > 0 {
		lacks := "the kernel lacks " + strings.Join(missing, " and ")
		if !allowUnconfined {
			return Plan{}, errors.New(lacks)
		}
		return Plan{Unconfined: lacks + "; running unconfined as allowed"}, nil
	}
	return Plan{LandlockABI: c.LandlockABI, Seccomp: true, SeccompSignals: c.LandlockABI < abiScopes}, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unavailable"
	}
	return s
}

// Rules are what a confined child may reach in the filesystem; everything else is denied.
// A path that does not exist is skipped.
type Rules struct {
	// ReadOnly are files, and directories with everything beneath them, that the child may
	// read and execute.
	ReadOnly []string
	// ReadWrite are files, and directories with everything beneath them, that the child may
	// read, write, create in and remove from, but not execute.
	ReadWrite []string
}
