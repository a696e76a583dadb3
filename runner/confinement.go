package runner

import (
	"context"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// reportConfinement says how the run's Python transforms are confined (desc is
// transform.Confinement's, "" without Python): in the log and in the pipeline's Sandboxed
// condition, with a Warning event when they are not confined at all.
func (e *executor) reportConfinement(ctx context.Context, desc string) {
	if desc == "" {
		e.cleared = append(e.cleared, etlv1.ConditionSandboxed)
		return
	}
	c := sandboxCondition(desc)
	e.setCondition(c)
	if c.Status == metav1.ConditionTrue {
		e.log.Info("python transforms confined", "sandbox", desc)
		return
	}
	e.log.Warn("python transforms run unconfined (runner.allowUnsandboxedPython)", "sandbox", desc)
	e.event(ctx, true, etlv1.ReasonUnconfined, c.Message)
}

// sandboxCondition is the Sandboxed condition of a confinement description: a description
// starting with "none:" is a run without a sandbox.
func sandboxCondition(desc string) metav1.Condition {
	if rest, ok := strings.CutPrefix(desc, "none:"); ok {
		return metav1.Condition{Type: etlv1.ConditionSandboxed, Status: metav1.ConditionFalse, Reason: etlv1.ReasonUnconfined,
			Message: "python transforms run without a sandbox, as runner.allowUnsandboxedPython allows:" + rest}
	}
	return metav1.Condition{Type: etlv1.ConditionSandboxed, Status: metav1.ConditionTrue, Reason: etlv1.ReasonConfined,
		Message: "python transforms are confined: " + desc}
}
