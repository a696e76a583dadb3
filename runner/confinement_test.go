package runner

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestSandboxCondition(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		status metav1.ConditionStatus
		reason string
		inMsg  string
	}{
		{"landlock ABI 7 (filesystem, tcp, signals, ptrace); seccomp (sockets)", metav1.ConditionTrue, etlv1.ReasonConfined, "confined: landlock ABI 7"},
		{"none: the kernel lacks Landlock (disabled at boot); running unconfined as allowed", metav1.ConditionFalse, etlv1.ReasonUnconfined,
			"runner.allowUnsandboxedPython allows: the kernel lacks Landlock"},
	} {
		c := sandboxCondition(tc.desc)
		if c.Type != etlv1.ConditionSandboxed || c.Status != tc.status || c.Reason != tc.reason || !strings.Contains(c.Message, tc.inMsg) {
			t.Errorf("%q: %+v", tc.desc, c)
		}
	}
}
