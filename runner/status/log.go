package status

import (
	"context"
	"log/slog"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// Log is the reporter of a run without Kubernetes (tests, benchmarks, a run by hand): it
// claims unconditionally, never pauses, and logs progress and the end.
type Log struct {
	log     *slog.Logger
	trigger etlv1.RunTrigger
	opts    options
}

var _ Reporter = (*Log)(nil)

// NewLog returns a log-only reporter. trigger stands in for status.run.trigger (a Resume run of
// a Full pipeline continues its checkpoint).
func NewLog(log *slog.Logger, trigger etlv1.RunTrigger, opts ...Option) *Log {
	return &Log{log: log, trigger: trigger, opts: buildOptions(opts)}
}

// checkpoint is the checkpoint as the log shows it.
func (l *Log) checkpoint(values []string) []string {
	if l.opts.redact {
		return Mask(values)
	}
	return values
}

// Claim implements Reporter.
func (l *Log) Claim(context.Context) (Claim, error) {
	l.log.Info("run claimed (no status reporting)", "trigger", l.trigger)
	return Claim{Trigger: l.trigger}, nil
}

// Check implements Reporter: nothing can ask a run without a status to pause.
func (l *Log) Check(context.Context) (Signal, error) { return Continue, nil }

// Progress implements Reporter.
func (l *Log) Progress(_ context.Context, p Progress) error {
	l.log.Info("progress", "rowsRead", p.RowsRead, "rowsWritten", p.RowsWritten, "rowsDeleted", p.RowsDeleted, "batches", p.Batches,
		"checkpoint", l.checkpoint(p.Checkpoint))
	return nil
}

// Finish implements Reporter.
func (l *Log) Finish(_ context.Context, e End) error {
	attrs := []any{"phase", e.Phase, "rowsRead", e.RowsRead, "rowsWritten", e.RowsWritten, "rowsDeleted", e.RowsDeleted,
		"rowsSwept", e.RowsSwept, "rowsRejected", e.RowsRejected, "batches", e.Batches,
		"checkpoint", l.checkpoint(e.Checkpoint)}
	if e.Phase == etlv1.PhaseFailed {
		msg := e.Message
		if l.opts.redact {
			msg = RedactValues(msg)
		}
		attrs = append(attrs, "errorClass", e.ErrorClass, "message", msg)
		l.log.Error("run ended", attrs...)
		return nil
	}
	l.log.Info("run ended", attrs...)
	return nil
}
