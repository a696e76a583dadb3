package elasticsearch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/sink"
)

var _ sink.Rejecter = (*Sink)(nil)

// refusedError is a write that failed on documents Elasticsearch refused; rows says every
// one of them was refused for what it holds (documentRefusal).
type refusedError struct {
	error
	rows bool
}

func (e *refusedError) Unwrap() error { return e.error }

// RowError implements sink.Rejecter: the write failed only on documents refused for what
// they hold.
func (s *Sink) RowError(err error) bool {
	var re *refusedError
	return errors.As(err, &re) && re.rows
}

// WriteRejecting implements sink.Rejecter: the documents Elasticsearch refuses for what they
// hold are returned, the others are written. commit runs once the bulk requests are done;
// a document cannot be taken back, so an error of commit leaves the written ones, which the
// batch's replay writes alike.
func (s *Sink) WriteRejecting(ctx context.Context, b *batch.Batch, commit func([]sink.Refused) ([]sink.Statement, error)) (int64, []sink.Refused, error) {
	if !s.prepared {
		return 0, nil, fmt.Errorf("write to %s: sink used before Prepare", s.name())
	}
	var n int64
	var items []*item
	if b.Len() > 0 {
		sh, err := s.shapeFor(b)
		if err != nil {
			return 0, nil, err
		}
		if err := s.encode(sh, b); err != nil {
			return 0, nil, err
		}
		if n, items, err = s.sendRefusing(ctx, true); err != nil {
			return 0, nil, err
		}
	}
	refused := make([]sink.Refused, len(items))
	for i, it := range items {
		refused[i] = sink.Refused{Row: it.row, Class: it.errType, Message: fmt.Sprintf("index %s, _id %q: %s", s.target.Index, it.id, it.describe())}
	}
	if _, err := commit(refused); err != nil {
		return 0, refused, err
	}
	return n, refused, nil
}

// AnswersPerRow implements sink.Rejecter: every document of a bulk request gets its own answer.
func (s *Sink) AnswersPerRow() bool { return true }

// allRefusals reports whether every item was refused for what its document holds.
func allRefusals(items []*item) bool {
	for _, it := range items {
		if !documentRefusal(it.err, it.status, it.errType) {
			return false
		}
	}
	return len(items) > 0
}

// documentRefusal reports whether a failed bulk item was refused for its document alone: an
// item answer (not a failed request) with status 400 (a mapping or parsing error, a strict
// mapping's unknown field, an immense term) or 413 (too large), whose type is not about the
// index or the cluster. 429 and 5xx are transient, 409 outlived its retries, 403 and 404 are
// about the index; none of those is a row's fault.
func documentRefusal(err error, status int, errType string) bool {
	if err != nil || status != http.StatusBadRequest && status != http.StatusRequestEntityTooLarge {
		return false
	}
	switch strings.TrimPrefix(errType, "elasticsearch.") {
	case "index_closed_exception", "index_not_found_exception", "cluster_block_exception",
		"invalid_index_name_exception", "action_request_validation_exception", "illegal_state_exception":
		return false
	}
	return true
}
