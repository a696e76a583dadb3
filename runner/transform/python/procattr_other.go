//go:build !linux

package python

import "syscall"

// procAttr puts the worker in a process group of its own. Only Linux can have the kernel kill
// it with the runner; elsewhere it ends when its stdin closes.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// hardenRunner does nothing outside Linux (see procattr_linux.go).
func hardenRunner() {}
