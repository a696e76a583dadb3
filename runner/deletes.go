package runner

import (
	"fmt"
	"strings"

	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
)

// Soft deletes (target.deleteWhen): the reader's rows whose marker column is set become
// deletes of their key. The flags are set on the reader's page, before the transforms, which
// carry them to the rows they make (a python task sees the marker and computes the sink key
// as for any row); the marker column itself never reaches the sink. The sinks delete the
// flagged rows' keys in the batch's own write (runner/sink).

// checkDeleteWhen checks, before anything is read, that the reader returns the marker column.
func checkDeleteWhen(column string, reader []batch.Column) error {
	if column == "" {
		return nil
	}
	b := batch.Batch{Columns: reader}
	if b.Index(column) < 0 {
		return failure.Business(fmt.Errorf("target.deleteWhen.column %q is not a column of the reader's output (columns: %s)",
			column, strings.Join(b.Names(), ", ")))
	}
	return nil
}

// markDeleted flags the page's soft-deleted rows.
func markDeleted(column string, b *batch.Batch) {
	if column == "" || b.Len() == 0 {
		return
	}
	if i := b.Index(column); i >= 0 {
		b.MarkDeleted(i)
	}
}

// dropMarker removes the marker column from a batch on its way to the sink.
func dropMarker(column string, b *batch.Batch) {
	if column == "" {
		return
	}
	if i := b.Index(column); i >= 0 {
		b.DropColumn(i)
	}
}
