package runner

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/metrics"
	"github.com/sluice-dev/sluice/runner/sink"
	"github.com/sluice-dev/sluice/runner/source"
	"github.com/sluice-dev/sluice/runner/source/cdc"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/status"
)

// session is one attempt's connections and the objects built on them. An infrastructure
// error discards the whole session; the retry opens a new one and starts again from the
// committed checkpoint, so nothing half-done survives into the retry.
type session struct {
	state    *pgx.Conn
	src      *pgx.Conn
	sinkConn *pgx.Conn
	store    *state.Store
	reader   *source.Reader
	sink     sink.Sink
	// txSink is set when the sink lives in the state database and writes each batch in one
	// transaction with its checkpoint.
	txSink sink.TxSink
	// raw is true when batches travel undecoded: every stage is the identity and the sink
	// writes the source's wire encoding.
	raw bool
	// readTook is how long the latest read took. Reads never overlap (the source connection
	// serves one at a time), and the executor takes it once a read returned or its prefetch
	// was received, before the next starts.
	readTook time.Duration
	// metrics are the run's, for the sinks that report to them (nil: none).
	metrics *metrics.Metrics
	// repl is a CDC run's replication connection, stream its stream once the copy is done;
	// copying is set while the session copies the table (cdc.go).
	repl    *pgconn.PgConn
	stream  *cdc.Stream
	copying bool
}

// read returns a page, raw when the session moves batches undecoded.
func (s *session) read(ctx context.Context, after []string) (*batch.Batch, error) {
	start := time.Now()
	defer func() { s.readTook = time.Since(start) }()
	if s.raw {
		return s.reader.ReadRaw(ctx, after)
	}
	return s.reader.Read(ctx, after)
}

func (s *session) close() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.sink != nil {
		_ = s.sink.Close(ctx)
	}
	if s.stream != nil {
		s.stream.Close(ctx)
	} else if s.repl != nil {
		_ = s.repl.Close(ctx)
	}
	for _, c := range []*pgx.Conn{s.src, s.sinkConn, s.state} {
		if c != nil {
			_ = c.Close(ctx)
		}
	}
}

// connectTimeout bounds one connection attempt; the retry policy decides how many follow.
const connectTimeout = 10 * time.Second

// connect opens a connection named for the runner (tests and DBAs find it by
// application_name), with the session settings of the operator configuration
// (runner.postgres: timeouts, keepalives). A source connection is read-only: the reader query
// can never write.
func connect(ctx context.Context, name, dsn, appName string, readOnly bool, params map[string]string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// The parse error quotes the DSN; say which connection instead.
		return nil, fmt.Errorf("connection %q: the DSN does not parse", name)
	}
	for k, v := range params {
		// The DSN's own settings win, as parameters or in options (-c name=value).
		opts := cfg.RuntimeParams["options"]
		if _, set := cfg.RuntimeParams[k]; !set && !strings.Contains(opts, k+"=") {
			cfg.RuntimeParams[k] = v
		}
	}
	cfg.RuntimeParams["application_name"] = appName
	if readOnly {
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > connectTimeout {
		cfg.ConnectTimeout = connectTimeout
	}
	// Keepalives find a dead peer in tens of seconds instead of the kernel's two hours.
	dialer := &net.Dialer{KeepAlive: 15 * time.Second}
	cfg.DialFunc = dialer.DialContext
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %q: %w", name, err)
	}
	return conn, nil
}

// open connects, checks the reader and the sink, and claims the pipeline in the state
// database (first session) or re-reads the committed state (after a reconnect).
func (e *executor) open(ctx context.Context) (_ *session, err error) {
	pl := e.pl
	s := &session{metrics: e.metrics}
	defer func() { //nolint:contextcheck // closing must work whatever the caller's context
		if err != nil {
			s.close()
		}
	}()
	app := appName(e.p.Pipeline)
	if s.state, err = connect(ctx, pl.stateConn, pl.dsns[pl.stateConn], app, false, pl.session); err != nil {
		return nil, err
	}
	if s.src, err = connect(ctx, pl.sourceConn, pl.dsns[pl.sourceConn], app, true, pl.session); err != nil {
		return nil, err
	}
	source.RegisterTypes(s.src.TypeMap())
	// A Postgres sink has a connection of its own even in the state database: it keeps
	// batches in flight on it (pipeline mode) while the state connection stays free for
	// bookkeeping and holds the pipeline's lock.
	if pl.target.Kind == etlv1.SinkPostgres {
		if s.sinkConn, err = connect(ctx, pl.sinkConn, pl.dsns[pl.sinkConn], app, false, pl.session); err != nil {
			return nil, err
		}
	}
	if !e.migrated {
		if err = state.Migrate(ctx, s.state); err != nil {
			return nil, err
		}
		e.migrated = true
	}
	s.store = state.New(s.state, e.p.Pipeline)
	if err = s.store.Lock(ctx, e.opts.LockWait, e.pids); err != nil {
		return nil, err
	}
	e.pids = append(e.pids, s.state.PgConn().PID())

	if pl.cdc != nil {
		if err = e.preflightCDC(ctx, s); err != nil {
			return nil, err
		}
	}
	if s.reader, err = source.Open(ctx, s.src, source.Options{
		Query: pl.query, Cursor: pl.cursor, Keys: pl.keys, BatchSize: pl.batchSize, MaxBytes: pl.maxBytes,
	}); err != nil {
		return nil, err
	}
	if err = checkDeleteWhen(pl.deleteWhen, s.reader.Columns()); err != nil {
		return nil, err
	}
	if s.sink, err = sinkOpeners[pl.target.Kind](ctx, pl, s); err != nil {
		return nil, err
	}
	if err = s.sink.Prepare(ctx); err != nil {
		return nil, err
	}
	if pl.shared {
		ts, ok := s.sink.(sink.TxSink)
		if !ok {
			return nil, fmt.Errorf("sink of %s cannot write in the state database's transaction", pl.spec.Target.Name)
		}
		s.txSink = ts
	}
	if rw, ok := s.sink.(sink.RawWriter); ok && rw.WritesRaw() && e.identity && !e.opts.Decode {
		s.raw = true
	}

	var c state.Claim
	if !e.claimed {
		// The lock may have been held by a runner of the same run that has finished since:
		// ask the pipeline again before the claim, so that it is not run twice.
		sig, err := e.check(ctx)
		if err == nil && sig == status.Stop {
			return nil, fmt.Errorf("pipeline %s: run %s ended while this runner waited: %w", e.p.Pipeline, e.p.RunID, failure.ErrFenced)
		}
		if sig == status.Pause {
			e.lastCheck = time.Time{} // pause before the first batch
		}
		if c, err = s.store.Claim(ctx, state.Run{ID: e.p.RunID, Generation: pl.generation, Mode: pl.mode,
			Stream: pl.stream, FullStream: pl.fullStream, History: e.p.Config.Runner.Runs()}); err != nil {
			return nil, err
		}
		e.claimed, e.epoch = true, c.Epoch
		e.log.Info("pipeline claimed in the state database", "epoch", c.Epoch, "replacesCrashedPod", c.SameRun)
		if c.Reset != nil {
			e.checkpointReset(ctx, c.Reset)
		} else {
			e.cleared = append(e.cleared, etlv1.ConditionCheckpointReset)
		}
	} else if c, err = s.store.Load(ctx, e.epoch); err != nil {
		return nil, err
	}
	if pl.mode == etlv1.ModeIncremental {
		if err = e.bound(ctx, s); err != nil {
			return nil, err
		}
	}
	var note string
	e.after, note = startPosition(pl, e.p.RunID, e.trigger, c)
	if pl.cdc != nil {
		if err = e.openCDC(ctx, s); err != nil {
			return nil, err
		}
	}
	if err = e.beginMirror(ctx, s); err != nil {
		return nil, err
	}
	unconfirmed := committedUnconfirmed(e.inflight, c.Batches-e.batches)
	e.inflight, e.sentAfter = nil, nil
	e.rowsRead, e.rowsWritten, e.batches = c.RowsRead, c.RowsWritten, c.Batches
	e.rowsDeleted, e.rowsRejected = c.RowsDeleted, c.RowsRejected
	if err = e.loadUnresolved(ctx, s); err != nil {
		return nil, err
	}
	e.metrics.Resumed(e.totals(), unconfirmed)
	e.pending = state.Advance{}
	e.log.Info(note, "checkpoint", e.after)
	return s, nil
}

// committedUnconfirmed returns what the oldest n batches a failed session left in flight
// took: they committed (the state has n batches more than the executor saw confirmed) while
// the session failed before it read their confirmation, a failed read with a batch in flight.
func committedUnconfirmed(inflight []sentBatch, n int64) []metrics.Batch {
	n = min(max(n, 0), int64(len(inflight)))
	out := make([]metrics.Batch, n)
	for i := range out {
		out[i] = inflight[i].obs
	}
	return out
}

// appName names the runner's sessions in pg_stat_activity (at most 63 bytes).
func appName(p state.Pipeline) string {
	return truncateBytes("sluice-runner "+p.String(), 63)
}

func truncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
