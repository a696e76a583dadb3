// Package runner is Sluice's data plane: it executes one run of an ETLPipeline inside its Job.
//
// The executor claims the run, chooses where to start (full or incremental, from the committed
// checkpoint), and moves keyset pages from the reader through the transform stages into the
// sink, committing the checkpoint after every batch under the pipeline's fencing epoch. It is
// also the one place that retries: an infrastructure error discards the session and redoes the
// batch from the checkpoint with exponential backoff; a business error fails the run at once.
// Between batches it honours a pause, and at the end it records the run in etl_runs and
// reports the run's end to the pipeline's status.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/metrics"
	"github.com/sluice-dev/sluice/runner/source"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/status"
	"github.com/sluice-dev/sluice/runner/transform"
)

// Params are the inputs of one run, as `sluice runner` gathers them from its flags and its
// environment.
type Params struct {
	// Config is the operator configuration; ConfigErr is set instead when it failed to load,
	// so that the run can still report why it failed.
	Config    *configv1.OperatorConfig
	ConfigErr error
	Pipeline  state.Pipeline
	RunID     string
	// Generation is SLUICE_GENERATION as given.
	Generation string
	// SpecJSON is SLUICE_SPEC: the validated, defaulted spec the run executes.
	SpecJSON string
	// LookupEnv finds the connections' DSNs (os.LookupEnv).
	LookupEnv func(string) (string, bool)
	Reporter  status.Reporter
	Log       *slog.Logger
	// TerminationLog is where a failed run leaves a short message for Kubernetes
	// (/dev/termination-log); empty skips it.
	TerminationLog string
	Options        Options
}

// Options tune a run; the zero value is production's, without metrics.
type Options struct {
	// CheckInterval is the least time between two reads of the pipeline for a pause (1s).
	CheckInterval time.Duration
	// ProgressInterval is the least time between two progress reports (2s).
	ProgressInterval time.Duration
	// LockWait is how long a runner waits for another runner of the pipeline to let go
	// before it gives up without writing (90s: longer than the server takes to end the
	// session of a runner whose node died, see runner.postgres' keepalives).
	LockWait time.Duration
	// CheckpointAtEnd commits the checkpoint only when the run ends, not after every batch.
	// It exists to measure what per-batch checkpoints cost (test/bench); a crash then
	// replays the whole run.
	CheckpointAtEnd bool
	// Sequential reads each page only after the previous one is written, and waits for each
	// write before the next (benchmarks: it measures what the overlap gains).
	Sequential bool
	// Decode always decodes values, even when they could travel undecoded to the sink
	// (benchmarks, diagnosis).
	Decode bool
	// Python is the interpreter of python tasks: a path, or a name looked up in PATH
	// ("python3").
	Python string
	// PythonMemoryLimit is the python worker's address space limit in bytes (1 GiB when 0;
	// negative: none).
	PythonMemoryLimit int64
	// Sleep waits between retries (tests shorten it); nil sleeps.
	Sleep func(ctx context.Context, d time.Duration) error
	// Metrics, when set, records the run's metrics (runner/metrics); nil records none.
	Metrics *metrics.Metrics
	// MetricsListener, when set with Metrics, serves them at /metrics while Run runs; Run
	// closes it before it returns.
	MetricsListener net.Listener
}

func (o *Options) defaults() {
	if o.CheckInterval == 0 {
		o.CheckInterval = time.Second
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = 2 * time.Second
	}
	if o.LockWait == 0 {
		o.LockWait = 90 * time.Second
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
}

// Outcome is how a run ended.
type Outcome string

// Outcomes of Run.
const (
	// OutcomeIdle: the run completed (caught up, or the full read is done).
	OutcomeIdle Outcome = "Idle"
	// OutcomePaused: the manager asked for a pause; the run stopped after a committed batch.
	OutcomePaused Outcome = "Paused"
	// OutcomeFailed: a business error, or an infrastructure error that outlived its retries.
	OutcomeFailed Outcome = "Failed"
	// OutcomeFenced: the run is not (or no longer) this runner's; it stopped without writing.
	OutcomeFenced Outcome = "Fenced"
	// OutcomeAborted: the process was told to stop (SIGTERM); nothing was reported, a
	// replacement pod continues from the checkpoint.
	OutcomeAborted Outcome = "Aborted"
)

// Result is what Run did.
type Result struct {
	Outcome  Outcome
	ExitCode int
	// ErrorClass and Message describe a failure (scrubbed of credentials).
	ErrorClass etlv1.ErrorClass
	Message    string
	// Committed counters of the run.
	RowsRead, RowsWritten, Batches int64
	RowsRejected                   int64
}

// Run executes one run and returns its result; the exit code follows the api/config
// constants. It never panics on bad input: every problem becomes a Result.
func Run(ctx context.Context, p Params) Result {
	p.Options.defaults()
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
	if p.LookupEnv == nil {
		p.LookupEnv = func(string) (string, bool) { return "", false }
	}
	e := &executor{p: p, opts: p.Options, rep: p.Reporter, scrub: &scrubber{}, metrics: p.Options.Metrics}
	e.log = p.Log.With("pipeline", p.Pipeline.String(), "run", p.RunID)
	if stop := e.serveMetrics(ctx); stop != nil {
		defer stop()
	}
	res := e.run(ctx)
	res.RowsRead, res.RowsWritten, res.Batches = e.rowsRead, e.rowsWritten, e.batches
	res.RowsRejected = e.rowsRejected
	switch {
	case res.ExitCode != configv1.ExitOK:
		writeTermination(p.TerminationLog, string(res.Outcome)+": "+res.Message)
	case res.Outcome == OutcomeIdle || res.Outcome == OutcomePaused:
		end, _ := json.Marshal(configv1.RunEnd{RunID: p.RunID, Phase: string(res.Outcome),
			RowsRead: res.RowsRead, RowsWritten: res.RowsWritten, Batches: res.Batches,
			RowsDeleted: e.rowsDeleted, RowsSwept: e.rowsSwept, RowsRejected: e.rowsRejected})
		writeTermination(p.TerminationLog, string(end))
	}
	return res
}

// serveMetrics serves the run's metrics when it has a listener for them, and returns what
// stops the server (nil when there is none).
func (e *executor) serveMetrics(ctx context.Context) func() {
	l := e.opts.MetricsListener
	if l == nil {
		return nil
	}
	if e.metrics == nil {
		_ = l.Close()
		return nil
	}
	srv := e.metrics.Serve(l)
	e.log.Info("serving metrics", "address", l.Addr().String(), "path", metrics.Path)
	return func() {
		// A scrape in progress may finish; the end does not wait for the next one: the
		// run's totals outlive it in the pipeline's status.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			e.log.Warn("metrics server", "error", err.Error())
		}
	}
}

// executor holds one run's progress. Only committed state lives here: after an error the
// session goes, this stays, and the retry starts from it.
type executor struct {
	p     Params
	opts  Options
	log   *slog.Logger
	rep   status.Reporter
	scrub *scrubber
	pl    *plan
	// metrics records the run's metrics; nil records none.
	metrics *metrics.Metrics

	trigger  etlv1.RunTrigger
	identity bool
	migrated bool
	claimed  bool
	epoch    int64
	// pids are the backends of this runner's state sessions (see state.Store.Lock).
	pids []uint32

	// after is the committed checkpoint (nil: from the start).
	after                          []string
	checkpointTime                 time.Time
	rowsRead, rowsWritten, batches int64
	rowsDeleted, rowsSwept         int64
	// rowsRejected counts the rejects of committed batches; rejectsReplayed the rejected
	// rows a replay wrote.
	rowsRejected, rejectsReplayed int64
	// unresolved holds the keys of the pipeline's rows in etl_rejects (rejectKey), read once
	// per run; nil until then.
	unresolved map[string]struct{}
	// replay is the progress of a replay run's pass over the rejects.
	replay replayPass
	// unresolvedAtEnd is the pipeline's count of rejects when the run completed;
	// recentRejects the newest of them, as endRejects read them.
	unresolvedAtEnd *int64
	recentRejects   []etlv1.RejectSummary
	// mirrored is set once a Mirror run's sweep or swap is done.
	mirrored bool
	// pending accumulates what CheckpointAtEnd has not committed yet.
	pending state.Advance
	// horizon is the run's read horizon (Incremental), taken by the first session.
	horizon *source.Horizon
	// cdc is a CDC run's state across sessions (cdc.go); nil in the other modes.
	cdc *cdcRun
	// conditions are the runner's conditions, reported with every progress and the end;
	// cleared, the types it removes.
	conditions []metav1.Condition
	cleared    []string

	lastCheck, lastProgress time.Time
	reported                bool

	prefetch *prefetch
	// inflight are the batches sent to a TxSink whose results have not come back; sentAfter
	// is the position of the last one sent, the checkpoint the next one must follow.
	inflight  []sentBatch
	sentAfter []string
}

// sentBatch is a batch on its way to the sink: sent to a TxSink and not yet confirmed, or
// being written.
type sentBatch struct {
	pos []string
	adv state.Advance
	// obs is what the batch took so far; the wait for its confirmation adds to its write.
	obs metrics.Batch
	// src is the reader batch, out what the transforms made of it (src itself without
	// transforms); rejects are the reader rows the transforms rejected, br what the batch
	// changes in etl_rejects as sent.
	src, out *batch.Batch
	rejects  []rejectedRow
	br       *batchRejects
	// gone are the keys a replay found no row for, with their fingerprints: their rejects
	// are resolved.
	gone   [][]string
	goneFP []string
}

// release hands the reader batch's raw buffer back once the batch is committed.
func (sb *sentBatch) release() {
	if sb.src != nil {
		sb.src.Raw.Release()
		sb.src, sb.out = nil, nil
	}
}

func (e *executor) run(ctx context.Context) Result {
	claim, err := e.claimStatus(ctx)
	if err != nil {
		if failure.IsFenced(err) {
			return e.fenced(err)
		}
		msg := e.scrub.scrub(err.Error())
		e.log.Error("cannot claim the run", "error", msg)
		return Result{Outcome: OutcomeFailed, ExitCode: configv1.ExitInfra, ErrorClass: etlv1.ErrorInfra, Message: msg}
	}
	e.trigger = claim.Trigger
	if e.p.ConfigErr != nil || e.p.Config == nil {
		cause := e.p.ConfigErr
		if cause == nil {
			cause = errors.New("no operator configuration")
		}
		return e.fail(ctx, nil, failure.Business(fmt.Errorf("load operator configuration: %w", cause)))
	}
	pl, err := makePlan(e.p.Config, e.p.SpecJSON, e.p.Generation, e.p.LookupEnv)
	if err != nil {
		return e.fail(ctx, nil, err)
	}
	e.pl = pl
	e.scrub = newScrubber(pl.dsns)
	stages, err := transform.Build(ctx, &pl.spec, transform.Options{
		Python: e.opts.Python, PythonMemoryLimit: e.opts.PythonMemoryLimit,
		Keys: pl.keys, SinkKey: pl.sinkKey, Log: e.log,
		AllowUnsandboxed: e.p.Config.Runner.AllowUnsandboxedPython,
	})
	if err != nil {
		return e.fail(ctx, nil, err)
	}
	e.reportConfinement(ctx, transform.Confinement(stages))
	defer func() {
		for _, s := range stages {
			_ = s.Close()
		}
	}()
	e.identity = transform.IsIdentity(stages)
	e.log.Info("run starting", "mode", pl.mode, "target", pl.spec.Target.Name, "batchSize", pl.batchSize,
		"sharedStateDatabase", pl.shared)
	return e.loop(ctx, stages)
}

// next moves one batch, as the pipeline's mode reads.
func (e *executor) next(ctx context.Context, s *session, stages []transform.Stage) (bool, error) {
	if e.pl.cdc != nil {
		return e.cdcStep(ctx, s, stages)
	}
	return e.step(ctx, s, stages)
}

// claimStatus claims the run in the pipeline's status, retrying API errors a few times.
func (e *executor) claimStatus(ctx context.Context) (status.Claim, error) {
	policy := retryPolicy{attempts: defaultRetryAttempts, initial: defaultInitialBackoff}
	for n := 0; ; n++ {
		c, err := e.rep.Claim(ctx)
		if err == nil {
			e.log.Info("run claimed", "trigger", c.Trigger)
			return c, nil
		}
		if failure.IsFenced(err) || n >= policy.attempts || ctx.Err() != nil {
			return c, err
		}
		e.log.Warn("claim failed, retrying", "error", e.scrub.scrub(err.Error()), "retry", n+1)
		if err := e.opts.Sleep(ctx, policy.backoff(n+1)); err != nil {
			return c, err
		}
	}
}

// loop is the dispatcher: it drives batches and routes every error by its class.
func (e *executor) loop(ctx context.Context, stages []transform.Stage) Result {
	var sess *session
	discard := func() { //nolint:contextcheck // a discarded session closes on its own short deadline
		e.stopPrefetch()
		sess.close()
		sess = nil
		if e.cdc != nil {
			e.cdc.stream = nil
		}
	}
	defer func() { discard() }()
	retries := 0
	for {
		var err error
		if sess == nil {
			sess, err = e.open(ctx)
		}
		if err == nil {
			var res Result
			var stop bool
			if res, stop, err = e.between(ctx, sess); stop {
				return res
			}
		}
		if err == nil && !e.replay.done {
			// A replay run reads the rejected rows again, a page per turn, before it runs.
			if err = e.replayPage(ctx, sess, stages); err == nil {
				retries = 0
				continue
			}
		}
		if err == nil {
			var done bool
			if done, err = e.next(ctx, sess, stages); err == nil && done {
				err = e.complete(ctx, sess)
				if err == nil {
					return e.finished(ctx)
				}
			}
			if err == nil {
				retries = 0
				continue
			}
		}
		switch {
		case ctx.Err() != nil:
			e.log.Warn("run aborted", "error", e.scrub.scrub(err.Error()))
			return Result{Outcome: OutcomeAborted, ExitCode: configv1.ExitInfra, ErrorClass: etlv1.ErrorInfra,
				Message: "aborted: " + e.scrub.scrub(context.Cause(ctx).Error())}
		case failure.IsFenced(err):
			return e.fenced(err)
		case failure.Classify(err) == etlv1.ErrorInfra && retries < e.pl.retry.attempts:
			discard()
			retries++
			e.metrics.Retry(failure.Classify(err))
			wait := e.pl.retry.backoff(retries)
			e.log.Warn("infrastructure error, retrying the batch from the checkpoint",
				"error", e.scrub.scrub(err.Error()), "retry", retries, "of", e.pl.retry.attempts, "backoff", wait.String())
			if serr := e.opts.Sleep(ctx, wait); serr != nil {
				continue // the ctx.Err case above reports the abort
			}
		default:
			// The session (and with it the pipeline's lock) is kept until the failure is
			// reported, so that no other runner starts the run in between.
			e.stopPrefetch()
			return e.fail(ctx, sess, err)
		}
	}
}
