package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/sink/postgres"
	"github.com/sluice-dev/sluice/runner/source/cdc"
	"github.com/sluice-dev/sluice/runner/state"
)

// ForgetParams are the inputs of `sluice runner --forget`, which the manager runs when a
// pipeline is deleted.
type ForgetParams struct {
	Config    *configv1.OperatorConfig
	Pipeline  state.Pipeline
	LookupEnv func(string) (string, bool)
	Log       *slog.Logger
	// LockWait bounds the wait for a runner of the pipeline that is still stopping.
	LockWait time.Duration
}

// Forget removes a deleted pipeline's rows from etl_state and etl_runs, under the pipeline's
// lock, so that no runner still stopping writes after it. It returns the exit code: ExitOK,
// ExitInfra (the state database could not be reached: the Job retries) or ExitBusiness.
func Forget(ctx context.Context, p ForgetParams) int {
	log := p.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n, err := forget(ctx, p)
	if err != nil {
		scrub := &scrubber{}
		if p.Config != nil {
			if dsn, ok := p.LookupEnv(configv1.PostgresDSNEnv(p.Config.StateConnection)); ok {
				scrub = newScrubber(map[string]string{p.Config.StateConnection: dsn})
			}
		}
		log.Error("cannot remove the state of the deleted pipeline", "pipeline", p.Pipeline.String(), "error", scrub.scrub(err.Error()))
		if failure.Classify(err) == etlv1.ErrorInfra || failure.IsFenced(err) {
			return configv1.ExitInfra
		}
		return configv1.ExitBusiness
	}
	log.Info("state of the deleted pipeline removed", "pipeline", p.Pipeline.String(), "uid", p.Pipeline.UID, "rows", n)
	return configv1.ExitOK
}

func forget(ctx context.Context, p ForgetParams) (int64, error) {
	if p.Config == nil {
		return 0, failure.Business(errors.New("no operator configuration"))
	}
	name := p.Config.StateConnection
	dsn, ok := p.LookupEnv(configv1.PostgresDSNEnv(name))
	if !ok || dsn == "" {
		return 0, failure.Business(fmt.Errorf("state connection %q: environment variable %s is not set", name, configv1.PostgresDSNEnv(name)))
	}
	conn, err := connect(ctx, name, dsn, appName(p.Pipeline), false, p.Config.Runner.Postgres.SessionParams())
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	store := state.New(conn, p.Pipeline)
	wait := p.LockWait
	if wait <= 0 {
		wait = 30 * time.Second
	}
	if err := store.Lock(ctx, wait, nil); err != nil {
		return 0, err
	}
	// The replication slots first: their records go with the state only once they are
	// dropped, so that a Job that failed half-way drops them on its retry.
	if err := forgetSlots(ctx, p, store); err != nil {
		return 0, err
	}
	n, err := store.Forget(ctx)
	if err != nil {
		return n, err
	}
	// An unfinished Mirror run's side table, when the sink is the state database. The Job
	// has no credentials of another sink database: a side table there stays (docs/deletes.md).
	return n, postgres.ForgetMirror(ctx, conn, mirrorID(p.Pipeline))
}

// forgetSlots drops the replication slots and publications a deleted CDC pipeline created
// in its sources. The Job has the DSN of the pipeline's source connection; a slot in a
// connection it has no DSN for is logged and left (docs/cdc.md).
func forgetSlots(ctx context.Context, p ForgetParams, store *state.Store) error {
	recs, err := store.Slots(ctx)
	if err != nil {
		return err
	}
	log := p.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, r := range recs {
		if r.UID != p.Pipeline.UID {
			continue // a pipeline created again under the name owns its slots
		}
		dsn, ok := p.LookupEnv(configv1.PostgresDSNEnv(r.Connection))
		if !ok || dsn == "" {
			log.Warn("the replication slot of the deleted pipeline stays: no DSN of its connection",
				"slot", r.Slot, "connection", r.Connection)
			continue
		}
		if err := releaseSlot(ctx, p, r, dsn, log); err != nil {
			return err
		}
		repl, err := cdc.ConnectReplication(ctx, dsn, appName(p.Pipeline))
		if err != nil {
			return err
		}
		err = cdc.DropSlot(ctx, repl, r.Slot)
		if err == nil {
			err = cdc.DropPublication(ctx, repl, r.Publication)
		}
		_ = repl.Close(context.WithoutCancel(ctx))
		if err != nil {
			return err
		}
		if err := store.ForgetSlot(ctx, r.Connection, r.Slot); err != nil {
			return err
		}
		log.Info("replication slot of the deleted pipeline dropped", "slot", r.Slot, "publication", r.Publication)
	}
	return nil
}

// releaseSlot ends a walsender that still streams the slot for a runner of the deleted
// pipeline (a pod whose node went away keeps its connection until wal_sender_timeout): the
// Job holds the pipeline's lock, so that runner lost its claim and commits nothing more.
// Without it, dropping the slot would wait for that connection to go.
func releaseSlot(ctx context.Context, p ForgetParams, r state.SlotRecord, dsn string, log *slog.Logger) error {
	conn, err := connect(ctx, r.Connection, dsn, appName(p.Pipeline), false, p.Config.Runner.Postgres.SessionParams())
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	released, err := cdc.ReleaseSlot(ctx, conn, r.Slot, slotReleaseWait)
	if released {
		log.Warn("ended the walsender of a runner that still held the replication slot", "slot", r.Slot)
	}
	return err
}
