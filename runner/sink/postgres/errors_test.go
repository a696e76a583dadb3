package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
)

func TestAValueThatCannotBeEncodedIsNotQuoted(t *testing.T) {
	conn := connect(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `CREATE TABLE analytics.t (id bigint PRIMARY KEY, n bigint)`); err != nil {
		t.Fatal(err)
	}
	s := New(conn, "analytics", "t", []string{"id"})
	if err := s.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	// A transform that promised a bigint and returned text.
	b := &batch.Batch{Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "n", Type: pgtype.Int8OID}},
		Rows: [][]any{{int64(1), int64(1)}, {int64(2), "alice@example.com"}}}
	_, err := s.Write(ctx, b)
	if err == nil || failure.Classify(err) != etlv1.ErrorBusiness {
		t.Fatalf("Write = %v, want a business error", err)
	}
	if want := `write to analytics.t: row 2, column "n": a Go string value cannot be encoded as int8`; err.Error() != want {
		t.Fatalf("error\n got %v\nwant %s", err, want)
	}
	if strings.Contains(err.Error(), "alice") {
		t.Fatalf("the error quotes the value: %v", err)
	}
}
