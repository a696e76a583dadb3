package failure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func pgErr(code string) error { return &pgconn.PgError{Severity: "ERROR", Code: code, Message: "m"} }

func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want etlv1.ErrorClass
	}{
		{"nil", nil, ""},
		{"connection failure 08006", pgErr("08006"), etlv1.ErrorInfra},
		{"serialization failure 40001", pgErr("40001"), etlv1.ErrorInfra},
		{"deadlock 40P01", pgErr("40P01"), etlv1.ErrorInfra},
		{"too many connections 53300", pgErr("53300"), etlv1.ErrorInfra},
		{"terminated backend 57P01", fmt.Errorf("write: %w", pgErr("57P01")), etlv1.ErrorInfra},
		{"cannot connect now 57P03", pgErr("57P03"), etlv1.ErrorInfra},
		{"io error 58030", pgErr("58030"), etlv1.ErrorInfra},
		{"lock timeout 55P03", pgErr("55P03"), etlv1.ErrorInfra},
		{"object in use 55006", pgErr("55006"), etlv1.ErrorInfra},
		{"statement timeout 57014", pgErr("57014"), etlv1.ErrorInfra},
		{"failover to a standby 25006", pgErr("25006"), etlv1.ErrorInfra},
		{"idle in transaction timeout 25P03", pgErr("25P03"), etlv1.ErrorInfra},
		{"transaction timeout 25P04", pgErr("25P04"), etlv1.ErrorInfra},
		{"disk full 53100", pgErr("53100"), etlv1.ErrorInfra},
		{"out of memory 53200", pgErr("53200"), etlv1.ErrorInfra},
		{"admin shutdown 57P01", pgErr("57P01"), etlv1.ErrorInfra},
		{"crash shutdown 57P02", pgErr("57P02"), etlv1.ErrorInfra},
		{"insufficient privilege 42501", pgErr("42501"), etlv1.ErrorBusiness},
		{"unique violation 23505", pgErr("23505"), etlv1.ErrorBusiness},
		{"check violation 23514", pgErr("23514"), etlv1.ErrorBusiness},
		{"invalid text representation 22P02", pgErr("22P02"), etlv1.ErrorBusiness},
		{"division by zero 22012", pgErr("22012"), etlv1.ErrorBusiness},
		{"feature not supported 0A000", pgErr("0A000"), etlv1.ErrorBusiness},
		{"in failed transaction 25P02", pgErr("25P02"), etlv1.ErrorBusiness},
		{"internal error XX000", pgErr("XX000"), etlv1.ErrorBusiness},
		{"syntax error 42601", pgErr("42601"), etlv1.ErrorBusiness},
		{"undefined column 42703", pgErr("42703"), etlv1.ErrorBusiness},
		{"undefined table 42P01", pgErr("42P01"), etlv1.ErrorBusiness},
		{"numeric overflow 22003", pgErr("22003"), etlv1.ErrorBusiness},
		{"not null violation 23502", pgErr("23502"), etlv1.ErrorBusiness},
		{"connect error without a server answer", &pgconn.ConnectError{Config: &pgconn.Config{}}, etlv1.ErrorInfra},
		{"bad password 28P01", pgErr("28P01"), etlv1.ErrorBusiness},
		{"unknown database 3D000", pgErr("3D000"), etlv1.ErrorBusiness},
		{"io.EOF", fmt.Errorf("read: %w", io.EOF), etlv1.ErrorInfra},
		{"unexpected EOF", io.ErrUnexpectedEOF, etlv1.ErrorInfra},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, etlv1.ErrorInfra},
		{"connection refused", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), etlv1.ErrorInfra},
		{"closed connection", fmt.Errorf("query: %w", pgconn.ErrConnClosed), etlv1.ErrorInfra},
		{"deadline", context.DeadlineExceeded, etlv1.ErrorInfra},
		{"unknown error", errors.New("something odd"), etlv1.ErrorBusiness},
		{"explicit business wins over an infra cause", Business(pgErr("08006")), etlv1.ErrorBusiness},
		{"explicit infra wins over a business cause", fmt.Errorf("bulk: %w", Infra(errors.New("HTTP 429"))), etlv1.ErrorInfra},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.err); got != tc.want {
				t.Fatalf("Classify(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}

func TestFenced(t *testing.T) {
	err := fmt.Errorf("commit checkpoint: %w", ErrFenced)
	if !IsFenced(err) || IsFenced(errors.New("x")) {
		t.Fatal("IsFenced does not see through wrapping")
	}
	if Infra(nil) != nil || Business(nil) != nil {
		t.Fatal("marking nil must stay nil")
	}
}
