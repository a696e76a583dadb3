package smoke

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esutil"

	"github.com/sluice-dev/sluice/test/testenv"
)

func TestElasticsearchIsGenuineAndRoundTripsABulk(t *testing.T) {
	url := testenv.ElasticsearchURL(t)
	// The client refuses a server that does not identify itself as Elasticsearch
	// (X-Elastic-Product), so a successful Info proves the node is the real thing.
	es, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: []string{url}})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	res, err := es.Info(es.Info.WithContext(ctx))
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	var info struct {
		Version struct {
			Number string `json:"number"`
		} `json:"version"`
		Tagline string `json:"tagline"`
	}
	decodeBody(t, res.Body, &info)
	_ = res.Body.Close()
	if !strings.HasPrefix(info.Version.Number, "8.") {
		t.Fatalf("Elasticsearch version %q, want 8.x", info.Version.Number)
	}
	t.Logf("real Elasticsearch %s (%s)", info.Version.Number, info.Tagline)

	index := testenv.UniqueName("smoke-")
	t.Cleanup(func() { _, _ = es.Indices.Delete([]string{index}) })
	var failed atomic.Int64
	bi, err := esutil.NewBulkIndexer(esutil.BulkIndexerConfig{Client: es, Index: index, Refresh: "wait_for"})
	if err != nil {
		t.Fatalf("bulk indexer: %v", err)
	}
	for _, doc := range []struct{ id, body string }{
		{"1", `{"doc":{"name":"a","n":1},"doc_as_upsert":true}`},
		{"1", `{"doc":{"n":2},"doc_as_upsert":true}`},
	} {
		err := bi.Add(ctx, esutil.BulkIndexerItem{
			Action: "update", DocumentID: doc.id, Body: strings.NewReader(doc.body),
			OnFailure: func(_ context.Context, _ esutil.BulkIndexerItem, r esutil.BulkIndexerResponseItem, err error) {
				failed.Add(1)
				t.Errorf("bulk item failed: %v %s: %s", err, r.Error.Type, r.Error.Reason)
			},
		})
		if err != nil {
			t.Fatalf("add: %v", err)
		}
		// Flush between the two updates so the second merges into the first.
		if err := bi.Flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
	}
	if err := bi.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if st := bi.Stats(); st.NumFailed != 0 || failed.Load() != 0 || st.NumUpdated+st.NumCreated != 2 {
		t.Fatalf("bulk stats %+v", st)
	}

	got, err := es.Get(index, "1", es.Get.WithContext(ctx))
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	defer func() { _ = got.Body.Close() }()
	var doc struct {
		Source map[string]any `json:"_source"`
	}
	decodeBody(t, got.Body, &doc)
	if doc.Source["name"] != "a" || doc.Source["n"] != float64(2) {
		t.Errorf("document after two upserts = %v, want name=a n=2", doc.Source)
	}
}

func decodeBody(t *testing.T, body interface{ Read([]byte) (int, error) }, v any) {
	t.Helper()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(body); err != nil {
		t.Fatalf("read body: %v", err)
	}
	if err := json.Unmarshal(buf.Bytes(), v); err != nil {
		t.Fatalf("decode %s: %v", buf.String(), err)
	}
}
