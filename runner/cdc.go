package runner

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/metrics"
	"github.com/sluice-dev/sluice/runner/source/cdc"
	"github.com/sluice-dev/sluice/runner/state"
	"github.com/sluice-dev/sluice/runner/transform"
)

// A CDC run (spec.mode CDC) has two phases. While the checkpoint is empty or holds a key, it
// copies the table with the keyset reader, from the snapshot its replication slot exported
// (or, after the copy was interrupted, from a newer one: the stream then replays every
// change since the slot's start over the rows copied, and the sink converges). Once the
// copy is done the checkpoint becomes the slot's start position, and from then on it is an
// LSN: the end of the last source transaction the sink committed. The slot is told of a
// position only after the sink committed it.

// cdcPlan is what a CDC run streams.
type cdcPlan struct {
	// table is `schema.table`; columns those replicated (nil: all).
	table   string
	columns []string
	// bounded: the pipeline has a schedule, and a run ends at the WAL position current at
	// its start; else a run streams until it is paused.
	bounded bool
}

// lsnColumn is the one column of a streaming CDC pipeline's checkpoint; it cannot be a
// column name of the table (the API's pattern).
const lsnColumn = "$lsn"

// cdcHeartbeat is the most time an idle stream waits before it moves its checkpoint to the
// server's position, so that the slot frees the WAL of other tables' writes.
const cdcHeartbeat = 5 * time.Second

// cdcInspectEvery is the most time between two looks at the slot (retained WAL, health).
const cdcInspectEvery = 10 * time.Second

func planCDC(p *plan, bad func(string, ...any)) {
	spec := &p.spec
	if spec.Source.Table == "" {
		bad("source.table is required in CDC mode")
	}
	if spec.Source.Cursor.Column != "" {
		bad("source.cursor.column does not apply to CDC mode: the write-ahead log orders the changes")
	}
	if spec.Source.Query != "" || slices.ContainsFunc(spec.Tasks, func(t etlv1.Task) bool { return t.SQL != "" }) {
		bad("a CDC pipeline reads source.table: source.query and sql tasks do not apply")
	}
	if len(spec.Target.Key) > 0 && !slices.Equal(spec.Target.Key, spec.Source.Cursor.KeyColumns) {
		bad("target.key does not apply to CDC mode: the sink key is the table's key (source.cursor.keyColumns), by which deletes are applied")
	}
	if strings.HasPrefix(spec.Target.Name, "es:") {
		switch spec.Target.Action {
		case "":
			spec.Target.Action = etlv1.ActionIndex
		case etlv1.ActionUpdate:
			bad(cdcUpdateRefusal)
		}
	}
	p.cdc = &cdcPlan{table: configv1.QualifiedTable(spec.Source.Table), columns: spec.Source.Columns, bounded: spec.Schedule != ""}
	p.query = copyQuery(p.cdc.table, p.cdc.columns)
}

// cdcUpdateRefusal is why a CDC pipeline does not write to Elasticsearch with bulk update.
const cdcUpdateRefusal = "target.action Update does not apply to CDC mode: a change carries the whole row, and a row " +
	"deleted and inserted again would be merged into the deleted row's document; CDC indexes whole documents (Index, the default)"

// copyQuery is the initial copy's reader query.
func copyQuery(table string, columns []string) string {
	schema, name := cdc.SplitTable(table)
	list := "*"
	if len(columns) > 0 {
		q := make([]string, len(columns))
		for i, c := range columns {
			q[i] = pgx.Identifier{c}.Sanitize()
		}
		list = strings.Join(q, ", ")
	}
	return "SELECT " + list + " FROM " + pgx.Identifier{schema, name}.Sanitize()
}

// cdcStartPosition decides where a CDC run starts from the committed state: an LSN
// (streaming), the key of the last copied row (the copy goes on), or nothing (a snapshot
// copy starts, with a new slot). Pure.
func cdcStartPosition(pl *plan, c state.Claim) ([]string, string) {
	cp := c.Incremental
	switch {
	case cp == nil:
		return nil, "no checkpoint: the stream starts with a copy of the table from a new slot's snapshot"
	case slices.Equal(cp.Columns, []string{lsnColumn}) && len(cp.Values) == 1:
		return cp.Values, "streaming from the checkpoint's WAL position"
	case slices.Equal(cp.Columns, pl.order):
		return cp.Values, "continuing the table's copy after its checkpoint"
	}
	return nil, fmt.Sprintf("checkpoint was taken on (%s): the stream starts with a copy of the table from a new slot's snapshot",
		strings.Join(cp.Columns, ", "))
}

// checkpointLSN returns the LSN a CDC checkpoint holds, if it holds one.
func checkpointLSN(after []string) (pglogrepl.LSN, bool) {
	if len(after) != 1 || !strings.Contains(after[0], "/") {
		return 0, false
	}
	lsn, err := pglogrepl.ParseLSN(after[0])
	return lsn, err == nil
}

// cdcRun is a CDC run's state across sessions.
type cdcRun struct {
	slot, publication string
	// until is a bounded run's end: the source's WAL insert position when the run started.
	until      cdc.End
	untilTaken bool
	// consistent is the start of the slot this run created (0: not created by this run).
	consistent pglogrepl.LSN
	// stream is the live session's, which committed batches confirm to the slot.
	stream *cdc.Stream
	// lastBeat is when the checkpoint last moved; lastInspect when the slot was last read.
	lastBeat, lastInspect time.Time
	// status is the replication status as last reported.
	status etlv1.ReplicationStatus
}

// preflightCDC checks the source before anything is created there: wal_level, the role's
// REPLICATION, the table, its key and replica identity.
func (e *executor) preflightCDC(ctx context.Context, s *session) error {
	c := e.pl.cdc
	if e.cdc == nil {
		slot, pub := cdc.Names(e.p.Pipeline.Namespace, e.p.Pipeline.Name, e.p.Pipeline.UID, e.pl.stream)
		e.cdc = &cdcRun{slot: slot, publication: pub}
		e.cdc.status = etlv1.ReplicationStatus{Slot: slot, Publication: pub, Phase: etlv1.ReplicationSnapshot}
	}
	f, err := cdc.Gather(ctx, s.src, c.table, e.cdc.publication)
	if err != nil {
		return err
	}
	return cdc.Problem(f, e.pl.keys, c.columns)
}

// openCDC readies the session's CDC side once the checkpoint is known: a new slot and its
// snapshot for a copy from the start, the existing slot otherwise.
func (e *executor) openCDC(ctx context.Context, s *session) error {
	c := e.cdc
	repl, err := cdc.ConnectReplication(ctx, e.pl.dsns[e.pl.sourceConn], appName(e.p.Pipeline))
	if err != nil {
		return err
	}
	s.repl = repl
	if err := e.dropStaleSlots(ctx, s); err != nil {
		return err
	}
	if !c.untilTaken && e.pl.cdc.bounded {
		if c.until, err = cdc.CurrentEnd(ctx, s.src); err != nil {
			return err
		}
		c.untilTaken = true
	}
	if e.after == nil {
		// A new copy: a slot left by an interrupted first attempt, or by the stream before a
		// checkpoint reset, goes; the new one's snapshot is what the copy reads.
		if err := s.store.RecordSlot(ctx, state.SlotRecord{UID: e.p.Pipeline.UID, Connection: e.pl.sourceConn,
			Slot: c.slot, Publication: c.publication}); err != nil {
			return err
		}
		if err := cdc.DropSlot(ctx, repl, c.slot); err != nil {
			return err
		}
		if err := cdc.EnsurePublication(ctx, repl, c.publication, e.pl.cdc.table); err != nil {
			return err
		}
		created, err := cdc.CreateSlot(ctx, repl, c.slot)
		if err != nil {
			return err
		}
		c.consistent = created.ConsistentPoint
		s.reader.UseSnapshot(created.Snapshot)
		s.copying = true
		e.log.Info("replication slot created; copying the table from its snapshot", "slot", c.slot,
			"consistentPoint", created.ConsistentPoint.String(), "snapshot", created.Snapshot)
		return e.inspectSlot(ctx, s, true)
	}
	if err := e.inspectSlot(ctx, s, true); err != nil {
		return err
	}
	if _, ok := checkpointLSN(e.after); !ok {
		s.copying = true
		return nil
	}
	// The publication may have been dropped by hand; the stream needs it.
	return cdc.EnsurePublication(ctx, repl, c.publication, e.pl.cdc.table)
}

// dropStaleSlots drops the slots an earlier pipeline of the name, or an earlier stream of
// this one, left in the source: they would retain WAL for nobody.
func (e *executor) dropStaleSlots(ctx context.Context, s *session) error {
	recs, err := s.store.Slots(ctx)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.Slot == e.cdc.slot || r.Connection != e.pl.sourceConn {
			continue
		}
		if err := cdc.DropSlot(ctx, s.repl, r.Slot); err != nil {
			return err
		}
		if err := cdc.DropPublication(ctx, s.repl, r.Publication); err != nil {
			return err
		}
		if err := s.store.ForgetSlot(ctx, r.Connection, r.Slot); err != nil {
			return err
		}
		e.log.Info("dropped the replication slot of an earlier stream", "slot", r.Slot)
	}
	return nil
}

// inspectSlot reads the slot, at most every cdcInspectEvery unless forced: its retained WAL
// and health go to the status and the metrics. A lost slot fails the run.
func (e *executor) inspectSlot(ctx context.Context, s *session, force bool) error {
	c := e.cdc
	if !force && time.Since(c.lastInspect) < cdcInspectEvery {
		return nil
	}
	c.lastInspect = time.Now()
	info, err := cdc.InspectSlot(ctx, s.src, c.slot)
	if err != nil {
		return err
	}
	ok, reason, msg := cdc.Health(info)
	st := metav1.ConditionTrue
	if !ok {
		st = metav1.ConditionFalse
	}
	e.setCondition(metav1.Condition{Type: etlv1.ConditionReplicationSlotHealthy, Status: st, Reason: reason,
		Message: c.slot + ": " + msg, ObservedGeneration: e.pl.generation})
	now := metav1.Now()
	c.status.RetainedWALBytes, c.status.WALStatus, c.status.ObservedTime = info.Retained, info.WALStatus, &now
	c.status.Phase = etlv1.ReplicationStreaming
	if s.copying {
		c.status.Phase = etlv1.ReplicationSnapshot
	}
	if lsn, ok := checkpointLSN(e.after); ok {
		c.status.ConfirmedLSN = lsn.String()
	}
	if !ok && reason == etlv1.ReasonSlotLost {
		return failure.Business(fmt.Errorf("cdc: replication slot %s: %s (%w)", c.slot, msg, cdc.ErrSlotLost))
	}
	return nil
}

// cdcStep moves one batch of a CDC run: a page of the copy, or whole source transactions
// of the stream. It reports done when a bounded run reached its end.
func (e *executor) cdcStep(ctx context.Context, s *session, stages []transform.Stage) (bool, error) {
	if err := e.inspectSlot(ctx, s, false); err != nil {
		return false, err
	}
	if s.copying {
		done, err := e.step(ctx, s, stages)
		if err != nil || !done {
			return false, err
		}
		return false, e.handOver(ctx, s)
	}
	if s.stream == nil {
		if err := e.startStream(ctx, s); err != nil {
			return false, err
		}
	}
	ch, err := s.stream.Next(ctx, e.pl.batchSize, e.pl.maxBytes)
	if err != nil {
		return false, err
	}
	if err := fillUnchanged(ctx, s.reader, &ch); err != nil {
		return false, err
	}
	if ch.Transactions == 0 {
		// An idle stream has nothing to overlap: the batch kept in flight commits now.
		if err := e.drain(ctx, s); err != nil {
			return false, err
		}
		from, _ := checkpointLSN(e.after)
		if ch.End > from &&
			(time.Since(e.cdc.lastBeat) >= cdcHeartbeat || (e.pl.cdc.bounded && e.cdc.until.Reached(ch.End))) {
			if err := e.moveTo(ctx, s, ch.End); err != nil {
				return false, err
			}
			from = ch.End
		}
		e.cdc.status.LagMilliseconds = 0
		return e.pl.cdc.bounded && e.cdc.until.Reached(from), nil
	}
	var obs metrics.Batch
	b := ch.Batch
	out, rejects, err := e.transformChanges(ctx, s, stages, b, &obs)
	if err != nil {
		return false, err
	}
	if err := checkKeys(out, e.pl.sinkKey); err != nil {
		return false, err
	}
	sb := e.sent(b, out, &state.Position{Columns: []string{lsnColumn}, Values: []string{ch.End.String()}}, rejects, obs)
	if err := e.write(ctx, s, sb); err != nil {
		return false, err
	}
	e.cdc.status.LagMilliseconds = max(time.Since(ch.FirstCommit).Milliseconds(), 0)
	t := metav1.NewTime(ch.LastCommit)
	e.cdc.status.LastSourceCommitTime = &t
	// A bounded run ends once it applied the WAL current at its start, even while the
	// source keeps writing.
	if e.pl.cdc.bounded && e.cdc.until.Reached(ch.End) {
		return true, e.drain(ctx, s)
	}
	return false, nil
}

// transformChanges runs the python tasks over a stream batch's written rows. A delete
// carries only its key, which no task could make sense of: deletes go to the sink as they
// are. The batch is first reduced to each key's last change (what the sink applies anyway),
// so that the written rows and the deletes touch distinct keys and their order cannot matter.
func (e *executor) transformChanges(ctx context.Context, s *session, stages []transform.Stage, b *batch.Batch, obs *metrics.Batch) (*batch.Batch, []rejectedRow, error) {
	if e.identity {
		markDeleted(e.pl.deleteWhen, b)
		out, rejects, err := e.transformRejecting(ctx, s, stages, b, obs)
		if err == nil {
			dropMarker(e.pl.deleteWhen, out)
		}
		return out, rejects, err
	}
	last := lastChangePerKey(b, e.pl.keys)
	var ups, dels []int
	for _, i := range last {
		if b.Deleted[i] {
			dels = append(dels, i)
		} else {
			ups = append(ups, i)
		}
	}
	written := b.Select(ups)
	written.Deleted = nil
	markDeleted(e.pl.deleteWhen, written)
	out, rejects, err := e.transformRejecting(ctx, s, stages, written, obs)
	if err != nil {
		return nil, nil, err
	}
	dropMarker(e.pl.deleteWhen, out)
	// Rejected rows name rows of the batch the tasks saw; the executor's bookkeeping is by
	// the reader batch, which here is written's.
	if len(dels) == 0 {
		*b = *written
		return out, rejects, nil
	}
	if out.Deleted == nil {
		out.Deleted = make([]bool, out.Len())
	}
	n := len(ups)
	for k, i := range dels {
		row := make([]any, len(out.Columns))
		for c, col := range out.Columns {
			if j := b.Index(col.Name); j >= 0 && slices.Contains(e.pl.keys, col.Name) {
				row[c] = b.Rows[i][j]
			}
		}
		out.Rows = append(out.Rows, row)
		out.Deleted = append(out.Deleted, true)
		if out.Origin != nil {
			out.Origin = append(out.Origin, n+k)
		}
	}
	// The reader batch the executor keeps is the written rows, then the deletes.
	*b = *batchAt(b, append(slices.Clone(ups), dels...))
	return out, rejects, nil
}

// batchAt returns b's rows at idx, with their delete flags.
func batchAt(b *batch.Batch, idx []int) *batch.Batch {
	out := b.Select(idx)
	out.Deleted = make([]bool, len(idx))
	for k, i := range idx {
		out.Deleted[k] = b.Deleted[i]
	}
	return out
}

// lastChangePerKey returns, in batch order, the index of each key's last change. Pure.
func lastChangePerKey(b *batch.Batch, keys []string) []int {
	idx, _ := b.Indexes(keys)
	last := map[string]int{}
	order := make([]string, 0, b.Len())
	for i, row := range b.Rows {
		var k strings.Builder
		for _, j := range idx {
			fmt.Fprintf(&k, "%T:%v\x00", row[j], row[j])
		}
		key := k.String()
		if _, seen := last[key]; !seen {
			order = append(order, key)
		}
		last[key] = i
	}
	out := make([]int, 0, len(last))
	for _, k := range order {
		out = append(out, last[k])
	}
	slices.Sort(out)
	return out
}

// handOver ends the copy: the checkpoint becomes the slot's start, from which the stream
// goes on.
func (e *executor) handOver(ctx context.Context, s *session) error {
	if err := e.drain(ctx, s); err != nil {
		return err
	}
	start := e.cdc.consistent
	if start == 0 {
		info, err := cdc.InspectSlot(ctx, s.src, e.cdc.slot)
		if err != nil {
			return err
		}
		if !info.Exists || info.Lost() {
			_, _, msg := cdc.Health(info)
			return failure.Business(fmt.Errorf("cdc: replication slot %s: %s (%w)", e.cdc.slot, msg, cdc.ErrSlotLost))
		}
		start = info.Confirmed
	}
	if err := e.moveTo(ctx, s, start); err != nil {
		return err
	}
	s.copying = false
	// The stream's start ends the exported snapshot.
	s.reader.UseSnapshot("")
	e.cdc.status.Phase = etlv1.ReplicationStreaming
	e.log.Info("table copied; streaming from the slot", "slot", e.cdc.slot, "from", start.String())
	return nil
}

// moveTo commits a checkpoint at lsn without rows: the copy's end, or an idle stream's
// position.
func (e *executor) moveTo(ctx context.Context, s *session, lsn pglogrepl.LSN) error {
	adv := state.Advance{Mode: e.pl.mode, RunID: e.p.RunID, Generation: e.pl.generation,
		Position: &state.Position{Columns: []string{lsnColumn}, Values: []string{lsn.String()}}}
	if err := s.store.Advance(ctx, e.epoch, adv); err != nil {
		return err
	}
	e.after = adv.Position.Values
	// Nothing is in flight (the callers drained): the next batch sent follows this position.
	e.sentAfter = e.after
	e.checkpointTime = time.Now()
	e.cdcCommitted(e.after)
	return nil
}

// startStream starts the session's stream at the checkpoint.
func (e *executor) startStream(ctx context.Context, s *session) error {
	from, ok := checkpointLSN(e.after)
	if !ok {
		return fmt.Errorf("cdc: checkpoint %v is not a WAL position", e.after)
	}
	// This runner holds the pipeline's claim: a walsender still streaming its slot serves a
	// runner that lost it.
	if released, err := cdc.ReleaseSlot(ctx, s.src, e.cdc.slot, slotReleaseWait); err != nil {
		return err
	} else if released {
		e.log.Warn("ended the walsender of an earlier runner that still held the replication slot", "slot", e.cdc.slot)
	}
	st, err := cdc.Start(ctx, s.repl, from, cdc.StreamOptions{
		Slot: e.cdc.slot, Publication: e.cdc.publication, Table: e.pl.cdc.table,
		Columns: s.reader.Columns(), Keys: e.pl.keys, TypeMap: s.src.TypeMap(),
	})
	if err != nil {
		return err
	}
	s.stream, e.cdc.stream = st, st
	e.cdc.lastBeat = time.Now()
	return nil
}

// cdcCommitted tells the slot that the sink committed everything before a checkpoint.
func (e *executor) cdcCommitted(pos []string) {
	if e.cdc == nil {
		return
	}
	lsn, ok := checkpointLSN(pos)
	if !ok {
		return
	}
	e.cdc.lastBeat = time.Now()
	e.cdc.status.ConfirmedLSN = lsn.String()
	if e.cdc.stream != nil {
		e.cdc.stream.Committed(lsn)
	}
}

// replicationStatus is the status.replication a CDC run reports.
func (e *executor) replicationStatus() *etlv1.ReplicationStatus {
	if e.cdc == nil {
		return nil
	}
	return e.cdc.status.DeepCopy()
}
