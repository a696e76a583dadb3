package v1alpha1

import (
	"fmt"
	"strconv"
	"strings"
)

// The spec snapshot travels to the runner in its environment. Linux refuses to exec a program
// one of whose environment strings exceeds 128 KiB (E2BIG), and a tasks plan may reach about a
// megabyte (16 tasks of 64 KiB of code), so the snapshot is cut into parts under that limit:
// SLUICE_SPEC holds the first, SLUICE_SPEC_2, SLUICE_SPEC_3, ... the next ones, and
// SLUICE_SPEC_PARTS their number when there is more than one.

// EnvSpecParts is the number of parts of a spec snapshot cut in several.
const EnvSpecParts = "SLUICE_SPEC_PARTS"

// SpecPartSize is the largest part, with room under the kernel's limit for the name.
const SpecPartSize = 96 << 10

// EnvVar is a name and a value.
type EnvVar struct{ Name, Value string }

// SpecEnv returns the environment variables carrying spec, cut on rune boundaries.
func SpecEnv(spec string) []EnvVar {
	var parts []string
	for len(spec) > SpecPartSize {
		cut := SpecPartSize
		for cut > 0 && !runeStart(spec[cut]) {
			cut--
		}
		parts = append(parts, spec[:cut])
		spec = spec[cut:]
	}
	parts = append(parts, spec)
	out := []EnvVar{{Name: EnvSpec, Value: parts[0]}}
	if len(parts) == 1 {
		return out
	}
	out = append(out, EnvVar{Name: EnvSpecParts, Value: strconv.Itoa(len(parts))})
	for i, p := range parts[1:] {
		out = append(out, EnvVar{Name: fmt.Sprintf("%s_%d", EnvSpec, i+2), Value: p})
	}
	return out
}

func runeStart(b byte) bool { return b&0xC0 != 0x80 }

// ReadSpec reassembles the spec snapshot from the environment.
func ReadSpec(lookup func(string) (string, bool)) (string, error) {
	first, _ := lookup(EnvSpec)
	n, ok := lookup(EnvSpecParts)
	if !ok || n == "" {
		return first, nil
	}
	parts, err := strconv.Atoi(n)
	if err != nil || parts < 1 || parts > 64 {
		return "", fmt.Errorf("%s=%q: want the number of spec parts", EnvSpecParts, n)
	}
	var b strings.Builder
	b.WriteString(first)
	for i := 2; i <= parts; i++ {
		p, ok := lookup(fmt.Sprintf("%s_%d", EnvSpec, i))
		if !ok {
			return "", fmt.Errorf("spec part %s_%d of %d is missing", EnvSpec, i, parts)
		}
		b.WriteString(p)
	}
	return b.String(), nil
}
