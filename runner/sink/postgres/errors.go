package postgres

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-dev/sluice/runner/failure"
)

// encodeError describes a value of a batch that cannot be encoded as the column's type. pgx's
// own error quotes the value (`unable to encode "abc" into binary format for int8 (OID 20):
// strconv.ParseInt: parsing "abc": invalid syntax`), and the value is row data: what leaves
// the sink names the row, the column, the Go type of the value and the SQL type instead.
func (s *Sink) encodeError(m *pgtype.Map, row int, column string, oid uint32, v any) error {
	typ := fmt.Sprintf("type OID %d", oid)
	if t, ok := m.TypeForOID(oid); ok {
		typ = t.Name
	}
	return failure.Business(&rowValueError{row: row, err: fmt.Errorf("write to %s: row %d, column %q: a Go %T value cannot be encoded as %s",
		s.name(), row, column, v, typ)})
}

// rowValueError is a value of one row that the sink cannot encode: a row error
// (Sink.RowError) found before anything is sent. row counts from 1.
type rowValueError struct {
	row int
	err error
}

func (e *rowValueError) Error() string { return e.err.Error() }
func (e *rowValueError) Unwrap() error { return e.err }
