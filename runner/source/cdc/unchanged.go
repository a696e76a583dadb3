package cdc

// Unchanged is a row of a batch whose update left large values unchanged: Postgres keeps a
// value of more than about 2 kB out of line (TOASTed), and under the table's default replica
// identity the log does not carry such a value when an update leaves it as it was.
type Unchanged struct {
	// Row is the row's index in the batch; Keys its key values as the log gave them
	// (Postgres' text form), in the order of the key columns; Columns the batch columns the
	// log did not carry.
	Row     int
	Keys    []string
	Columns []int
}

// Drop removes the rows at the given ascending indexes from the batch, and forgets what
// Unchanged said of the batch.
func (ch *Changes) Drop(rows []int) {
	ch.Unchanged = nil
	if len(rows) == 0 {
		return
	}
	b := ch.Batch
	keep, next := 0, 0
	for i := range b.Rows {
		if next < len(rows) && rows[next] == i {
			next++
			continue
		}
		b.Rows[keep] = b.Rows[i]
		if b.Deleted != nil {
			b.Deleted[keep] = b.Deleted[i]
		}
		keep++
	}
	b.Rows = b.Rows[:keep]
	if b.Deleted != nil {
		b.Deleted = b.Deleted[:keep]
	}
}
