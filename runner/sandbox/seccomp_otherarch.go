//go:build linux && !amd64 && !arm64

package sandbox

// No filter is built for this architecture: Detect reports seccomp as missing.
const (
	auditArch = 0
	hasX32    = false
)

func deniedSyscalls(bool) []uint32 { return nil }
