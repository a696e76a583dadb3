// Package elasticsearch is the sink for `es:<index>` targets. It writes each batch with one
// esutil.BulkIndexer kept for the session, and returns from Write only when Elasticsearch has
// acknowledged every document of the batch, so the executor's checkpoint never covers a
// document that is not in the index.
//
// # Documents
//
// A row becomes one document whose fields are the batch's columns, in order, key columns
// included. Values are written as JSON: integers and floats as numbers, numeric as a number
// with the digits Postgres prints (NaN and ±Infinity as strings), json and jsonb as the JSON
// they hold (objects stay objects), arrays as arrays, timestamptz in UTC as RFC 3339 with
// up to nanosecond digits (2024-01-02T03:04:05.123456Z), timestamp without its zone, date as
// 2024-01-02, uuid in its canonical form, bytea in base64, inet as its address, NULL as null,
// and the rarer Postgres types as their Postgres text.
//
// # Document _id
//
// The _id derives from the key columns (target.key, else the source's key columns) alone, so
// a replayed row lands on the same document:
//
//   - one key column: the value's text: a string as it is, a number in decimal (a numeric
//     without trailing fractional zeros: 1.50 and 1.5 are one key), a uuid canonical, a time
//     as in the document. Key 42 is _id "42".
//   - several key columns: a JSON array of the values, numbers and booleans bare, everything
//     else as a JSON string of its text: (42, 'eu-west') is _id `[42,"eu-west"]`. JSON
//     quoting keeps it unambiguous whatever the strings contain.
//
// A NULL or empty key, or an _id longer than Elasticsearch's 512 bytes, fails the run. Rows
// of a batch with the same _id collapse to the last one before anything is sent.
//
// # Update or Index
//
// target.action Update (the default) sends bulk `update` with `doc_as_upsert: true`: the row
// is merged into the existing document, so fields the row lacks (written by another pipeline
// or an enrichment) are kept, and JSON objects merge key by key (a key removed from a json
// column stays in the document). Elasticsearch reads the stored document for every update and
// stores the merged one re-serialized, so the _source holds numbers as it parsed them (2.50
// becomes 2.5; a decimal beyond a double's precision is rounded). A replayed, unchanged row is
// a no-op that does not even rewrite the document.
//
// Index sends bulk `index`: the row replaces the whole document, byte for byte as rendered.
// It is right when the row is the whole document, and when a key removed from a JSON column
// must disappear from the document.
//
// Elasticsearch maps a field on its first value unless the index says otherwise; an integer
// beyond the range of a long (numeric(30), a big JSON number) then fails its document, which
// needs an explicit mapping (keyword, double, scaled_float).
//
// # Failures
//
// Every item's result is checked. Items answered 429 or 5xx (and 409 after Elasticsearch's
// own retry_on_conflict), and transport errors, are sent again within the same Write after a
// backoff; when they still fail, Write returns an infrastructure error and the executor
// retries the batch from the checkpoint. Any other rejection (a mapping conflict, a document
// that does not parse, a missing index that cannot be created) is a business error naming the
// first few documents and Elasticsearch's reasons; the checkpoint does not move.
//
// The sink never refreshes the index: documents become searchable with the index's refresh
// interval.
package elasticsearch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	es8 "github.com/elastic/go-elasticsearch/v8"
	"github.com/elastic/go-elasticsearch/v8/esutil"
	"github.com/jackc/pgx/v5/pgtype"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/runner/sink"
	"github.com/sluice-dev/sluice/runner/source"
)

// Defaults of Options.
const (
	// DefaultFlushBytes is the size at which a bulk request is sent.
	DefaultFlushBytes = 4 << 20
	// DefaultWorkers is the number of bulk requests in flight at most.
	DefaultWorkers = 2
	// DefaultRetries is how many times a Write resends the documents that failed with a
	// transient error before it gives the batch back to the executor.
	DefaultRetries = 5
	// DefaultBackoff is the wait before the first resend; each later one doubles it.
	DefaultBackoff = 250 * time.Millisecond
)

// retryOnConflict is how often Elasticsearch retries an update that lost a race for the same
// document (a zombie runner still writing, or a resend of an item whose first answer was lost).
const retryOnConflict = 3

// maxReported bounds the failures quoted in an error message.
const maxReported = 3

// Target is what the sink writes: the index, the key columns of the _id and the bulk action.
type Target struct {
	Index string
	Key   []string
	// Action is etlv1.ActionUpdate (also when empty) or etlv1.ActionIndex.
	Action etlv1.ElasticsearchAction
	// Alias says Index is an alias that Mirror runs rebuild (target.fullSync Mirror): when
	// neither it nor an index of its name exists, Prepare creates it on an index of its own
	// (mirror.go), so that writes never create a plain index of that name.
	Alias bool
}

// Options tune the sink; the zero value is production's.
type Options struct {
	// FlushBytes is the size at which a bulk request is sent (DefaultFlushBytes). A batch is
	// always sent completely before Write returns, whatever its size.
	FlushBytes int
	// Workers is the number of bulk requests in flight at most (DefaultWorkers). Memory is
	// bounded by Workers × FlushBytes plus the batch being written.
	Workers int
	// Retries and Backoff: see DefaultRetries and DefaultBackoff. Retries < 0 means none.
	Retries int
	Backoff time.Duration
	// Sleep waits between resends (tests shorten it); nil sleeps.
	Sleep func(ctx context.Context, d time.Duration) error
	// Transport replaces the HTTP transport (tests); nil builds one from the connection.
	Transport http.RoundTripper
	// OnItemFailures, when set, learns after every bulk attempt of a Write how many items
	// failed with each HTTP status (metrics). Items whose request got no HTTP answer are
	// not counted, and a delete of a missing document is no failure.
	OnItemFailures func(status, count int)
}

func (o *Options) defaults() {
	if o.FlushBytes <= 0 {
		o.FlushBytes = DefaultFlushBytes
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Retries == 0 {
		o.Retries = DefaultRetries
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
}

// Sink writes batches into one index. It implements sink.RawWriter.
type Sink struct {
	target Target
	conn   string
	opts   Options
	client *es8.Client
	bi     esutil.BulkIndexer
	// action is the bulk action; update carries the document in an update body.
	action   string
	conflict *int
	prepared bool
	// mirror is the pass of a Mirror run, whose documents go to the index it builds
	// (mirror.go); ratio is target.maxDeleteRatio, which bounds what a swap may lose.
	mirror *mirror
	ratio  float64

	types  *pgtype.Map
	shapes map[string]*shape

	// Buffers reused from batch to batch.
	ids     []byte
	idEnds  []int
	docEnds []int
	keyVals []any
	seen    map[string]int
	body    []byte
	items   []item
	pending []*item
	retry   []*item
	raw     rawDecoder

	onSuccess func(context.Context, esutil.BulkIndexerItem, esutil.BulkIndexerResponseItem)
	onFailure func(context.Context, esutil.BulkIndexerItem, esutil.BulkIndexerResponseItem, error)
}

var _ sink.RawWriter = (*Sink)(nil)

// Open returns the sink of target through the named connection of the operator's
// configuration (see ResolveConnection). The index must be in the configuration's whitelist:
// otherwise Open fails before any request is made. Nothing is sent before Prepare.
func Open(cfg *configv1.OperatorConfig, target Target, connection string, lookupEnv func(string) (string, bool), opts Options) (*Sink, error) {
	if !cfg.ElasticsearchIndexAllowed(target.Index) {
		return nil, failure.Business(fmt.Errorf("target es:%s is not in the operator's whitelist (allowedTargets.elasticsearchIndexes)", target.Index))
	}
	conn, err := ResolveConnection(cfg, connection, lookupEnv)
	if err != nil {
		return nil, err
	}
	return newSink(target, conn, opts)
}

func newSink(target Target, conn Connection, opts Options) (*Sink, error) {
	if target.Index == "" {
		return nil, failure.Business(errors.New("elasticsearch target has no index"))
	}
	if len(target.Key) == 0 {
		return nil, failure.Business(fmt.Errorf("target es:%s: no key columns for the document _id", target.Index))
	}
	opts.defaults()
	s := &Sink{target: target, conn: conn.Name, opts: opts, types: pgtype.NewMap(), shapes: map[string]*shape{}, seen: map[string]int{}}
	// Values the sink decodes itself decode as the reader's would (json as raw JSON, infinite
	// dates), so that raw and decoded batches render alike.
	source.RegisterTypes(s.types)
	s.raw = rawDecoder{types: s.types}
	switch target.Action {
	case "", etlv1.ActionUpdate:
		s.action = "update"
		n := retryOnConflict
		s.conflict = &n
	case etlv1.ActionIndex:
		s.action = "index"
	default:
		return nil, failure.Business(fmt.Errorf("target es:%s: action %q: want Update or Index", target.Index, target.Action))
	}
	var err error
	if s.client, err = newClient(conn, opts.Transport); err != nil {
		return nil, err
	}
	if s.bi, err = s.bulkIndexer(target.Index); err != nil {
		return nil, err
	}
	s.onSuccess = func(_ context.Context, bi esutil.BulkIndexerItem, r esutil.BulkIndexerResponseItem) {
		bi.Body.(*item).answer(r, nil, false)
	}
	s.onFailure = func(_ context.Context, bi esutil.BulkIndexerItem, r esutil.BulkIndexerResponseItem, err error) {
		bi.Body.(*item).answer(r, err, true)
	}
	return s, nil
}

func (s *Sink) name() string { return "es:" + s.target.Index }

// bulkIndexer makes the bulk indexer of the sink's writes into index.
func (s *Sink) bulkIndexer(index string) (esutil.BulkIndexer, error) {
	bi, err := esutil.NewBulkIndexer(esutil.BulkIndexerConfig{
		Client:     statusTransport{s.client},
		Index:      index,
		NumWorkers: s.opts.Workers,
		FlushBytes: s.opts.FlushBytes,
		// Only what the results are checked on: the full answer is several times larger.
		FilterPath: []string{"items.*.status", "items.*.error"},
		Decoder:    responseDecoder{},
		// Room for a batch's items in the workers' queues, so that adding an item does not
		// wait for a worker to take the previous one (with the default of one item, a Write
		// of 5000 documents took about half again as long).
		QueueSizeMultiplier: 512,
	})
	if err != nil {
		return nil, fmt.Errorf("target es:%s: bulk indexer: %w", s.target.Index, err)
	}
	return bi, nil
}

// Prepare checks that the connection reaches a genuine Elasticsearch (the client refuses a
// server that does not identify itself as one, which also excludes versions before 7.14) and
// that the credentials are accepted. It does not create the index: Elasticsearch creates it on the first write with
// dynamic mapping, or the user creates it beforehand with the mapping they want.
//
// Prepare reads the cluster's root endpoint, which needs the `monitor` cluster privilege.
func (s *Sink) Prepare(ctx context.Context) error {
	res, err := s.client.Info(s.client.Info.WithContext(ctx))
	if err != nil {
		return classifyTransport(fmt.Errorf("%s: connect to Elasticsearch connection %q: %w", s.name(), s.conn, err))
	}
	defer func() { _ = res.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode >= 300 {
		herr := newHTTPError(res.StatusCode, body)
		err := fmt.Errorf("%s: Elasticsearch connection %q: %w", s.name(), s.conn, herr)
		switch res.StatusCode {
		case http.StatusUnauthorized:
			return failure.Business(fmt.Errorf("%w: check the connection's credentials", err))
		case http.StatusForbidden:
			return failure.Business(fmt.Errorf("%w: the runner reads the cluster's root endpoint, which needs the `monitor` cluster privilege", err))
		}
		if herr.transient() {
			return failure.Infra(err)
		}
		return failure.Business(err)
	}
	version, err := serverVersion(body)
	if err != nil {
		return failure.Business(fmt.Errorf("%s: Elasticsearch connection %q: %w", s.name(), s.conn, err))
	}
	if v := strings.SplitN(version, ".", 3); len(v) < 2 || atoi(v[0]) < 7 || atoi(v[0]) == 7 && atoi(v[1]) < 14 {
		return failure.Business(fmt.Errorf("%s: Elasticsearch connection %q runs version %s: 7.14 or later is needed", s.name(), s.conn, version))
	}
	if s.target.Alias {
		if err := s.ensureAlias(ctx); err != nil {
			return err
		}
	}
	s.prepared = true
	return nil
}

// atoi reads a version component; a malformed one counts as 0.
func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}

// Write sends the batch and returns when every document is acknowledged, or with the error
// that decides what the executor does (see the package documentation). It returns the number
// of documents written, after collapsing rows with the same _id.
func (s *Sink) Write(ctx context.Context, b *batch.Batch) (int64, error) {
	if !s.prepared {
		return 0, fmt.Errorf("write to %s: sink used before Prepare", s.name())
	}
	if b.Len() == 0 {
		return 0, nil
	}
	sh, err := s.shapeFor(b)
	if err != nil {
		return 0, err
	}
	if err := s.encode(sh, b); err != nil {
		return 0, err
	}
	return s.send(ctx)
}

// WritesRaw implements sink.RawWriter: the sink renders the source's wire encoding as JSON
// directly, and decodes only the types it has no direct rendering for.
func (s *Sink) WritesRaw() bool { return true }

// Close waits for requests still in flight (after a failed Write) and releases the client.
func (s *Sink) Close(ctx context.Context) error {
	err := s.bi.Close(ctx)
	if cerr := s.client.Close(ctx); err == nil && !errors.Is(cerr, es8.ErrAlreadyClosed) {
		err = cerr
	}
	return err
}

// send adds the encoded items to the bulk indexer, waits for their results, and resends the
// ones that failed transiently.
func (s *Sink) send(ctx context.Context) (int64, error) {
	n, _, err := s.sendRefusing(ctx, false)
	return n, err
}

// sendRefusing is send; with refuse, the documents Elasticsearch refuses for what they hold
// (documentRefusal) are returned instead of failing the write.
func (s *Sink) sendRefusing(ctx context.Context, refuse bool) (int64, []*item, error) {
	pending, spare := s.pending[:0], s.retry[:0]
	defer func() { s.pending, s.retry = pending[:0], spare[:0] }()
	for i := range s.items {
		pending = append(pending, &s.items[i])
	}
	var refused []*item
	for attempt := 0; ; attempt++ {
		for _, it := range pending {
			it.reset()
			bi := esutil.BulkIndexerItem{
				Action: s.action, DocumentID: it.id, Body: it, RetryOnConflict: s.conflict,
				OnSuccess: s.onSuccess, OnFailure: s.onFailure,
			}
			if it.del {
				// A delete has no body, so its callbacks find the item themselves.
				bi.Action, bi.Body, bi.RetryOnConflict = "delete", nil, nil
				bi.OnSuccess = func(_ context.Context, _ esutil.BulkIndexerItem, r esutil.BulkIndexerResponseItem) {
					it.answer(r, nil, false)
				}
				bi.OnFailure = func(_ context.Context, _ esutil.BulkIndexerItem, r esutil.BulkIndexerResponseItem, err error) {
					it.answer(r, err, true)
				}
			}
			err := s.bi.Add(ctx, bi)
			if err != nil {
				return 0, nil, fmt.Errorf("write to %s: %w", s.name(), err)
			}
		}
		// Flush returns when every worker has sent what it held and run its callbacks.
		if err := s.bi.Flush(ctx); err != nil {
			return 0, nil, fmt.Errorf("write to %s: %w", s.name(), err)
		}
		s.reportFailures(pending)
		retry := spare[:0]
		var rejected []*item
		for _, it := range pending {
			switch {
			case it.succeeded():
			case it.transient():
				retry = append(retry, it)
			default:
				rejected = append(rejected, it)
			}
		}
		spare = retry
		if len(rejected) > 0 && (!refuse || !allRefusals(rejected)) {
			return 0, nil, &refusedError{error: failure.Business(fmt.Errorf("write to %s: Elasticsearch rejected %d of %d documents: %s",
				s.name(), len(rejected), len(s.items), s.describe(rejected))), rows: allRefusals(rejected)}
		}
		refused = append(refused, rejected...)
		if len(retry) == 0 {
			return int64(len(s.items) - len(refused)), refused, nil
		}
		if attempt >= s.opts.Retries {
			return 0, nil, failure.Infra(fmt.Errorf("write to %s: %d of %d documents still failing after %d resends: %s",
				s.name(), len(retry), len(s.items), attempt, s.describe(retry)))
		}
		if err := s.opts.Sleep(ctx, s.opts.Backoff<<attempt); err != nil {
			return 0, nil, fmt.Errorf("write to %s: %w", s.name(), err)
		}
		pending, spare = retry, pending
	}
}

// reportFailures tells OnItemFailures how many of the items of an attempt failed with each
// status. Failures are few or share a status (a rejected request), so a short list of
// statuses does.
func (s *Sink) reportFailures(items []*item) {
	if s.opts.OnItemFailures == nil {
		return
	}
	type tally struct{ status, count int }
	var tallies []tally
next:
	for _, it := range items {
		status, ok := it.failureStatus()
		if !ok {
			continue
		}
		for i := range tallies {
			if tallies[i].status == status {
				tallies[i].count++
				continue next
			}
		}
		tallies = append(tallies, tally{status, 1})
	}
	for _, t := range tallies {
		s.opts.OnItemFailures(t.status, t.count)
	}
}

// describe quotes the first few failures of a batch; failures of a whole request, which all
// its items share, are quoted once.
func (s *Sink) describe(failed []*item) string {
	var parts []string
	seen := map[string]bool{}
	more := 0
	for _, it := range failed {
		var msg string
		if it.err != nil {
			msg = "bulk request: " + scrubURLs(it.err.Error())
		} else {
			msg = fmt.Sprintf("index %s, _id %q: %s", s.target.Index, it.id, it.describe())
		}
		if seen[msg] {
			continue
		}
		seen[msg] = true
		if len(parts) == maxReported {
			more++
			continue
		}
		parts = append(parts, msg)
	}
	out := strings.Join(parts, "; ")
	if more > 0 {
		out += fmt.Sprintf("; and %d more", more)
	}
	return out
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
