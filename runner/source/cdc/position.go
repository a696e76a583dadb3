package cdc

import (
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// End is where a bounded run's stream ends: the source's WAL insert position when the run
// started, with the server's WAL page size to tell whether a stream reached it.
type End struct {
	LSN       pglogrepl.LSN
	BlockSize uint64
}

// CurrentEnd reads the source's WAL insert position. Not the write position: under
// synchronous_commit=off a transaction's COMMIT returns before its WAL is written, and a run
// started after it must still apply it (the stream gets it once the WAL writer flushed it).
func CurrentEnd(ctx context.Context, conn *pgx.Conn) (End, error) {
	var lsn string
	var block int64
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::bigint`).
		Scan(&lsn, &block); err != nil {
		return End{}, fmt.Errorf("cdc: read the source's WAL position: %w", err)
	}
	pos, err := pglogrepl.ParseLSN(lsn)
	if err != nil {
		return End{}, fmt.Errorf("cdc: the source's WAL position %q: %w", lsn, err)
	}
	return End{LSN: pos, BlockSize: uint64(block)}, nil
}

// maxPageHeader is the size of the long header that starts a WAL segment's first page (the
// other pages' headers are 24 bytes).
const maxPageHeader = 40

// Reached reports whether a stream that has received every transaction before pos (the end
// of a record) has reached e. An insert position taken right after a page's start points
// past the page's header, where no record ends: a stream whose last record ends at the page
// boundary has reached it. (A record is at least 24 bytes, so no other record ends between
// the boundary and such a position.) Pure.
func (e End) Reached(pos pglogrepl.LSN) bool {
	if pos >= e.LSN {
		return true
	}
	if e.BlockSize == 0 {
		return false
	}
	off := uint64(e.LSN) % e.BlockSize
	return off > 0 && off <= maxPageHeader && uint64(pos) >= uint64(e.LSN)-off
}
