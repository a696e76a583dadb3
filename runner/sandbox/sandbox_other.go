//go:build !linux

package sandbox

import (
	"errors"
	"os/exec"
)

// Detect reports that neither Landlock nor seccomp exists outside Linux.
func Detect() Capabilities {
	return Capabilities{LandlockMissing: "a Linux feature", SeccompMissing: "a Linux feature"}
}

// Start starts cmd, which only an unconfined plan allows outside Linux; exited receives what
// cmd.Wait returns.
func Start(cmd *exec.Cmd, p Plan, _ Rules) (exited <-chan error, err error) {
	if p.Confined() {
		return nil, errors.New("confinement needs Linux")
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return done, nil
}
