package state

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Reject is a reader row that a run did not write: a transform raised for it, or the sink
// refused what it holds.
// Its JSON form is what rejectsSQL's jsonb_to_recordset reads.
type Reject struct {
	// Key are the row's values of the reader's key columns, in Postgres' text form.
	Key []string `json:"key"`
	// Cursor is the row's cursor value (nil in Full mode, or for a NULL).
	Cursor *string `json:"cursor"`
	// Stage is StageTransform or StageSink; Task names the python task or the target.
	Stage string `json:"stage"`
	Task  string `json:"task,omitempty"`
	// Class is what refused the row: a SQLSTATE, an Elasticsearch error type, a Python
	// exception type. Message says why, without the row's values (scrubbed by the caller).
	Class   string `json:"class"`
	Message string `json:"message"`
	// Row is the reader row as a JSON object.
	Row json.RawMessage `json:"row,omitempty"`
}

// Stages of a reject.
const (
	StageTransform = "transform"
	StageSink      = "sink"
)

// Rejects is what a committed batch changes in etl_rejects.
type Rejects struct {
	// KeyColumns are the reader's key columns; CursorColumn its cursor ("" in Full mode).
	KeyColumns   []string
	CursorColumn string
	// Added are the rows the batch rejected; Resolved the keys it wrote (or found gone)
	// whose earlier rejects are resolved. A key is in at most one of them.
	Added    []Reject
	Resolved [][]string
}

// Empty reports whether r changes nothing.
func (r *Rejects) Empty() bool { return r == nil || len(r.Added) == 0 && len(r.Resolved) == 0 }

// rejectsSQL removes the resolved keys' rejects, upserts the new ones (a key refused again
// replaces its row and counts the attempt) and adds them to the run's counter. The two
// modifications touch disjoint keys, as one statement must.
const rejectsSQL = `
WITH resolved AS (
	DELETE FROM etl.etl_rejects r
	WHERE r.namespace = $1 AND r.name = $2
	  AND r.key IN (SELECT k FROM jsonb_array_elements($4::jsonb) AS k)
	RETURNING 1),
added AS (
	INSERT INTO etl.etl_rejects AS r (namespace, name, pipeline_uid, run_id, key_columns, key,
		cursor_column, cursor_value, stage, task, error_class, message, "row")
	SELECT $1, $2, $3, $5, $6::text[], x.key, $7, x.cursor, x.stage, x.task, x.class, x.message, x."row"
	FROM jsonb_to_recordset($8::jsonb) AS x(key jsonb, cursor text, stage text, task text, class text,
		message text, "row" jsonb)
	ON CONFLICT (namespace, name, key) DO UPDATE SET
		pipeline_uid = EXCLUDED.pipeline_uid, run_id = EXCLUDED.run_id,
		key_columns = EXCLUDED.key_columns, cursor_column = EXCLUDED.cursor_column,
		cursor_value = EXCLUDED.cursor_value, stage = EXCLUDED.stage, task = EXCLUDED.task,
		error_class = EXCLUDED.error_class, message = EXCLUDED.message, "row" = EXCLUDED."row",
		rejected_at = now(), attempts = r.attempts + 1
	RETURNING 1)
UPDATE etl.etl_state SET rows_rejected = rows_rejected + $9
WHERE namespace = $1 AND name = $2`

// RejectsStatement returns what r changes in etl_rejects as one statement of the batch's
// checkpoint transaction (after the checkpoint's, which fences it), or nil when r changes
// nothing. Postgres runs a statement's data-modifying WITH queries whether or not it reads
// them.
func (s *Store) RejectsStatement(runID string, r *Rejects) (*Statement, error) {
	if r.Empty() {
		return nil, nil
	}
	resolved := r.Resolved
	if resolved == nil {
		resolved = [][]string{}
	}
	res, err := json.Marshal(resolved)
	if err != nil {
		return nil, fmt.Errorf("rejects of pipeline %s: %w", s.p, err)
	}
	recs := r.Added
	if recs == nil {
		recs = []Reject{}
	}
	added, err := json.Marshal(recs)
	if err != nil {
		return nil, fmt.Errorf("rejects of pipeline %s: %w", s.p, err)
	}
	var uid, cursor []byte
	if s.p.UID != "" {
		uid = []byte(s.p.UID)
	}
	if r.CursorColumn != "" {
		cursor = []byte(r.CursorColumn)
	}
	return &Statement{SQL: rejectsSQL, Params: [][]byte{
		[]byte(s.p.Namespace), []byte(s.p.Name), uid, res, []byte(runID),
		[]byte(arrayLiteral(r.KeyColumns)), cursor, added,
		[]byte(strconv.Itoa(len(r.Added))),
	}}, nil
}

// UnresolvedRejects counts the pipeline's rows in etl_rejects.
func (s *Store) UnresolvedRejects(ctx context.Context) (int64, error) {
	var n int64
	if err := s.conn.QueryRow(ctx, `SELECT count(*) FROM etl.etl_rejects WHERE namespace = $1 AND name = $2`,
		s.p.Namespace, s.p.Name).Scan(&n); err != nil {
		return 0, fmt.Errorf("count rejects of pipeline %s: %w", s.p, err)
	}
	return n, nil
}

// RejectedKeys returns the keys of the pipeline's rejects whose key columns are keyColumns,
// after the key after (nil: from the first) in the key's order, at most limit of them.
func (s *Store) RejectedKeys(ctx context.Context, keyColumns []string, after []string, limit int) ([][]string, error) {
	var afterJSON []byte
	if after != nil {
		var err error
		if afterJSON, err = json.Marshal(after); err != nil {
			return nil, err
		}
	}
	rows, err := s.conn.Query(ctx, `
		SELECT key FROM etl.etl_rejects
		WHERE namespace = $1 AND name = $2 AND key_columns = $3::text[] AND ($4::jsonb IS NULL OR key > $4::jsonb)
		ORDER BY key LIMIT $5`, s.p.Namespace, s.p.Name, keyColumns, afterJSON, limit)
	if err != nil {
		return nil, fmt.Errorf("read rejected keys of pipeline %s: %w", s.p, err)
	}
	defer rows.Close()
	var keys [][]string
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, fmt.Errorf("read rejected keys of pipeline %s: %w", s.p, err)
		}
		var k []string
		if err := json.Unmarshal(raw, &k); err != nil {
			return nil, fmt.Errorf("read rejected keys of pipeline %s: %w", s.p, err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read rejected keys of pipeline %s: %w", s.p, err)
	}
	return keys, nil
}

// RecentReject is a row of etl_rejects as RecentRejects reads it.
type RecentReject struct {
	KeyColumns, Key              []string
	Stage, Class, Message, RunID string
	At                           time.Time
	Attempts                     int32
}

// RecentRejects returns the pipeline's newest rejects, at most limit of them.
func (s *Store) RecentRejects(ctx context.Context, limit int) ([]RecentReject, error) {
	rows, err := s.conn.Query(ctx, `
		SELECT key_columns, key, stage, error_class, message, run_id, rejected_at, attempts
		FROM etl.etl_rejects WHERE namespace = $1 AND name = $2
		ORDER BY rejected_at DESC, key LIMIT $3`, s.p.Namespace, s.p.Name, limit)
	if err != nil {
		return nil, fmt.Errorf("read rejects of pipeline %s: %w", s.p, err)
	}
	defer rows.Close()
	var out []RecentReject
	for rows.Next() {
		var r RecentReject
		var key []byte
		if err := rows.Scan(&r.KeyColumns, &key, &r.Stage, &r.Class, &r.Message, &r.RunID, &r.At, &r.Attempts); err != nil {
			return nil, fmt.Errorf("read rejects of pipeline %s: %w", s.p, err)
		}
		if err := json.Unmarshal(key, &r.Key); err != nil {
			return nil, fmt.Errorf("read rejects of pipeline %s: %w", s.p, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read rejects of pipeline %s: %w", s.p, err)
	}
	return out, nil
}
