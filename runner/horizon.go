package runner

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/source"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/status"
)

// bound gives the session's reader the run's horizon: taken on the first session of the run
// (source/horizon.go says why it is safe), kept by the readers of later sessions, so a retry
// neither widens nor narrows what the run reads.
func (e *executor) bound(ctx context.Context, s *session) error {
	if e.horizon != nil {
		s.reader.Bound(*e.horizon)
		return nil
	}
	own := []uint32{s.state.PgConn().PID()}
	if s.sinkConn != nil {
		own = append(own, s.sinkConn.PgConn().PID())
	}
	heldAfter := e.p.Config.Runner.HeldAfter()
	h, err := s.reader.TakeHorizon(ctx, source.HorizonOptions{
		Own: own, AppName: appName(e.p.Pipeline), Lag: e.pl.lag, Wait: heldAfter,
	})
	if err != nil {
		return err
	}
	e.horizon = &h
	c := horizonCondition(h, heldAfter, time.Now())
	e.setCondition(c)
	if c.Status == metav1.ConditionTrue {
		// Once per run: the horizon is taken once, at the run's first batch.
		e.event(ctx, true, etlv1.ConditionHorizonHeld, c.Message)
	}
	e.log.Info("read horizon", "horizon", h.Value, "inclusive", h.Inclusive, "empty", h.Empty,
		"held", c.Status == metav1.ConditionTrue, "holder", holderString(h.Holder))
	return nil
}

func holderString(h *source.Holder) string {
	if h == nil {
		return ""
	}
	return h.String()
}

// horizonCondition is the HorizonHeld condition of a horizon taken at now: True when a
// transaction open for longer than heldAfter holds it back (or kept a sequence cursor's
// barrier closed), naming the transaction so that a person can end it.
func horizonCondition(h source.Horizon, heldAfter time.Duration, now time.Time) metav1.Condition {
	c := metav1.Condition{Type: etlv1.ConditionHorizonHeld}
	held := h.Holder != nil && (h.Empty || now.Sub(h.Holder.Since) >= heldAfter)
	switch {
	case held && h.Empty:
		c.Status, c.Reason = metav1.ConditionTrue, etlv1.ReasonTransactionOpen
		c.Message = fmt.Sprintf("the read horizon is held by %s: it was open when the run started and did not end within %s, "+
			"so no row after the checkpoint is read until it ends", h.Holder, heldAfter)
	case held:
		c.Status, c.Reason = metav1.ConditionTrue, etlv1.ReasonTransactionOpen
		c.Message = fmt.Sprintf("the read horizon is held at %s by %s: rows stamped later wait until it ends", h.Value, h.Holder)
	case h.Empty:
		c.Status, c.Reason = metav1.ConditionFalse, etlv1.ReasonHorizonCurrent
		c.Message = "the source has no row to read yet"
	default:
		c.Status, c.Reason = metav1.ConditionFalse, etlv1.ReasonHorizonCurrent
		c.Message = "the read horizon is at " + h.Value
		if h.Inclusive {
			c.Message = "the read horizon is the cursor value " + h.Value
		}
	}
	return c
}

// checkpointReset records that the claim started the stream from an empty checkpoint.
func (e *executor) checkpointReset(ctx context.Context, r *state.Reset) {
	e.log.Warn("checkpoint reset", "reason", r.Reason, "message", r.Message)
	e.setCondition(metav1.Condition{Type: etlv1.ConditionCheckpointReset, Status: metav1.ConditionTrue,
		Reason: r.Reason, Message: r.Message})
	e.event(ctx, true, "CheckpointReset", r.Message)
}

// event records an event on the pipeline when the reporter can, bounded like every call to
// the API server, so that a hanging one cannot stall the run.
func (e *executor) event(ctx context.Context, warning bool, reason, message string) {
	if ev, ok := e.rep.(status.Eventer); ok {
		cctx, cancel := context.WithTimeout(ctx, statusTimeout)
		defer cancel()
		ev.Event(cctx, warning, reason, message)
	}
}

// setCondition adds or replaces one of the runner's conditions in what it reports.
func (e *executor) setCondition(c metav1.Condition) {
	c.ObservedGeneration = e.pl.generation
	for i := range e.conditions {
		if e.conditions[i].Type == c.Type {
			e.conditions[i] = c
			return
		}
	}
	e.conditions = append(e.conditions, c)
}
