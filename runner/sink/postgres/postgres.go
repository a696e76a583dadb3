// Package postgres is the sink for `analytics.<table>` targets. Each batch is one prepared
// statement: every column travels as one binary array parameter, and
// INSERT ... SELECT unnest($1), unnest($2), ... ON CONFLICT (key) DO UPDATE turns them back
// into rows. We measured it against COPY into a temporary staging table followed by the same
// INSERT: the staging table costs a heap write, a scan and a truncation at every commit, which
// unnest does not (test/bench and the report of issue 4). In the state database the batches
// are pipelined with their checkpoint statements (pipeline.go), so the server never waits
// for the runner between batches.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/sink"
)

// Sink upserts batches into one table. It implements sink.TxSink and sink.RawWriter.
type Sink struct {
	conn   *pgx.Conn
	schema string
	table  string
	key    []string

	columns map[string]targetColumn
	shapes  map[string]*shape
	// seen and seed serve lastPerKeyRaw, reused from batch to batch.
	seen map[uint64]int
	seed maphash.Seed
	// pipe is the connection in pipeline mode while batches are sent with Send; queue holds
	// the sent batches whose results Receive has not handed out yet.
	pipe  *pgconn.Pipeline
	queue []*sent
	// bufs are the array parameters, reused from batch to batch.
	bufs [][]byte
	// side is the table of the keys a Mirror run wrote (mirror.go), nil when not mirroring.
	side pgx.Identifier
	// ratio is target.maxDeleteRatio, which bounds the sweep; swept is set once the sweep
	// committed.
	ratio float64
	swept *int64
}

var (
	_ sink.TxSink    = (*Sink)(nil)
	_ sink.RawWriter = (*Sink)(nil)
)

type targetColumn struct {
	oid       uint32
	typ       string
	generated bool
}

// New returns a sink writing into schema.table through conn, upserting on the key columns.
// The sink does not own conn.
func New(conn *pgx.Conn, schema, table string, key []string) *Sink {
	return &Sink{conn: conn, schema: schema, table: table, key: key, shapes: map[string]*shape{}, seed: maphash.MakeSeed()}
}

func (s *Sink) target() pgx.Identifier { return pgx.Identifier{s.schema, s.table} }

func (s *Sink) name() string { return s.schema + "." + s.table }

// Prepare checks that the table exists (the user creates it; Sluice never does), has the key
// columns, and has a unique index on exactly them, which ON CONFLICT needs.
func (s *Sink) Prepare(ctx context.Context) error {
	var relid uint32
	err := s.conn.QueryRow(ctx, `
		SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`,
		s.schema, s.table).Scan(&relid)
	if errors.Is(err, pgx.ErrNoRows) {
		return failure.Business(fmt.Errorf("target table %s does not exist: create it before running the pipeline", s.name()))
	}
	if err != nil {
		return fmt.Errorf("look up target table %s: %w", s.name(), err)
	}
	rows, err := s.conn.Query(ctx, `
		SELECT attname, atttypid, format_type(atttypid, NULL), attgenerated <> ''
		FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, relid)
	if err != nil {
		return fmt.Errorf("look up columns of target table %s: %w", s.name(), err)
	}
	s.columns = map[string]targetColumn{}
	var (
		name string
		col  targetColumn
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &col.oid, &col.typ, &col.generated}, func() error {
		s.columns[name] = col
		return nil
	})
	if err != nil {
		return fmt.Errorf("look up columns of target table %s: %w", s.name(), err)
	}
	for _, k := range s.key {
		if _, ok := s.columns[k]; !ok {
			return failure.Business(fmt.Errorf("target table %s has no key column %q", s.name(), k))
		}
	}
	var unique bool
	err = s.conn.QueryRow(ctx, `
		SELECT EXISTS (
			SELECT 1 FROM pg_index i
			WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
			  AND i.indnkeyatts = cardinality($2::text[])
			  AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
			       FROM pg_attribute a
			       WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey[0:i.indnkeyatts - 1]))
			      = (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) AS k))`,
		relid, s.key).Scan(&unique)
	if err != nil {
		return fmt.Errorf("look up unique indexes of target table %s: %w", s.name(), err)
	}
	if !unique {
		return failure.Business(fmt.Errorf("target table %s has no unique index on exactly (%s): the upsert needs one",
			s.name(), strings.Join(s.key, ", ")))
	}
	return nil
}

// Write upserts the batch. The upsert is one statement, so it commits atomically on its own.
func (s *Sink) Write(ctx context.Context, b *batch.Batch) (int64, error) {
	if s.pipe != nil {
		return 0, fmt.Errorf("write to %s: Write while batches are in flight", s.name())
	}
	return s.write(ctx, b)
}

// write upserts the batch with one statement, which commits atomically on its own; with
// deletes or a Mirror run's side table, its statements go in one batch, which Postgres runs
// as one implicit transaction.
func (s *Sink) write(ctx context.Context, b *batch.Batch) (int64, error) {
	if b.Len() == 0 {
		return 0, nil
	}
	if s.columns == nil {
		return 0, fmt.Errorf("write to %s: sink used before Prepare", s.name())
	}
	var formats []int16
	if b.Raw != nil {
		formats = b.Raw.Formats
	}
	sh, err := s.shapeFor(ctx, b.Columns, formats)
	if err != nil {
		return 0, err
	}
	qs, upsert, err := s.queries(sh, b)
	if err != nil {
		return 0, err
	}
	if len(qs) == 1 && upsert {
		q := qs[0]
		res := s.conn.PgConn().ExecPrepared(ctx, q.stmt, q.params, binaryFormats(len(q.params)), nil).Read()
		if res.Err != nil {
			return 0, fmt.Errorf("write to %s: upsert: %w", s.name(), res.Err)
		}
		return res.CommandTag.RowsAffected(), nil
	}
	pb := &pgconn.Batch{}
	for _, q := range qs {
		pb.ExecPrepared(q.stmt, q.params, binaryFormats(len(q.params)), nil)
	}
	results, err := s.conn.PgConn().ExecBatch(ctx, pb).ReadAll()
	if err != nil {
		return 0, fmt.Errorf("write to %s: %w", s.name(), err)
	}
	var n int64
	if upsert && len(results) > 0 {
		n = results[0].CommandTag.RowsAffected()
	}
	return n, nil
}

// WritesRaw implements sink.RawWriter: a column whose source type pgx knows is carried in
// that type, so the source's binary encoding is a valid element of the array parameter.
func (s *Sink) WritesRaw() bool { return true }

// Close takes the connection out of pipeline mode; the prepared statements go with the
// session.
func (s *Sink) Close(ctx context.Context) error { return s.closePipeline(ctx) }
