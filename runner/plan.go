package runner

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/source"
	"github.com/sluice-dev/sluice/runner/state"
)

// Defaults for fields a hand-written spec snapshot may lack (the API server defaults them).
const (
	defaultBatchSize      = 5000
	defaultRetryAttempts  = 3
	defaultInitialBackoff = time.Second
)

// plan is everything a run needs to know, decided before it connects anywhere. makePlan is
// pure: every bad input (unknown connection, target outside the whitelist, malformed spec) is
// a business error before anything is written.
type plan struct {
	spec       etlv1.ETLPipelineSpec
	generation int64
	mode       etlv1.Mode
	query      string
	// cursor is the incremental cursor column, empty in full mode (full runs page over keys).
	cursor string
	// keys are the source key columns; order is the keyset order (cursor then keys).
	keys  []string
	order []string
	// sinkKey is the upsert key: target.key or the source key columns.
	sinkKey []string
	target  etlv1.ParsedTarget
	// stream and fullStream fingerprint the stream and a Full run's output (identity.go).
	stream, fullStream string
	// deleteWhen is the soft-delete marker column (target.deleteWhen.column), or "".
	deleteWhen string
	// mirror is set for a Full run with target.fullSync Mirror; maxDeleteRatio bounds its
	// sweep.
	mirror         bool
	maxDeleteRatio float64
	// lag is spec.source.cursor.lag.
	lag time.Duration
	// session are the settings of every Postgres session (runner.postgres).
	session   map[string]string
	batchSize int
	// maxBytes bounds a batch in bytes (spec.maxBatchBytes, else runner.maxBatchBytes).
	maxBytes int64
	retry    retryPolicy
	// tolerance is spec.errors.
	tolerance tolerance

	sourceConn, sinkConn, stateConn string
	// dsns holds the DSN of each connection the run uses, by connection name.
	dsns map[string]string
	// shared is true when the sink is the state database: rows and checkpoint commit together.
	shared bool
	// cdc is what a CDC run streams (cdc.go); nil in the other modes.
	cdc *cdcPlan
	// cfg and lookupEnv let a sink opener resolve connections of its own kind (Elasticsearch
	// URLs and credentials).
	cfg       *configv1.OperatorConfig
	lookupEnv func(string) (string, bool)
}

// makePlan decodes the spec snapshot and checks it against the operator configuration.
func makePlan(cfg *configv1.OperatorConfig, specJSON, generation string, lookupEnv func(string) (string, bool)) (*plan, error) {
	if strings.TrimSpace(specJSON) == "" {
		return nil, failure.Business(fmt.Errorf("spec snapshot %s is empty", configv1.EnvSpec))
	}
	p := &plan{cfg: cfg, lookupEnv: lookupEnv, session: cfg.Runner.Postgres.SessionParams()}
	dec := json.NewDecoder(bytes.NewReader([]byte(specJSON)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p.spec); err != nil {
		return nil, failure.Business(fmt.Errorf("decode spec snapshot %s: %w", configv1.EnvSpec, err))
	}
	if generation != "" {
		if _, err := fmt.Sscan(generation, &p.generation); err != nil {
			return nil, failure.Business(fmt.Errorf("%s=%q is not a number", configv1.EnvGeneration, generation))
		}
	}
	spec := &p.spec
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	p.mode = spec.Mode
	p.keys = spec.Source.Cursor.KeyColumns
	switch spec.Mode {
	case etlv1.ModeIncremental:
		p.cursor = spec.Source.Cursor.Column
		if p.cursor == "" {
			bad("source.cursor.column is required in Incremental mode")
		}
	case etlv1.ModeFull:
	case etlv1.ModeCDC:
		planCDC(p, bad)
	default:
		bad("mode %q: want Full, Incremental or CDC", spec.Mode)
	}
	if len(p.keys) == 0 {
		bad("source.cursor.keyColumns is empty")
	}
	p.order = source.Order(p.cursor, p.keys)
	if p.mode != etlv1.ModeCDC {
		p.query = spec.ReaderSQL()
	}
	if strings.TrimSpace(p.query) == "" {
		bad("no reader query: set source.query or an sql first task")
	}
	p.sinkKey = spec.SinkKey()
	p.stream, p.fullStream = streamFingerprint(spec), fullFingerprint(spec)
	if dw := spec.Target.DeleteWhen; dw != nil {
		p.deleteWhen = dw.Column
		if p.deleteWhen == "" {
			bad("target.deleteWhen.column is empty")
		}
		for _, k := range append(append([]string{p.cursor}, p.keys...), p.sinkKey...) {
			if k == p.deleteWhen {
				bad("target.deleteWhen.column %q is a cursor or key column: it must be a column of its own", k)
				break
			}
		}
	}
	switch spec.Target.FullSync {
	case "", etlv1.FullSyncUpsert:
	case etlv1.FullSyncMirror:
		p.mirror = spec.Mode == etlv1.ModeFull
	default:
		bad("target.fullSync %q: want Upsert or Mirror", spec.Target.FullSync)
	}
	p.maxDeleteRatio = etlv1.DefaultMaxDeleteRatio
	if r := spec.Target.MaxDeleteRatio; r != nil {
		p.maxDeleteRatio = *r
		if p.maxDeleteRatio < 0 || p.maxDeleteRatio > 1 {
			bad("target.maxDeleteRatio %v must be between 0 and 1", *r)
		}
	}
	if l := spec.Source.Cursor.Lag; l != nil {
		p.lag = l.Duration
		if p.lag < 0 {
			bad("source.cursor.lag %s must not be negative", l.Duration)
		}
	}

	p.batchSize = int(spec.BatchSize)
	if p.batchSize == 0 {
		p.batchSize = defaultBatchSize
	}
	if p.batchSize < 0 {
		bad("batchSize %d must be positive", spec.BatchSize)
	}
	p.retry = retryFromSpec(spec.Retry)
	if spec.Errors != nil {
		p.tolerance = tolerance{maxRows: spec.Errors.MaxRejectedRows, maxRatio: spec.Errors.MaxRejectedRatio}
	}
	p.maxBytes = cfg.Runner.BatchBytes()
	if q := spec.MaxBatchBytes; q != nil {
		p.maxBytes = q.Value()
		if p.maxBytes < etlv1.MinBatchBytes {
			bad("maxBatchBytes %s is below the least of %d bytes", q.String(), etlv1.MinBatchBytes)
		}
	}

	target, err := etlv1.ParseTarget(spec.Target.Name)
	if err != nil {
		bad("%w", err)
	}
	p.target = target
	switch target.Kind {
	case etlv1.SinkPostgres:
		if !cfg.PostgresTableAllowed(spec.Target.Name) {
			bad("target %s is not in the operator's whitelist (allowedTargets.postgresTables)", spec.Target.Name)
		}
	case etlv1.SinkElasticsearch:
		if !cfg.ElasticsearchIndexAllowed(target.Object) {
			bad("target %s is not in the operator's whitelist (allowedTargets.elasticsearchIndexes)", spec.Target.Name)
		}
		if cfg.ElasticsearchConnection(spec.Target.Connection) == nil {
			bad("target connection %q is not an Elasticsearch connection of the operator's configuration", spec.Target.Connection)
		}
	}

	p.sourceConn = spec.Source.Connection
	p.stateConn = cfg.StateConnection
	p.sinkConn = spec.Target.Connection
	if target.Kind == etlv1.SinkPostgres && p.sinkConn == "" {
		p.sinkConn = p.sourceConn
	}
	p.dsns = map[string]string{}
	need := []struct{ role, name string }{{"source", p.sourceConn}, {"state", p.stateConn}}
	if target.Kind == etlv1.SinkPostgres {
		need = append(need, struct{ role, name string }{"target", p.sinkConn})
	}
	for _, n := range need {
		if n.name == "" {
			bad("%s connection is not set", n.role)
			continue
		}
		if cfg.PostgresConnection(n.name) == nil {
			bad("%s connection %q is not a Postgres connection of the operator's configuration", n.role, n.name)
			continue
		}
		env := configv1.PostgresDSNEnv(n.name)
		dsn, ok := lookupEnv(env)
		if !ok || strings.TrimSpace(dsn) == "" {
			bad("%s connection %q: environment variable %s is not set", n.role, n.name, env)
			continue
		}
		p.dsns[n.name] = dsn
	}
	if p.cdc != nil {
		if c := cfg.PostgresConnection(p.sourceConn); c != nil {
			if why := c.ReplicationRefusal(p.cdc.table); why != "" {
				bad("%s", why)
			}
		}
	}
	p.shared = target.Kind == etlv1.SinkPostgres && p.sinkConn == p.stateConn
	if len(errs) > 0 {
		return nil, failure.Business(fmt.Errorf("invalid run: %w", errors.Join(errs...)))
	}
	if err := checkGrants(cfg, p, lookupEnv); err != nil {
		return nil, err
	}
	return p, nil
}

// retryFromSpec applies the API defaults to a spec whose retry was never defaulted (a snapshot
// written by hand). An explicit attempts: 0 survives only next to a defaulted initialBackoff,
// which is what the API server produces.
func retryFromSpec(r etlv1.RetrySpec) retryPolicy {
	p := retryPolicy{attempts: int(r.Attempts), initial: defaultInitialBackoff}
	if r.InitialBackoff != nil {
		p.initial = r.InitialBackoff.Duration
	} else if r.Attempts == 0 {
		p.attempts = defaultRetryAttempts
	}
	return p
}

// startPosition decides where a run starts reading from the state found at claim (or at a
// reconnect): nil is the beginning. Incremental runs continue the pipeline's checkpoint when it
// was taken on the same order columns. Full runs continue only their own checkpoint (a pod
// replacing a crashed one), or the checkpoint of the run a resume continues; any other full
// run starts over. The claim has already cleared a Full checkpoint whose reader or transforms
// changed (state.Store.Claim), so a resume compares no generation: pausing bumps it.
func startPosition(pl *plan, runID string, trigger etlv1.RunTrigger, c state.Claim) (after []string, note string) {
	switch pl.mode {
	case etlv1.ModeCDC:
		return cdcStartPosition(pl, c)
	case etlv1.ModeIncremental:
		if c.Incremental == nil {
			return nil, "no checkpoint: reading from the start"
		}
		if !slices.Equal(c.Incremental.Columns, pl.order) {
			return nil, fmt.Sprintf("checkpoint was taken on (%s), the run orders by (%s): reading from the start",
				strings.Join(c.Incremental.Columns, ", "), strings.Join(pl.order, ", "))
		}
		return c.Incremental.Values, "continuing after the checkpoint"
	default:
		f := c.Full
		switch {
		case f == nil:
			return nil, "full run from the start"
		case !slices.Equal(f.Columns, pl.order):
			return nil, "full run from the start (the order columns changed)"
		case f.RunID == runID:
			return f.Values, "continuing this full run after its checkpoint"
		case trigger == etlv1.TriggerResume:
			return f.Values, fmt.Sprintf("resuming full run %s after its checkpoint", f.RunID)
		}
		return nil, "full run from the start"
	}
}
