package runner

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// A pipeline's checkpoint is only meaningful for the stream it was taken on. The stream is
// defined by where rows come from and go to, and by the order they are read in: the source
// connection, the cursor column, the key columns, the target and its connection. Change any
// of them and the old checkpoint would silently skip history in the new table or index, so
// the claim starts from an empty checkpoint instead. The reader query is not part of it: a
// changed WHERE clause or an added column keeps the checkpoint (README: backfill after a query
// change), as does anything about how a run goes (batch size, retries, schedule, pause).

// streamFingerprint returns the fingerprint of a spec's stream.
func streamFingerprint(spec *etlv1.ETLPipelineSpec) string {
	// A CDC stream is also its table; empty, the fields leave other modes' fingerprints as
	// they were.
	var mode etlv1.Mode
	var table string
	if spec.Mode == etlv1.ModeCDC {
		mode, table = spec.Mode, spec.Source.Table
	}
	return fingerprint(struct {
		Source, Cursor   string
		Keys             []string
		Target, SinkConn string
		SinkKey          []string
		Mode             etlv1.Mode `json:",omitempty"`
		Table            string     `json:",omitempty"`
	}{spec.Source.Connection, spec.Source.Cursor.Column, spec.Source.Cursor.KeyColumns,
		spec.Target.Name, spec.Target.Connection, spec.SinkKey(), mode, table})
}

// fullFingerprint returns the fingerprint of a Full run's output: the stream, the reader and
// the transforms. A paused Full run resumes from its checkpoint only while it is unchanged:
// rows written before the pause must be the rows the rest of the run would have written.
func fullFingerprint(spec *etlv1.ETLPipelineSpec) string {
	// The soft-delete marker and Mirror change what the rows written so far mean; empty, they
	// leave the fingerprint of an older spec as it was.
	var marker string
	if spec.Target.DeleteWhen != nil {
		marker = spec.Target.DeleteWhen.Column
	}
	sync := spec.Target.FullSync
	if sync == etlv1.FullSyncUpsert {
		sync = ""
	}
	return fingerprint(struct {
		Stream     string
		Query      string
		Tasks      []etlv1.Task
		Action     etlv1.ElasticsearchAction
		DeleteWhen string         `json:",omitempty"`
		FullSync   etlv1.FullSync `json:",omitempty"`
	}{streamFingerprint(spec), spec.ReaderSQL(), spec.Tasks, spec.Target.Action, marker, sync})
}

func fingerprint(v any) string {
	// Strings and slices of strings always marshal: the error cannot happen.
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
