// Package cdc is the change-data-capture source: it reads one table's changes from the
// source's write-ahead log through a logical replication slot (pgoutput) and hands them to
// the executor as batches of whole source transactions, in commit order, each with the WAL
// position (LSN) that is its checkpoint. The initial copy of the table is the keyset reader's
// (runner/source), reading from the snapshot the slot exported when it was created.
package cdc

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Names returns the replication slot and the publication of a pipeline's stream. They
// derive from the pipeline's identity (namespace, name, UID) and its stream fingerprint, so
// a re-created pipeline or a changed stream gets slots of its own, and fit Postgres' 63
// bytes of [a-z0-9_]. Pure.
func Names(namespace, name, uid, stream string) (slot, publication string) {
	sum := sha256.Sum256([]byte(strings.Join([]string{namespace, name, uid, stream}, "\x00")))
	n := "sluice_" + hex.EncodeToString(sum[:12])
	return n, n
}

// SplitTable returns the schema and the name of `table` or `schema.table` (schema public).
func SplitTable(table string) (schema, name string) {
	if s, n, ok := strings.Cut(table, "."); ok {
		return s, n
	}
	return "public", table
}
