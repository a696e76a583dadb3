package elasticsearch

import (
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
)

func TestItemFailureStatus(t *testing.T) {
	for _, tc := range []struct {
		name   string
		it     item
		status int
		ok     bool
	}{
		{"an applied item", item{answered: true, status: 201}, 0, false},
		{"an unanswered item", item{}, 0, false},
		{"a rejected item", item{answered: true, failed: true, status: 400, errType: "document_parsing_exception"}, 400, true},
		{"an overloaded item", item{answered: true, failed: true, status: 429}, 429, true},
		{"a version conflict", item{answered: true, failed: true, status: 409}, 409, true},
		{"a delete of a document that is not there", item{del: true, answered: true, failed: true, status: 404}, 0, false},
		{"an item of a request refused whole", item{answered: true, failed: true,
			err: fmt.Errorf("flush: %w", newHTTPError(429, []byte(`{"status":429}`)))}, 429, true},
		{"an item of a request that got no answer", item{answered: true, failed: true, err: errors.New("connection reset")}, 0, false},
	} {
		status, ok := tc.it.failureStatus()
		if status != tc.status || ok != tc.ok {
			t.Errorf("%s: failureStatus = %d, %v; want %d, %v", tc.name, status, ok, tc.status, tc.ok)
		}
	}
}

// itemFailures records what a sink reports to OnItemFailures.
type itemFailures struct {
	mu sync.Mutex
	by map[int]int
}

func (f *itemFailures) hook(status, count int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.by == nil {
		f.by = map[int]int{}
	}
	f.by[status] += count
}

// TestItemFailuresAreReported: rejected requests and items reach OnItemFailures by status,
// resent ones each time they fail, and a batch that succeeds reports nothing.
func TestItemFailuresAreReported(t *testing.T) {
	t.Run("overload", func(t *testing.T) {
		ix := newIndex(t)
		ix.create(t, "")
		// One request refused whole, then one whose every other item is refused.
		proxy := newFaultProxy(t, 1, 1)
		var got itemFailures
		s := testSink(t, proxy.srv.URL, ix.name, []string{"id"}, etlv1.ActionUpdate, Options{Workers: 1, OnItemFailures: got.hook})
		var rows [][]any
		for id := range int64(10) {
			rows = append(rows, row(id+1, "a", id))
		}
		if n, err := write(t, s, itemsBatch(rows...)); err != nil || n != 10 {
			t.Fatalf("Write = %d, %v", n, err)
		}
		want := map[int]int{429: 10 + proxy.itemsRejected}
		if proxy.itemsRejected == 0 || !maps.Equal(got.by, want) {
			t.Fatalf("reported %v, want %v (%d items rejected one by one)", got.by, want, proxy.itemsRejected)
		}
		if n, err := write(t, s, itemsBatch(row(11, "b", 11))); err != nil || n != 1 {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if !maps.Equal(got.by, want) {
			t.Fatalf("a batch without failures reported some: %v, want %v", got.by, want)
		}
	})
	t.Run("mapping conflict", func(t *testing.T) {
		ix := newIndex(t)
		ix.create(t, `{"properties":{"n":{"type":"long"}}}`)
		var got itemFailures
		s := testSink(t, ix.url, ix.name, []string{"id"}, etlv1.ActionUpdate, Options{OnItemFailures: got.hook})
		b := &batch.Batch{
			Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "n", Type: pgtype.TextOID}},
			Rows:    [][]any{{int64(1), "10"}, {int64(2), "not a number"}, {int64(3), "30"}, {int64(4), "x"}},
		}
		if _, err := write(t, s, b); err == nil {
			t.Fatal("Write succeeded, want the mapping conflict")
		}
		if want := map[int]int{400: 2}; !maps.Equal(got.by, want) {
			t.Fatalf("reported %v, want %v", got.by, want)
		}
	})
}
