package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/source"
	"github.com/sluice-dev/sluice/runner/state"
)

// CheckpointParams are the inputs of `sluice runner --checkpoint`, the Job the manager runs
// for a checkpoint request of a paused pipeline.
type CheckpointParams struct {
	Config     *configv1.OperatorConfig
	Pipeline   state.Pipeline
	SpecJSON   string
	Generation string
	Request    etlv1.CheckpointRequest
	// RequestedBy is the user the API server authenticated for the request.
	RequestedBy string
	LookupEnv   func(string) (string, bool)
	Log         *slog.Logger
	// LockWait bounds the wait for the pipeline's lock (30s when 0).
	LockWait time.Duration
	// TerminationLog receives the configv1.CheckpointEnd ("" for none).
	TerminationLog string
}

// ChangeCheckpoint carries out a checkpoint request under the pipeline's lock: Reset forgets
// the checkpoints, Set moves an Incremental pipeline's checkpoint to values that are first
// cast to the cursor's and keys' types in the source. The change is recorded in etl_runs with
// who asked, and its end left as the termination message. It returns the exit code.
func ChangeCheckpoint(ctx context.Context, p CheckpointParams) int {
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
	end := configv1.CheckpointEnd{ID: p.Request.ID}
	values, scrub, err := changeCheckpoint(ctx, p)
	code := configv1.ExitOK
	if err != nil {
		end.Outcome, end.Message = string(etlv1.CheckpointFailed), scrub.scrub(err.Error())
		code = configv1.ExitBusiness
		if failure.Classify(err) == etlv1.ErrorInfra {
			code = configv1.ExitInfra
		}
		p.Log.Error("checkpoint request failed", "request", p.Request.ID, "requestedBy", p.RequestedBy, "error", end.Message)
	} else {
		end.Outcome, end.Values = string(etlv1.CheckpointDone), values
		p.Log.Info("checkpoint changed", "request", p.Request.ID, "action", p.Request.Action, "requestedBy", p.RequestedBy, "checkpoint", values)
	}
	msg, _ := json.Marshal(end)
	writeTermination(p.TerminationLog, string(msg))
	return code
}

// CheckpointRunID names a checkpoint request in etl_runs.
func CheckpointRunID(requestID string) string { return "checkpoint-" + requestID }

func changeCheckpoint(ctx context.Context, p CheckpointParams) ([]string, *scrubber, error) {
	scrub := &scrubber{}
	if p.Config == nil {
		return nil, scrub, failure.Business(errors.New("no operator configuration"))
	}
	pl, err := makePlan(p.Config, p.SpecJSON, p.Generation, p.LookupEnv)
	if err != nil {
		return nil, scrub, err
	}
	scrub = newScrubber(pl.dsns)
	change := state.CheckpointChange{RunID: CheckpointRunID(p.Request.ID), RequestedBy: p.RequestedBy}
	switch p.Request.Action {
	case etlv1.CheckpointReset:
		change.Reset = true
	case etlv1.CheckpointSet:
		if pl.mode != etlv1.ModeIncremental {
			return nil, scrub, failure.Business(errors.New("checkpoint set applies to an Incremental pipeline: a Full run reads its whole source (reset its checkpoint instead)"))
		}
		if len(p.Request.Values) != len(pl.order) {
			return nil, scrub, failure.Business(fmt.Errorf("the checkpoint is (%s): give %d values, got %d",
				strings.Join(pl.order, ", "), len(pl.order), len(p.Request.Values)))
		}
	default:
		return nil, scrub, failure.Business(fmt.Errorf("unknown checkpoint action %q: Reset or Set", p.Request.Action))
	}
	app := appName(p.Pipeline)
	conn, err := connect(ctx, pl.stateConn, pl.dsns[pl.stateConn], app, false, pl.session)
	if err != nil {
		return nil, scrub, err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if err := state.Migrate(ctx, conn); err != nil {
		return nil, scrub, err
	}
	store := state.New(conn, p.Pipeline)
	wait := p.LockWait
	if wait <= 0 {
		wait = 30 * time.Second
	}
	if err := store.Lock(ctx, wait, nil); err != nil {
		return nil, scrub, err
	}
	if !change.Reset {
		if change.Values, err = castCheckpoint(ctx, pl, app, p.Request.Values); err != nil {
			return nil, scrub, err
		}
		change.Columns = pl.order
	}
	if err := store.ChangeCheckpoint(ctx, change); err != nil {
		if errors.Is(err, state.ErrNoState) {
			return nil, scrub, failure.Business(err)
		}
		return nil, scrub, err
	}
	return change.Values, scrub, nil
}

// castCheckpoint casts checkpoint values to the order columns' types in the source, as the
// reader's next page will, and returns them in Postgres' text form of those types. A value
// that is not of its column's type is a business error naming the column, before anything
// changes.
func castCheckpoint(ctx context.Context, pl *plan, app string, values []string) ([]string, error) {
	src, err := connect(ctx, pl.sourceConn, pl.dsns[pl.sourceConn], app, true, pl.session)
	if err != nil {
		return nil, err
	}
	defer func() { _ = src.Close(context.WithoutCancel(ctx)) }()
	source.RegisterTypes(src.TypeMap())
	r, err := source.Open(ctx, src, source.Options{Query: pl.query, Cursor: pl.cursor, Keys: pl.keys, BatchSize: 1})
	if err != nil {
		return nil, err
	}
	out := make([]string, len(values))
	for i, t := range r.OrderTypes() {
		if err := src.QueryRow(ctx, fmt.Sprintf("SELECT CAST(CAST($1::text AS %s) AS text)", t), values[i]).Scan(&out[i]); err != nil {
			return nil, failure.Business(fmt.Errorf("checkpoint value %d for %s is not a %s: %w", i+1, pl.order[i], t, err))
		}
	}
	return out, nil
}
