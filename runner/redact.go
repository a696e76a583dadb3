package runner

import (
	"context"
	"encoding/json"
	"log/slog"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	"github.com/sluice-dev/sluice/runner/status"
)

// A pipeline's checkpoint values (its cursor and key values) may leave the data plane in
// status, events and logs, unless the operator configuration redacts them for its target
// (redaction.checkpointTargets). A redacted run shows each such value as status.Masked:
//   - the reporter masks status.checkpoint.values and the cursor in condition messages and
//     event notes (status.RedactCheckpoint, set where the reporter is built);
//   - RedactLog masks the checkpoint and horizon attributes of log lines and the values in
//     their messages;
//   - the failure message (status.run.message, the log, the termination message, etl_runs)
//     is masked where the executor renders it (outgoing).
//
// The state database keeps the exact checkpoint: resuming needs it, and it is the data plane.

// CheckpointRedacted reports whether cfg redacts the checkpoint values of the pipeline whose
// spec snapshot is specJSON. A snapshot that does not parse names no target, which only "*"
// redacts; the run fails on such a snapshot before it reads anything.
func CheckpointRedacted(cfg *configv1.OperatorConfig, specJSON string) bool {
	if cfg == nil {
		return false
	}
	var spec struct {
		Target struct {
			Name string `json:"name"`
		} `json:"target"`
	}
	_ = json.Unmarshal([]byte(specJSON), &spec)
	return cfg.Redaction.RedactCheckpoint(spec.Target.Name)
}

// redacted reports whether this run's checkpoint values are redacted.
func (e *executor) redacted() bool {
	return CheckpointRedacted(e.p.Config, e.p.SpecJSON)
}

// outgoing renders err for what leaves the runner: without credentials and row values (the
// scrubber) and, in a redacted run, without checkpoint, cursor and key values.
func (e *executor) outgoing(err error) string {
	msg := e.scrub.scrub(err.Error())
	if e.redacted() {
		msg = status.RedactValues(msg)
	}
	return msg
}

// RedactLog returns a logger that masks checkpoint, cursor and key values: the attributes that
// are such values ("checkpoint", "horizon") become status.Masked, one per value, and the
// messages and text attributes pass through status.RedactValues.
func RedactLog(log *slog.Logger) *slog.Logger {
	return slog.New(redactHandler{log.Handler()})
}

// valueAttrs are the log attributes whose whole value is a checkpoint or cursor value.
var valueAttrs = map[string]bool{"checkpoint": true, "horizon": true}

type redactHandler struct{ next slog.Handler }

func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, status.RedactValues(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = redactAttr(a)
	}
	return redactHandler{h.next.WithAttrs(out)}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h.next.WithGroup(name)}
}

// redactAttr masks the values in one log attribute.
func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		group := v.Group()
		out := make([]any, len(group))
		for i, g := range group {
			out[i] = redactAttr(g)
		}
		return slog.Group(a.Key, out...)
	}
	if valueAttrs[a.Key] {
		return slog.Attr{Key: a.Key, Value: maskValue(v)}
	}
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, status.RedactValues(v.String()))
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, status.RedactValues(err.Error()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// maskValue masks a checkpoint (one status.Masked per value, nil stays nil) or a single value
// (an empty one stays empty: there is no value to hide).
func maskValue(v slog.Value) slog.Value {
	if v.Kind() == slog.KindAny {
		switch x := v.Any().(type) {
		case nil:
			return v
		case []string:
			return slog.AnyValue(status.Mask(x))
		}
	}
	if v.Kind() == slog.KindString && v.String() == "" {
		return v
	}
	return slog.StringValue(status.Masked)
}
