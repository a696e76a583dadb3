package runner

import (
	"context"
	"time"

	"github.com/sluice-dev/sluice/runner/source"
	"github.com/sluice-dev/sluice/runner/source/cdc"
)

// slotReleaseWait bounds the wait for the walsender of an earlier runner, once ended, to let
// the slot go (the stream's start, the forget Job's drop).
const slotReleaseWait = 10 * time.Second

// fillUnchanged reads the large values the log did not carry (cdc.Unchanged) from the table,
// by key, through the reader, which decodes them as the copy does. It reads the table as it
// is now, which may be newer than the change: every change that made it newer follows in the
// stream, so the sink still ends where the source is. A row the table no longer holds was
// deleted by a transaction that follows in the stream too: its change is dropped from the
// batch, and the delete applies.
func fillUnchanged(ctx context.Context, r *source.Reader, ch *cdc.Changes) error {
	if len(ch.Unchanged) == 0 {
		return nil
	}
	keys := make([][]string, len(ch.Unchanged))
	for i, u := range ch.Unchanged {
		keys[i] = u.Keys
	}
	now, err := r.ReadKeys(ctx, keys)
	if err != nil {
		return err
	}
	at := make(map[string]int, now.Len())
	for i := range now.Rows {
		fp, err := r.KeyFingerprint(now, i)
		if err != nil {
			return err
		}
		at[fp] = i
	}
	var gone []int
	for _, u := range ch.Unchanged {
		fp, err := r.FingerprintOf(u.Keys)
		if err != nil {
			return err
		}
		i, ok := at[fp]
		if !ok {
			gone = append(gone, u.Row)
			continue
		}
		for _, j := range u.Columns {
			ch.Batch.Rows[u.Row][j] = now.Rows[i][j]
		}
	}
	ch.Drop(gone)
	return nil
}
