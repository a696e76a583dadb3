package cdc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
)

// StreamOptions configure a Stream.
type StreamOptions struct {
	Slot, Publication string
	// Table is `schema.table`.
	Table string
	// Columns are the shape of every batch: the initial copy's reader columns (name and type
	// OID), so that the copy and the stream write the same rows.
	Columns []batch.Column
	// Keys are the key columns.
	Keys []string
	// TypeMap decodes the values (the source connection's, with the reader's types).
	TypeMap *pgtype.Map
	// Linger is how long a batch with changes waits for more (100ms); MaxWait bounds how long
	// a batch stays open while changes keep coming (1s); Idle how long a call without any
	// change waits before it returns an empty batch (1s).
	Linger, MaxWait, Idle time.Duration
	// StatusInterval is the most time between two status updates to the server (10s).
	StatusInterval time.Duration
}

// Changes are whole source transactions, in commit order.
type Changes struct {
	// Batch holds one row per change in Columns' shape; a delete's row (Deleted) carries its
	// key columns only. A key changed by an update is a delete of the old key, then a row.
	Batch *batch.Batch
	// End is the position after the batch's last transaction: its checkpoint. For an empty
	// batch it is the server's position once every change before it was received (0: not
	// known), which a checkpoint may also take.
	End pglogrepl.LSN
	// Transactions counts the batch's source transactions; FirstCommit and LastCommit are
	// the source commit times of its first and last one.
	Transactions            int
	FirstCommit, LastCommit time.Time
	// Unchanged are the batch's rows whose update left large values out of the log: the
	// caller reads them from the table before the batch is written.
	Unchanged []Unchanged
}

// Stream reads the changes of one table from a replication slot.
type Stream struct {
	conn *pgconn.PgConn
	opts StreamOptions
	// relation is the table's relation id in the stream, cols maps its columns to the
	// batch's (-1: not replicated); keyIdx are the key columns' places in the batch.
	relation uint32
	cols     []int
	keyIdx   []int
	// the transaction being received
	inTxn    bool
	begin    pglogrepl.BeginMessage
	txn      []change
	truncate bool
	// held is a complete transaction that did not fit in the last batch; failed an error
	// found after the last batch's transactions (a TRUNCATE), returned by the next call.
	held   *transaction
	failed error
	// committed is what the sink committed, which the slot is told; serverEnd the server's
	// position as its last keepalive gave it.
	committed  pglogrepl.LSN
	unsent     bool
	serverEnd  pglogrepl.LSN
	lastStatus time.Time
}

type change struct {
	row     []any
	deleted bool
	// unchanged are the columns the log did not carry, keys the row's key values as the log
	// gave them (set only with unchanged).
	unchanged []int
	keys      []string
}

type transaction struct {
	changes []change
	end     pglogrepl.LSN
	commit  time.Time
}

// Start starts streaming the slot from `from` (the checkpoint: every transaction that
// committed before it is skipped).
func Start(ctx context.Context, conn *pgconn.PgConn, from pglogrepl.LSN, o StreamOptions) (*Stream, error) {
	if o.Linger == 0 {
		o.Linger = 100 * time.Millisecond
	}
	if o.MaxWait == 0 {
		o.MaxWait = time.Second
	}
	if o.Idle == 0 {
		o.Idle = time.Second
	}
	if o.StatusInterval == 0 {
		o.StatusInterval = 10 * time.Second
	}
	s := &Stream{conn: conn, opts: o, committed: from}
	b := batch.Batch{Columns: o.Columns}
	idx, missing := b.Indexes(o.Keys)
	if missing != "" {
		return nil, failure.Business(fmt.Errorf("cdc: key column %q is not replicated", missing))
	}
	s.keyIdx = idx
	err := pglogrepl.StartReplication(ctx, conn, o.Slot, from, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names " + quoteLiteral(o.Publication)},
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55000" { // object_not_in_prerequisite_state: an invalidated slot
			return nil, failure.Business(fmt.Errorf("cdc: replication slot %s: %s (%w)", o.Slot, pgErr.Message, ErrSlotLost))
		}
		return nil, fmt.Errorf("cdc: start replication from slot %s at %s: %w", o.Slot, from, err)
	}
	s.lastStatus = time.Now()
	return s, nil
}

// errQuiet stands for a receive that was not tried: the batch's time was up.
var errQuiet = errors.New("cdc: no time left to wait")

// ErrSlotLost marks the failure of a stream whose slot the server invalidated.
var ErrSlotLost = errors.New("the replication slot is lost")

// Committed records that the sink committed every change before lsn. The server is told
// with the stream's next read, or when it closes, and may then free the WAL before it: the
// slot's confirmed position never passes what the sink holds.
func (s *Stream) Committed(lsn pglogrepl.LSN) {
	if lsn > s.committed {
		s.committed, s.unsent = lsn, true
	}
}

func (s *Stream) status(ctx context.Context, reply bool) error {
	s.lastStatus, s.unsent = time.Now(), false
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: s.committed, ReplyRequested: reply})
	if err != nil {
		return fmt.Errorf("cdc: send status to the source: %w", err)
	}
	return nil
}

// Close tells the server the last committed position, and ends the stream and its
// connection.
func (s *Stream) Close(ctx context.Context) {
	if s.unsent {
		_ = s.status(ctx, false)
	}
	_ = s.conn.Close(ctx)
}

// Next returns the next batch: whole transactions until the batch has at least maxRows rows
// or maxBytes bytes (a transaction is never split, so a large one makes a large batch), no
// change came for Linger, or the batch has been open for MaxWait. Without any change for
// Idle it returns an empty batch. A TRUNCATE of the table is a business error, returned
// once the transactions before it were.
func (s *Stream) Next(ctx context.Context, maxRows int, maxBytes int64) (Changes, error) {
	ch := Changes{Batch: &batch.Batch{Columns: s.opts.Columns}}
	if s.failed != nil {
		return ch, s.failed
	}
	var size int64
	add := func(t *transaction) bool {
		if ch.Transactions > 0 && (ch.Batch.Len()+len(t.changes) > maxRows || (maxBytes > 0 && size >= maxBytes)) {
			s.held = t
			return false
		}
		for _, c := range t.changes {
			if len(c.unchanged) > 0 {
				ch.Unchanged = append(ch.Unchanged, Unchanged{Row: ch.Batch.Len(), Keys: c.keys, Columns: c.unchanged})
			}
			ch.Batch.Rows = append(ch.Batch.Rows, c.row)
			ch.Batch.Deleted = append(ch.Batch.Deleted, c.deleted)
			size += rowSize(c.row)
		}
		if ch.Transactions == 0 {
			ch.FirstCommit = t.commit
		}
		ch.Transactions++
		ch.End, ch.LastCommit = t.end, t.commit
		return true
	}
	if t := s.held; t != nil {
		s.held = nil
		add(t)
	}
	opened := time.Now()
	asked := false
	// An empty batch returns by quiet, even while messages keep coming: a busy database sends
	// keepalives (and nothing else) for the transactions of its other tables, and the caller
	// needs the empty batch to confirm the slot and to report.
	quiet := opened.Add(s.opts.Idle)
	for ch.Transactions == 0 || (ch.Batch.Len() < maxRows && (maxBytes <= 0 || size < maxBytes) && time.Since(opened) < s.opts.MaxWait) {
		if s.unsent || time.Since(s.lastStatus) >= s.opts.StatusInterval {
			if err := s.status(ctx, false); err != nil {
				return ch, err
			}
		}
		wait := s.opts.Linger
		if ch.Transactions == 0 {
			wait = max(time.Until(quiet), 0)
		}
		var msg pgproto3.BackendMessage
		err := errQuiet
		if wait > 0 {
			rctx, cancel := context.WithTimeout(ctx, wait)
			msg, err = s.conn.ReceiveMessage(rctx)
			cancel()
		}
		if err != nil {
			if ctx.Err() == nil && (errors.Is(err, errQuiet) || pgconn.Timeout(err)) {
				if ch.Transactions > 0 {
					break
				}
				if !asked && !s.inTxn {
					// Ask the server where it is: its answer is a keepalive with the
					// position it has sent everything before.
					asked = true
					quiet = time.Now().Add(s.opts.Linger)
					if err := s.status(ctx, true); err != nil {
						return ch, err
					}
					continue
				}
				if !s.inTxn && s.serverEnd > s.committed {
					ch.End = s.serverEnd
				}
				return ch, nil
			}
			return ch, fmt.Errorf("cdc: receive from slot %s: %w", s.opts.Slot, err)
		}
		t, err := s.receive(ctx, msg)
		if err != nil {
			if ch.Transactions > 0 && failure.Classify(err) == etlv1.ErrorBusiness {
				s.failed = err
				break
			}
			return ch, err
		}
		if t != nil && !add(t) {
			break
		}
	}
	return ch, nil
}

// receive handles one message, and returns the transaction it completed, if any.
func (s *Stream) receive(ctx context.Context, msg pgproto3.BackendMessage) (*transaction, error) {
	switch m := msg.(type) {
	case *pgproto3.ErrorResponse:
		return nil, fmt.Errorf("cdc: slot %s: %w", s.opts.Slot, pgconn.ErrorResponseToPgError(m))
	case *pgproto3.CopyData:
		if len(m.Data) == 0 {
			return nil, nil
		}
		switch m.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			k, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
			if err != nil {
				return nil, fmt.Errorf("cdc: keepalive: %w", err)
			}
			s.serverEnd = max(s.serverEnd, k.ServerWALEnd)
			if k.ReplyRequested {
				return nil, s.status(ctx, false)
			}
		case pglogrepl.XLogDataByteID:
			x, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				return nil, fmt.Errorf("cdc: wal data: %w", err)
			}
			return s.logical(x.WALData)
		}
	case *pgproto3.CopyDone:
		return nil, fmt.Errorf("cdc: slot %s: the server ended the stream", s.opts.Slot)
	}
	return nil, nil
}

// logical handles one pgoutput message.
func (s *Stream) logical(data []byte) (*transaction, error) {
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("cdc: decode pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		return nil, s.relationOf(m)
	case *pglogrepl.BeginMessage:
		s.inTxn, s.begin, s.txn, s.truncate = true, *m, s.txn[:0:0], false
	case *pglogrepl.InsertMessage:
		if m.RelationID != s.relation {
			return nil, nil
		}
		c, err := s.change(m.Tuple, nil)
		if err != nil {
			return nil, err
		}
		s.txn = append(s.txn, c)
	case *pglogrepl.UpdateMessage:
		if m.RelationID != s.relation {
			return nil, nil
		}
		c, err := s.change(m.NewTuple, m.OldTuple)
		if err != nil {
			return nil, err
		}
		if m.OldTuple != nil {
			old, err := s.row(m.OldTuple, nil)
			if err != nil {
				return nil, err
			}
			if !s.sameKey(old, c.row) {
				s.txn = append(s.txn, change{row: s.keyOnly(old), deleted: true})
			}
		}
		s.txn = append(s.txn, c)
	case *pglogrepl.DeleteMessage:
		if m.RelationID != s.relation {
			return nil, nil
		}
		if m.OldTuple == nil {
			return nil, failure.Business(fmt.Errorf("cdc: a delete in %s carries no key (replica identity)", s.opts.Table))
		}
		old, err := s.row(m.OldTuple, nil)
		if err != nil {
			return nil, err
		}
		s.txn = append(s.txn, change{row: s.keyOnly(old), deleted: true})
	case *pglogrepl.TruncateMessage:
		if slices.Contains(m.RelationIDs, s.relation) {
			s.truncate = true
		}
	case *pglogrepl.CommitMessage:
		s.inTxn = false
		if s.truncate {
			return nil, failure.Business(fmt.Errorf("cdc: table %s was truncated by the source transaction that committed at %s (LSN %s): "+
				"a CDC pipeline does not apply TRUNCATE; decide what the sink should hold, then resnapshot (docs/cdc.md)",
				s.opts.Table, m.CommitTime.UTC().Format(time.RFC3339), m.CommitLSN))
		}
		t := &transaction{changes: s.txn, end: m.TransactionEndLSN, commit: m.CommitTime}
		s.txn = nil
		return t, nil
	}
	return nil, nil
}

// relationOf learns the table's relation message: which of its columns the batch holds.
func (s *Stream) relationOf(m *pglogrepl.RelationMessage) error {
	if m.Namespace+"."+m.RelationName != s.opts.Table {
		return nil
	}
	s.relation = m.RelationID
	s.cols = make([]int, len(m.Columns))
	found := make([]bool, len(s.opts.Columns))
	for i, c := range m.Columns {
		s.cols[i] = -1
		for j, bc := range s.opts.Columns {
			if bc.Name == c.Name {
				s.cols[i], found[j] = j, true
			}
		}
	}
	for j, ok := range found {
		if !ok {
			return failure.Business(fmt.Errorf("cdc: column %q of table %s is gone from the stream (ALTER TABLE): "+
				"the next run reads the table's columns again", s.opts.Columns[j].Name, s.opts.Table))
		}
	}
	return nil
}

// row decodes a tuple into a batch row; a value the log did not carry is an error.
func (s *Stream) row(t, old *pglogrepl.TupleData) ([]any, error) {
	c, err := s.change(t, old)
	if err == nil && len(c.unchanged) > 0 {
		err = failure.Business(fmt.Errorf("cdc: a change of %s does not carry column %q", s.opts.Table, s.opts.Columns[c.unchanged[0]].Name))
	}
	return c.row, err
}

// change decodes a tuple into a change. A TOASTed value the update left unchanged is not
// sent: it comes from the old row, which only REPLICA IDENTITY FULL sends, or else the
// change lists it as unchanged.
func (s *Stream) change(t, old *pglogrepl.TupleData) (change, error) {
	if s.cols == nil {
		return change{}, fmt.Errorf("cdc: a change of %s came before its relation", s.opts.Table)
	}
	if t == nil || len(t.Columns) != len(s.cols) {
		return change{}, fmt.Errorf("cdc: a change of %s does not match its relation's %d columns", s.opts.Table, len(s.cols))
	}
	c := change{row: make([]any, len(s.opts.Columns))}
	for i, tc := range t.Columns {
		j := s.cols[i]
		if j < 0 {
			continue
		}
		data := tc.Data
		switch tc.DataType {
		case pglogrepl.TupleDataTypeNull:
			continue
		case pglogrepl.TupleDataTypeToast:
			if old == nil || i >= len(old.Columns) || old.Columns[i].DataType != pglogrepl.TupleDataTypeText {
				if slices.Contains(s.keyIdx, j) {
					return change{}, failure.Business(fmt.Errorf("cdc: an update of %s left key column %q's large (TOASTed) value unchanged, "+
						"and the stream does not carry it: set REPLICA IDENTITY FULL on the table (docs/cdc.md)",
						s.opts.Table, s.opts.Columns[j].Name))
				}
				c.unchanged = append(c.unchanged, j)
				continue
			}
			data = old.Columns[i].Data
		}
		v, err := s.decode(j, data)
		if err != nil {
			return change{}, err
		}
		c.row[j] = v
	}
	if len(c.unchanged) > 0 {
		c.keys = make([]string, len(s.keyIdx))
		for i, tc := range t.Columns {
			if k := slices.Index(s.keyIdx, s.cols[i]); s.cols[i] >= 0 && k >= 0 {
				c.keys[k] = string(tc.Data)
			}
		}
	}
	return c, nil
}

// decode decodes a text value the way the reader reads the column: with its codec where the
// reader asks for binary, else as text.
func (s *Stream) decode(col int, data []byte) (any, error) {
	oid := s.opts.Columns[col].Type
	m := s.opts.TypeMap
	t, ok := m.TypeForOID(oid)
	if !ok || !t.Codec.FormatSupported(pgtype.BinaryFormatCode) {
		return string(data), nil
	}
	if _, isArray := t.Codec.(*pgtype.ArrayCodec); isArray {
		return string(data), nil
	}
	v, err := t.Codec.DecodeValue(m, oid, pgtype.TextFormatCode, bytes.Clone(data))
	if err != nil {
		return nil, fmt.Errorf("cdc: decode column %q of %s: %w", s.opts.Columns[col].Name, s.opts.Table, err)
	}
	return v, nil
}

func (s *Stream) sameKey(a, b []any) bool {
	for _, k := range s.keyIdx {
		if fmt.Sprint(a[k]) != fmt.Sprint(b[k]) {
			return false
		}
	}
	return true
}

func (s *Stream) keyOnly(row []any) []any {
	out := make([]any, len(row))
	for _, k := range s.keyIdx {
		out[k] = row[k]
	}
	return out
}

func rowSize(row []any) int64 {
	n := int64(0)
	for _, v := range row {
		switch x := v.(type) {
		case string:
			n += int64(len(x))
		case []byte:
			n += int64(len(x))
		default:
			n += 8
		}
	}
	return n
}
