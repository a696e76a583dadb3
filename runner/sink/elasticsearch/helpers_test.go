package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/test/testenv"
)

// esIndex is a test's index on the real node, deleted at cleanup.
type esIndex struct {
	url, name string
}

func newIndex(t *testing.T) *esIndex {
	t.Helper()
	ix := &esIndex{url: testenv.ElasticsearchURL(t), name: testenv.UniqueName("sluice-test-")}
	t.Cleanup(func() { _, _ = ix.do(context.Background(), http.MethodDelete, "/"+ix.name, "") })
	return ix
}

func (ix *esIndex) do(ctx context.Context, method, path, body string) (int, []byte) {
	req, err := http.NewRequestWithContext(ctx, method, ix.url+path, strings.NewReader(body))
	if err != nil {
		return 0, []byte(err.Error())
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer func() { _ = res.Body.Close() }()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, out
}

func (ix *esIndex) must(t *testing.T, method, path, body string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code, out := ix.do(ctx, method, path, body)
	if code/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, code, out)
	}
	return out
}

// create makes the index with no replica (the test node has one data node) and mappings.
func (ix *esIndex) create(t *testing.T, mappings string) {
	t.Helper()
	body := `{"settings":{"number_of_shards":1,"number_of_replicas":0}`
	if mappings != "" {
		body += `,"mappings":` + mappings
	}
	ix.must(t, http.MethodPut, "/"+ix.name, body+"}")
}

func (ix *esIndex) exists(t *testing.T) bool {
	t.Helper()
	code, out := ix.do(context.Background(), http.MethodHead, "/"+ix.name, "")
	if code != 200 && code != 404 {
		t.Fatalf("HEAD %s: %d %s", ix.name, code, out)
	}
	return code == 200
}

// docs refreshes the index and returns every document's source by _id.
func (ix *esIndex) docs(t *testing.T) map[string]string {
	t.Helper()
	ix.must(t, http.MethodPost, "/"+ix.name+"/_refresh", "")
	out := ix.must(t, http.MethodPost, "/"+ix.name+"/_search", `{"size":10000,"query":{"match_all":{}}}`)
	var res struct {
		Hits struct {
			Total struct{ Value int } `json:"total"`
			Hits  []struct {
				ID     string          `json:"_id"`
				Source json.RawMessage `json:"_source"`
			} `json:"hits"`
		} `json:"hits"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("decode search: %v", err)
	}
	if res.Hits.Total.Value > len(res.Hits.Hits) {
		t.Fatalf("index %s holds %d documents, more than one page", ix.name, res.Hits.Total.Value)
	}
	docs := map[string]string{}
	for _, h := range res.Hits.Hits {
		docs[h.ID] = string(h.Source)
	}
	return docs
}

// version returns a document's _version.
func (ix *esIndex) version(t *testing.T, id string) int64 {
	t.Helper()
	out := ix.must(t, http.MethodGet, "/"+ix.name+"/_doc/"+id, "")
	var doc struct {
		Version int64 `json:"_version"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Version
}

// testSink opens a prepared sink on url (the node, or a proxy in front of it).
func testSink(t *testing.T, url, index string, key []string, action etlv1.ElasticsearchAction, opts Options) *Sink {
	t.Helper()
	if opts.Sleep == nil {
		opts.Sleep = func(context.Context, time.Duration) error { return nil }
	}
	s, err := newSink(Target{Index: index, Key: key, Action: action}, Connection{Name: "test", URLs: []string{url}}, opts)
	if err != nil {
		t.Fatalf("new sink: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Prepare(ctx); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	return s
}

// itemsBatch is a decoded batch of (id bigint, name text, n bigint, doc jsonb) rows.
func itemsBatch(rows ...[]any) *batch.Batch {
	return &batch.Batch{
		Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "name", Type: pgtype.TextOID},
			{Name: "n", Type: pgtype.Int8OID}, {Name: "doc", Type: pgtype.JSONBOID}},
		Rows: rows,
	}
}

func row(id int64, name string, n int64) []any {
	return []any{id, name, n, json.RawMessage(fmt.Sprintf(`{"id": %d, "tags": ["x"]}`, id))}
}

func write(t *testing.T, s *Sink, b *batch.Batch) (int64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return s.Write(ctx, b)
}

// compact normalizes JSON for comparisons.
func compact(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("compact %s: %v", s, err)
	}
	return b.String()
}
