package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/test/testenv"
)

func TestReplayedBatchLeavesTheIndexUnchanged(t *testing.T) {
	for _, action := range []etlv1.ElasticsearchAction{etlv1.ActionUpdate, etlv1.ActionIndex} {
		t.Run(string(action), func(t *testing.T) {
			ix := newIndex(t)
			ix.create(t, "")
			s := testSink(t, ix.url, ix.name, []string{"id"}, action, Options{})
			var rows [][]any
			for i := int64(1); i <= 300; i++ {
				rows = append(rows, row(i, fmt.Sprintf("name %d", i), i*10))
			}
			// Rows 5 and 7 repeat: the last version of each is the one written.
			rows = append(rows, row(5, "five again", 55), row(7, "seven again", 77))
			b := itemsBatch(rows...)
			n, err := write(t, s, b)
			if err != nil || n != 300 {
				t.Fatalf("Write = %d, %v; want 300 documents", n, err)
			}
			first := ix.docs(t)
			// The crash between the bulk and the checkpoint: the executor writes it again.
			if n, err := write(t, s, b); err != nil || n != 300 {
				t.Fatalf("replayed Write = %d, %v", n, err)
			}
			again := ix.docs(t)
			if len(first) != 300 || len(again) != 300 {
				t.Fatalf("index holds %d then %d documents, want 300", len(first), len(again))
			}
			for id, src := range first {
				if again[id] != src {
					t.Fatalf("replay changed document %s: %s -> %s", id, src, again[id])
				}
			}
			// An upsert's source is re-serialized by Elasticsearch; an index keeps the bytes sent.
			want := `{"id":5,"name":"five again","n":55,"doc":{"id":5,"tags":["x"]}}`
			if compact(t, first["5"]) != want {
				t.Fatalf("document 5 = %s, want %s (the last row of its key)", first["5"], want)
			}
			if action == etlv1.ActionUpdate && ix.version(t, "7") != 1 {
				// An update that changes nothing is a no-op: the replay did not even rewrite it.
				t.Fatalf("document 7 has version %d after a replayed update, want 1", ix.version(t, "7"))
			}
		})
	}
}

func TestUpdateMergesAndIndexReplaces(t *testing.T) {
	ix := newIndex(t)
	ix.create(t, "")
	ix.must(t, http.MethodPut, "/"+ix.name+"/_doc/1", `{"id":1,"name":"old","enriched":"kept","doc":{"a":1,"b":2}}`)
	batchOf := func(name string) *batch.Batch {
		return itemsBatch([]any{int64(1), name, int64(1), json.RawMessage(`{"b": 3}`)})
	}
	if _, err := write(t, testSink(t, ix.url, ix.name, []string{"id"}, etlv1.ActionUpdate, Options{}), batchOf("new")); err != nil {
		t.Fatal(err)
	}
	if got, want := ix.docs(t)["1"], `{"id":1,"name":"new","enriched":"kept","doc":{"a":1,"b":3},"n":1}`; got != want {
		t.Fatalf("after Update: %s, want %s (merged: the field the row lacks is kept, objects merge)", got, want)
	}
	if _, err := write(t, testSink(t, ix.url, ix.name, []string{"id"}, etlv1.ActionIndex, Options{}), batchOf("newer")); err != nil {
		t.Fatal(err)
	}
	if got, want := ix.docs(t)["1"], `{"id":1,"name":"newer","n":1,"doc":{"b": 3}}`; got != want {
		t.Fatalf("after Index: %s, want %s (the row replaces the document)", got, want)
	}
}

func TestCompositeKeysMakeOneDocumentPerKey(t *testing.T) {
	ix := newIndex(t)
	ix.create(t, "")
	s := testSink(t, ix.url, ix.name, []string{"region", "id"}, etlv1.ActionUpdate, Options{})
	b := &batch.Batch{
		Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "region", Type: pgtype.TextOID}, {Name: "v", Type: pgtype.TextOID}},
		Rows: [][]any{
			{int64(1), "eu", "a"}, {int64(1), "us", "b"}, {int64(2), "eu", "c"}, {int64(1), `eu",1`, "d"}, {int64(1), "eu", "e"},
		},
	}
	if n, err := write(t, s, b); err != nil || n != 4 {
		t.Fatalf("Write = %d, %v; want 4 documents", n, err)
	}
	got := ix.docs(t)
	want := map[string]string{
		`["eu",1]`:     `{"id":1,"region":"eu","v":"e"}`,
		`["us",1]`:     `{"id":1,"region":"us","v":"b"}`,
		`["eu",2]`:     `{"id":2,"region":"eu","v":"c"}`,
		`["eu\",1",1]`: `{"id":1,"region":"eu\",1","v":"d"}`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("documents %v, want %v", got, want)
	}
}

func TestMappingConflictFailsTheBatchAsABusinessError(t *testing.T) {
	ix := newIndex(t)
	ix.create(t, `{"properties":{"n":{"type":"long"}}}`)
	s := testSink(t, ix.url, ix.name, []string{"id"}, etlv1.ActionUpdate, Options{})
	b := &batch.Batch{
		Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "n", Type: pgtype.TextOID}},
		Rows:    [][]any{{int64(1), "10"}, {int64(2), "not a number"}, {int64(3), "30"}, {int64(4), "x"}},
	}
	n, err := write(t, s, b)
	if err == nil || n != 0 {
		t.Fatalf("Write = %d, %v; want an error and nothing counted", n, err)
	}
	if failure.Classify(err) != etlv1.ErrorBusiness {
		t.Fatalf("a mapping conflict is classified %s, want Business: %v", failure.Classify(err), err)
	}
	for _, want := range []string{"es:" + ix.name, "rejected 2 of 4 documents", `_id "2"`, `_id "4"`, "index " + ix.name,
		"status 400", "document_parsing_exception", "[long]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	t.Logf("message: %v", err)
}

func TestInvalidKeysFailBeforeAnyRequest(t *testing.T) {
	ix := newIndex(t)
	s := testSink(t, ix.url, ix.name, []string{"id"}, etlv1.ActionUpdate, Options{})
	cases := []struct {
		name string
		key  any
		want string
	}{
		{"NULL", nil, "the key is NULL"},
		{"empty", "", "the _id is empty"},
		{"too long", strings.Repeat("k", 513), "the _id is 513 bytes long"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &batch.Batch{Columns: []batch.Column{{Name: "id", Type: pgtype.TextOID}}, Rows: [][]any{{"fine"}, {tc.key}}}
			_, err := write(t, s, b)
			if err == nil || failure.Classify(err) != etlv1.ErrorBusiness || !strings.Contains(err.Error(), tc.want) ||
				!strings.Contains(err.Error(), "row 2") {
				t.Fatalf("Write = %v; want a business error naming row 2: %s", err, tc.want)
			}
		})
	}
	if _, err := write(t, s, &batch.Batch{Columns: []batch.Column{{Name: "v"}}, Rows: [][]any{{"x"}}}); err == nil ||
		!strings.Contains(err.Error(), `no key column "id"`) {
		t.Fatalf("a batch without the key column: %v", err)
	}
	if ix.exists(t) {
		t.Fatalf("index %s exists: a request was sent", ix.name)
	}
}

// countingServer answers like an Elasticsearch root endpoint, without the product header
// unless genuine, and counts the requests it gets.
func countingServer(t *testing.T, status int, genuine bool, version string) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		if genuine {
			w.Header().Set("X-Elastic-Product", "Elasticsearch")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status == 200 {
			_, _ = fmt.Fprintf(w, `{"version":{"number":%q},"tagline":"You Know, for Search"}`, version)
			return
		}
		_, _ = fmt.Fprintf(w, `{"error":{"type":"security_exception","reason":"injected %d"},"status":%d}`, status, status)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestTargetOutsideTheWhitelistIsRefusedBeforeAnyRequest(t *testing.T) {
	srv, requests := countingServer(t, 200, true, "8.19.21")
	cfg := &configv1.OperatorConfig{
		Elasticsearch:  []configv1.ElasticsearchConnection{{Name: "search", URLs: []string{srv.URL}}},
		AllowedTargets: configv1.AllowedTargets{ElasticsearchIndexes: []string{"orders"}},
	}
	lookup := func(string) (string, bool) { return "", false }
	_, err := Open(cfg, Target{Index: "customers", Key: []string{"id"}}, "", lookup, Options{})
	if err == nil || failure.Classify(err) != etlv1.ErrorBusiness || !strings.Contains(err.Error(), "es:customers is not in the operator's whitelist") {
		t.Fatalf("Open of a target outside the whitelist = %v", err)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d requests reached the cluster for a refused target", n)
	}
	s, err := Open(cfg, Target{Index: "orders", Key: []string{"id"}}, "", lookup, Options{})
	if err != nil {
		t.Fatalf("Open of a whitelisted target: %v", err)
	}
	defer func() { _ = s.Close(context.Background()) }()
	if err := s.Prepare(context.Background()); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("Prepare made %d requests, want 1", n)
	}
}

func TestPrepareTellsInfraFromBusiness(t *testing.T) {
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		return "http://" + addr
	}()
	serve := func(status int, genuine bool, version ...string) string {
		srv, _ := countingServer(t, status, genuine, append(version, "8.19.21")[0])
		return srv.URL
	}
	cases := []struct {
		name  string
		url   string
		class etlv1.ErrorClass
		want  string
	}{
		{"genuine", serve(200, true), "", ""},
		{"not Elasticsearch", serve(200, false), etlv1.ErrorBusiness, "X-Elastic-Product"},
		{"too old", serve(200, true, "7.10.2"), etlv1.ErrorBusiness, "runs version 7.10.2: 7.14 or later is needed"},
		{"no version", serve(200, true, ""), etlv1.ErrorBusiness, "no version number"},
		{"bad credentials", serve(401, true), etlv1.ErrorBusiness, "check the connection's credentials"},
		{"missing privilege", serve(403, true), etlv1.ErrorBusiness, "`monitor` cluster privilege"},
		{"overloaded", serve(429, true), etlv1.ErrorInfra, "HTTP 429"},
		{"unavailable", serve(503, true), etlv1.ErrorInfra, "HTTP 503"},
		{"nobody listening", closed, etlv1.ErrorInfra, "connection refused"},
		{"real node", testenv.ElasticsearchURL(t), "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newSink(Target{Index: "x", Key: []string{"id"}}, Connection{Name: "c", URLs: []string{tc.url}}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = s.Close(context.Background()) }()
			err = s.Prepare(context.Background())
			if tc.class == "" {
				if err != nil {
					t.Fatalf("Prepare: %v", err)
				}
				return
			}
			if err == nil || failure.Classify(err) != tc.class || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Prepare = %v (%s), want a %s error containing %q", err, failure.Classify(err), tc.class, tc.want)
			}
		})
	}
}

// faultProxy stands in front of the real node and answers bulk requests badly on demand.
type faultProxy struct {
	srv *httptest.Server
	mu  sync.Mutex
	// rejectRequests bulk requests are answered 429 as a whole; then rejectItems requests are
	// forwarded but every other item of their answer is turned into a 429.
	rejectRequests, rejectItems int
	bulks                       int
	// itemsSent counts the documents the proxy received, itemsRejected those it failed.
	itemsSent, itemsRejected int
}

func newFaultProxy(t *testing.T, rejectRequests, rejectItems int) *faultProxy {
	target, err := url.Parse(testenv.ElasticsearchURL(t))
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{rejectRequests: rejectRequests, rejectItems: rejectItems}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(res *http.Response) error {
		if res.Request.Header.Get("X-Test-Reject-Items") == "" {
			return nil
		}
		body, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil {
			return err
		}
		var answer struct {
			Items []map[string]map[string]any `json:"items"`
		}
		if err := json.Unmarshal(body, &answer); err != nil {
			return err
		}
		for i, it := range answer.Items {
			if i%2 == 0 {
				continue
			}
			for _, r := range it {
				r["status"] = 429
				r["error"] = map[string]any{"type": "es_rejected_execution_exception", "reason": "injected item rejection"}
			}
			p.mu.Lock()
			p.itemsRejected++
			p.mu.Unlock()
		}
		body, _ = json.Marshal(answer)
		res.Body = io.NopCloser(bytes.NewReader(body))
		res.ContentLength = int64(len(body))
		res.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/_bulk") {
			rp.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.Header.Del("Accept-Encoding") // ModifyResponse reads the answer
		p.mu.Lock()
		p.bulks++
		n := p.bulks
		p.itemsSent += bytes.Count(body, []byte("\n")) / 2
		p.mu.Unlock()
		switch {
		case n <= p.rejectRequests:
			w.Header().Set("X-Elastic-Product", "Elasticsearch")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"error":{"type":"es_rejected_execution_exception","reason":"injected request rejection"},"status":429}`)
			return
		case n <= p.rejectRequests+p.rejectItems:
			r.Header.Set("X-Test-Reject-Items", "1")
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func TestOverloadedClusterIsSurvivedWithoutLoss(t *testing.T) {
	ix := newIndex(t)
	ix.create(t, "")
	proxy := newFaultProxy(t, 3, 4)
	var waits []time.Duration
	s := testSink(t, proxy.srv.URL, ix.name, []string{"id"}, etlv1.ActionUpdate, Options{
		FlushBytes: 16 << 10, Retries: 10,
		Sleep: func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil },
	})
	want := map[string]string{}
	const batches, perBatch = 3, 400
	for b := range batches {
		var rows [][]any
		for i := range perBatch {
			id := int64(b*perBatch + i + 1)
			rows = append(rows, []any{id, fmt.Sprintf("name %d", id), id, json.RawMessage(`{}`)})
			want[strconv.FormatInt(id, 10)] = fmt.Sprintf(`{"id":%d,"name":"name %d","n":%d,"doc":{}}`, id, id, id)
		}
		if n, err := write(t, s, itemsBatch(rows...)); err != nil || n != perBatch {
			t.Fatalf("batch %d: Write = %d, %v", b, n, err)
		}
	}
	got := ix.docs(t)
	if len(got) != len(want) {
		t.Fatalf("index holds %d documents, want %d", len(got), len(want))
	}
	for id, src := range want {
		if got[id] != src {
			t.Fatalf("document %s = %s, want %s", id, got[id], src)
		}
	}
	if proxy.itemsRejected == 0 || len(waits) == 0 {
		t.Fatalf("no fault was injected (%d items rejected, %d waits)", proxy.itemsRejected, len(waits))
	}
	// Whole requests rejected resend their documents; rejected items resend only themselves.
	t.Logf("%d bulk requests, %d documents sent for %d, %d items rejected, waits %v",
		proxy.bulks, proxy.itemsSent, len(want), proxy.itemsRejected, waits)
	if proxy.itemsSent > len(want)+3*perBatch+proxy.itemsRejected {
		t.Fatalf("%d documents sent: more than the rejected ones were resent", proxy.itemsSent)
	}
	if waits[0] != DefaultBackoff || (len(waits) > 1 && waits[1] != 2*DefaultBackoff) {
		t.Fatalf("waits %v: want an exponential backoff from %s", waits, DefaultBackoff)
	}
}

func TestPersistentOverloadIsAnInfraError(t *testing.T) {
	ix := newIndex(t)
	proxy := newFaultProxy(t, 1<<30, 0)
	s := testSink(t, proxy.srv.URL, ix.name, []string{"id"}, etlv1.ActionUpdate, Options{Retries: 2, Workers: 1})
	n, err := write(t, s, itemsBatch(row(1, "a", 1), row(2, "b", 2)))
	if err == nil || n != 0 || failure.Classify(err) != etlv1.ErrorInfra {
		t.Fatalf("Write = %d, %v; want an infrastructure error", n, err)
	}
	for _, want := range []string{"2 of 2 documents still failing after 2 resends", "HTTP 429", "es_rejected_execution_exception"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if proxy.bulks != 3 {
		t.Fatalf("%d bulk requests, want 3 (the first and 2 resends)", proxy.bulks)
	}
}
