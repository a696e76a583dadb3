package v1alpha1

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSpecEnvRoundTrip(t *testing.T) {
	for _, size := range []int{0, 10, SpecPartSize, SpecPartSize + 1, 3*SpecPartSize + 7, 1200 << 10} {
		spec := strings.Repeat("é", size/2) + strings.Repeat("x", size%2)
		env := SpecEnv(spec)
		vars := map[string]string{}
		for _, e := range env {
			if len(e.Name)+1+len(e.Value) > 128<<10 {
				t.Fatalf("size %d: %s is %d bytes, beyond the kernel's limit", size, e.Name, len(e.Value))
			}
			if !utf8.ValidString(e.Value) {
				t.Fatalf("size %d: %s cut a rune", size, e.Name)
			}
			vars[e.Name] = e.Value
		}
		got, err := ReadSpec(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
		if err != nil || got != spec {
			t.Fatalf("size %d: read back %d bytes (%v), want %d", size, len(got), err, len(spec))
		}
		if (len(env) > 1) != (len(spec) > SpecPartSize) {
			t.Fatalf("size %d: %d variables", size, len(env))
		}
	}
	if _, err := ReadSpec(func(k string) (string, bool) {
		return map[string]string{EnvSpec: "{", EnvSpecParts: "3", EnvSpec + "_2": "x"}[k], k != EnvSpec+"_3"
	}); err == nil || !strings.Contains(err.Error(), "SLUICE_SPEC_3") {
		t.Fatalf("a missing part: %v", err)
	}
}
