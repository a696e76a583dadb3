// Package failure sorts the runner's errors into the classes that decide what happens next:
// an infrastructure error is retried from the last checkpoint, a business error fails the run
// at once, and a fenced runner stops without writing.
//
// Sinks and transforms that know better than the generic rules (an Elasticsearch 429 is
// infrastructure, a mapping rejection is business) wrap their errors with Infra or Business;
// everything else is classified here from pgx, network and SQLSTATE information.
package failure

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// ErrFenced means another runner owns the pipeline now: this one must stop without writing.
var ErrFenced = errors.New("fenced: another runner owns the pipeline")

// FencedSQLState is the SQLSTATE the state database raises when a checkpoint is written with
// a stale epoch (etl.advance). Raising it, rather than updating no row, aborts the transaction
// that carries the batch, so the batch's rows roll back with the refused checkpoint.
const FencedSQLState = "SLF01"

// CheckpointMovedSQLState is the SQLSTATE the state database raises when a checkpoint write
// does not follow the checkpoint its batch was read after. Only a failed earlier batch of the
// same runner, or another writer, causes it: either way this runner must not go on.
const CheckpointMovedSQLState = "SLF02"

// classified carries an explicit class chosen by the code that saw the error.
type classified struct {
	class etlv1.ErrorClass
	err   error
}

// Error returns the message of the marked error.
func (c *classified) Error() string { return c.err.Error() }

// Unwrap returns the marked error.
func (c *classified) Unwrap() error { return c.err }

// Infra marks err as an infrastructure error: the batch is retried from the last checkpoint.
func Infra(err error) error {
	if err == nil {
		return nil
	}
	return &classified{class: etlv1.ErrorInfra, err: err}
}

// Business marks err as a business error: retrying cannot fix it, the run fails at once.
func Business(err error) error {
	if err == nil {
		return nil
	}
	return &classified{class: etlv1.ErrorBusiness, err: err}
}

// IsFenced reports whether err means this runner lost its pipeline to another one.
func IsFenced(err error) bool {
	if errors.Is(err, ErrFenced) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == FencedSQLState || pgErr.Code == CheckpointMovedSQLState)
}

// Classify returns the class of err: ErrorInfra when a retry may succeed, ErrorBusiness when it
// cannot. The outermost explicit mark wins, so a sink can override the generic rules.
// Unknown errors are business errors: a wasted retry cycle is cheaper to diagnose than a run
// that keeps retrying a bug.
func Classify(err error) etlv1.ErrorClass {
	if err == nil {
		return ""
	}
	var c *classified
	if errors.As(err, &c) {
		return c.class
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return ClassifySQLState(pgErr.Code)
	}
	if infraTransport(err) {
		return etlv1.ErrorInfra
	}
	return etlv1.ErrorBusiness
}

// ClassifySQLState maps a Postgres SQLSTATE to an error class (Postgres' Appendix A). What
// passes with time is infrastructure:
//   - 08 connection exceptions; 40 transaction rollbacks (serialization failure, deadlock);
//     53 insufficient resources (disk full, out of memory, too many connections); 57 operator
//     intervention (a terminated backend, a shutdown, a statement_timeout's query_canceled);
//     58 system errors (I/O);
//   - 55P03 lock_not_available (lock_timeout), 55006 object_in_use;
//   - 25006 read_only_sql_transaction: what a primary that failed over to a standby answers
//     to a write (the reader's own read-only transaction is told apart where it runs);
//   - 25P03 idle_in_transaction_session_timeout, 25P04 transaction_timeout: the session ended.
//
// Everything else (syntax, undefined objects, data exceptions, constraint violations,
// privileges, authentication, a database that does not exist) needs a change.
func ClassifySQLState(code string) etlv1.ErrorClass {
	switch code {
	case "55P03", "55006", "25006", "25P03", "25P04":
		return etlv1.ErrorInfra
	}
	if len(code) < 2 {
		return etlv1.ErrorBusiness
	}
	switch code[:2] {
	case "08", "40", "53", "57", "58":
		return etlv1.ErrorInfra
	}
	return etlv1.ErrorBusiness
}

// infraTransport recognizes errors of the path to the server rather than of the work:
// a dropped or refused connection, a timeout, an EOF in the middle of a message.
func infraTransport(err error) bool {
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ETIMEDOUT),
		errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH):
		return true
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		// A refused or unreachable server; an authentication failure carries a PgError and
		// was classified before we got here.
		return true
	}
	return false
}
