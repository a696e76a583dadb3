package runner

import (
	"context"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/metrics"
	"github.com/sluice-dev/sluice/runner/transform"
)

// replayPass is a replay run's progress through the pipeline's rejects.
type replayPass struct {
	// done is set once every reject was read again (at once for a run that is no replay).
	done bool
	// after is the last key replayed: a key rejected again stays behind it.
	after []string
}

// replayPage reads the next page of the pipeline's rejected keys from the source through the
// current reader query and transforms, and writes them: a row that passes now is written and
// its reject removed, a row refused again replaces its reject, and a key whose row is gone
// from the source is resolved. The checkpoint does not move. A run requested with the
// replay-rejects-requested-at annotation does this before it reads as usual.
func (e *executor) replayPage(ctx context.Context, s *session, stages []transform.Stage) error {
	if e.trigger != etlv1.TriggerReplayRejects {
		e.replay.done = true
		return nil
	}
	keys, err := s.store.RejectedKeys(ctx, e.pl.keys, e.replay.after, e.pl.batchSize)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		e.replay.done = true
		e.log.Info("rejects replayed", "replayed", e.rejectsReplayed, "rejectedAgain", e.rowsRejected)
		return nil
	}
	b, err := s.reader.ReadKeys(ctx, keys)
	if err != nil {
		return err
	}
	found := make(map[string]bool, b.Len())
	for i := range b.Len() {
		fp, err := s.reader.KeyFingerprint(b, i)
		if err != nil {
			return err
		}
		found[fp] = true
	}
	var gone [][]string
	var goneFP []string
	for _, k := range keys {
		fp, err := s.reader.FingerprintOf(k)
		if err != nil {
			return err
		}
		if !found[fp] {
			gone, goneFP = append(gone, k), append(goneFP, fp)
		}
	}
	markDeleted(e.pl.deleteWhen, b)
	var obs metrics.Batch
	out, rejects, err := e.transformRejecting(ctx, s, stages, b, &obs)
	if err != nil {
		return err
	}
	dropMarker(e.pl.deleteWhen, out)
	if err := checkKeys(out, e.pl.sinkKey); err != nil {
		return err
	}
	sb := e.sent(b, out, nil, rejects, obs)
	sb.adv.Batches = 0
	sb.gone, sb.goneFP = gone, goneFP
	br, err := e.writeRefusing(ctx, s, &sb, nil)
	if err != nil {
		return err
	}
	e.rejectsReplayed += int64(b.Len() - len(br.added))
	e.replay.after = keys[len(keys)-1]
	return nil
}
