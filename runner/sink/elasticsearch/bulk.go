package elasticsearch

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/elastic/go-elasticsearch/v8/esutil"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
)

// item is one document of the batch being written. It is also the body the bulk indexer
// reads (an io.ReadSeeker over the encoded document), which is how a result callback finds
// its document without a lookup.
type item struct {
	id  string
	doc []byte
	off int
	// del makes the item a bulk delete of the _id, which has no body.
	del bool
	// row is the index in the batch of the row the document is made of.
	row int

	// The result of the latest attempt, set by the bulk indexer's callback. A worker runs the
	// callback of each item once; Flush orders it before Write reads it.
	answered, failed                        bool
	status                                  int
	err                                     error
	errType, reason, causeType, causeReason string
}

// Read implements io.Reader over the encoded document.
func (it *item) Read(p []byte) (int, error) {
	if it.off >= len(it.doc) {
		return 0, io.EOF
	}
	n := copy(p, it.doc[it.off:])
	it.off += n
	return n, nil
}

// Seek implements io.Seeker; the bulk indexer measures the body and rewinds it.
func (it *item) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = int64(it.off) + offset
	case io.SeekEnd:
		abs = int64(len(it.doc)) + offset
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if abs < 0 {
		return 0, errors.New("seek: negative position")
	}
	it.off = int(abs)
	return abs, nil
}

func (it *item) reset() {
	it.off = 0
	it.answered, it.failed, it.status, it.err = false, false, 0, nil
	it.errType, it.reason, it.causeType, it.causeReason = "", "", "", ""
}

// succeeded reports an item Elasticsearch applied. A delete of a document that is not there
// (404, a delete replayed after a crash) succeeded too.
func (it *item) succeeded() bool {
	return it.answered && (!it.failed || it.del && it.err == nil && it.status == http.StatusNotFound && it.errType == "")
}

// answer records the result of an item.
func (it *item) answer(r esutil.BulkIndexerResponseItem, err error, failed bool) {
	it.answered, it.failed, it.status, it.err = true, failed, r.Status, err
	if failed {
		it.errType, it.reason = r.Error.Type, r.Error.Reason
		it.causeType, it.causeReason = r.Error.Cause.Type, r.Error.Cause.Reason
	}
}

// failureStatus returns the HTTP status of a failed item: the item's own, or that of the
// bulk request when Elasticsearch refused it whole (a 429 of an overloaded node). It reports
// false for an item that succeeded, got no answer yet, or whose request got no HTTP answer
// (a dropped connection).
func (it *item) failureStatus() (int, bool) {
	if !it.answered || it.succeeded() {
		return 0, false
	}
	if it.err == nil {
		return it.status, it.status > 0
	}
	var herr *httpError
	if errors.As(it.err, &herr) {
		return herr.status, true
	}
	return 0, false
}

// transient reports whether a failed item may succeed when sent again: no answer at all, a
// request that failed on the way or with a transient HTTP status, or an item answered 429
// (Elasticsearch is overloaded), 5xx, or 409 (a version conflict that outlived
// retry_on_conflict: someone else is writing the same document right now).
func (it *item) transient() bool {
	switch {
	case !it.answered:
		return true
	case it.err != nil:
		return failure.Classify(classifyTransport(it.err)) == etlv1.ErrorInfra
	}
	return it.status == 0 || it.status == http.StatusConflict || httpTransient(it.status)
}

// describe renders an item's rejection: status, error type and reason, and the cause.
func (it *item) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "status %d", it.status)
	if it.errType != "" {
		fmt.Fprintf(&b, ": %s: %s", it.errType, bound(it.reason))
	}
	switch {
	case it.causeType != "" && causeQuotesValue(it.errType):
		fmt.Fprintf(&b, " (caused by %s)", it.causeType)
	case it.causeType != "":
		fmt.Fprintf(&b, " (caused by %s: %s)", it.causeType, bound(it.causeReason))
	}
	return b.String()
}

// bound removes the document values a reason quotes, puts it on one line and shortens it.
func bound(s string) string {
	const maxReason = 300
	s = strings.Join(strings.Fields(withoutValues(s)), " ")
	if len(s) <= maxReason {
		return s
	}
	return strings.ToValidUTF8(s[:maxReason], "") + "..."
}

// responseDecoder decodes bulk answers. The sink asks only for each item's status and error
// (filter_path), so an answer without errors is a long run of {"update":{"status":200}}: it
// is scanned directly, and every item with the same action and status shares one read-only
// result, instead of encoding/json building a map per item by reflection (most of the sink's
// CPU otherwise). Anything else goes through encoding/json.
type responseDecoder struct{}

// UnmarshalFromReader implements esutil.BulkResponseJSONDecoder.
func (responseDecoder) UnmarshalFromReader(r io.Reader, blk *esutil.BulkIndexerResponse) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if !bytes.Contains(body, []byte(`"error"`)) && scanStatuses(body, blk) {
		return nil
	}
	*blk = esutil.BulkIndexerResponse{}
	return json.Unmarshal(body, blk)
}

// scanStatuses reads {"items":[{"<action>":{"status":<n>}},...]} into blk, or reports false
// when the answer has another shape.
func scanStatuses(body []byte, blk *esutil.BulkIndexerResponse) bool {
	p := bytes.TrimSpace(body)
	if !bytes.HasPrefix(p, []byte(`{"items":[`)) {
		return false
	}
	p = p[len(`{"items":[`):]
	type result struct {
		action string
		status int
	}
	shared := map[result]map[string]esutil.BulkIndexerResponseItem{}
	if blk.Items == nil {
		blk.Items = make([]map[string]esutil.BulkIndexerResponseItem, 0, bytes.Count(p, []byte("}}")))
	}
	blk.Items = blk.Items[:0]
	for len(p) > 0 && p[0] != ']' {
		if !bytes.HasPrefix(p, []byte(`{"`)) {
			return false
		}
		p = p[2:]
		end := bytes.IndexByte(p, '"')
		if end < 0 {
			return false
		}
		action := p[:end]
		p = p[end:]
		if !bytes.HasPrefix(p, []byte(`":{"status":`)) {
			return false
		}
		p = p[len(`":{"status":`):]
		status, n := 0, 0
		for n < len(p) && n < 3 && p[n] >= '0' && p[n] <= '9' {
			status = status*10 + int(p[n]-'0')
			n++
		}
		if n == 0 || !bytes.HasPrefix(p[n:], []byte("}}")) {
			return false
		}
		p = p[n+2:]
		key := result{string(action), status}
		m, ok := shared[key]
		if !ok {
			m = map[string]esutil.BulkIndexerResponseItem{key.action: {Status: status}}
			shared[key] = m
		}
		blk.Items = append(blk.Items, m)
		if len(p) > 0 && p[0] == ',' {
			p = p[1:]
		}
	}
	return bytes.Equal(p, []byte("]}"))
}

// statusTransport turns an HTTP error answer to a whole bulk request into an error that keeps
// the status: the bulk indexer reports it to every item of the request, and a 429 must be told
// from a 400.
type statusTransport struct{ next esapi.Transport }

// Perform implements esapi.Transport.
func (t statusTransport) Perform(req *http.Request) (*http.Response, error) {
	res, err := t.next.Perform(req)
	if err != nil || res.StatusCode < 300 {
		return res, err
	}
	defer func() { _ = res.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 16<<10))
	return nil, newHTTPError(res.StatusCode, body)
}

// httpError is an HTTP error answer of Elasticsearch.
type httpError struct {
	status       int
	typ, reason  string
	unparsedBody string
}

func newHTTPError(status int, body []byte) *httpError {
	e := &httpError{status: status}
	var answer struct {
		Error json.RawMessage `json:"error"`
	}
	var detail struct {
		Type   string `json:"type"`
		Reason string `json:"reason"`
	}
	if json.Unmarshal(body, &answer) == nil && json.Unmarshal(answer.Error, &detail) == nil && detail.Type != "" {
		e.typ, e.reason = detail.Type, detail.Reason
	} else {
		e.unparsedBody = strings.TrimSpace(string(body))
	}
	return e
}

func (e *httpError) Error() string {
	msg := fmt.Sprintf("HTTP %d %s", e.status, http.StatusText(e.status))
	switch {
	case e.typ != "":
		msg += ": " + e.typ + ": " + bound(e.reason)
	case e.unparsedBody != "":
		msg += ": " + bound(e.unparsedBody)
	}
	return msg
}

// transient reports whether the same request may succeed later: 429 (overloaded, or a
// disk-full block that lifts), 408 (a proxy or the node timed the request out) and 5xx
// (500 includes a node that failed mid-request, 502/503/504 a proxy, an unavailable shard or
// a cluster without a master). Every other 4xx is about the request and needs a change.
func (e *httpError) transient() bool {
	return httpTransient(e.status)
}

// httpTransient is the HTTP status table of the Elasticsearch sink, pure so it is table-tested.
func httpTransient(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500
}

// classifyTransport marks an error of a request as infrastructure (the path to the cluster or
// the cluster's load) or business (nothing a retry changes: a certificate that is not trusted,
// a server that is not Elasticsearch, a 4xx answer).
func classifyTransport(err error) error {
	var (
		herr      *httpError
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case errors.As(err, &herr):
		if herr.transient() {
			return failure.Infra(err)
		}
		return failure.Business(err)
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify),
		errors.As(err, &record):
		return failure.Business(err)
	case strings.Contains(err.Error(), "server is not Elasticsearch"):
		return failure.Business(fmt.Errorf("%w (the answer lacks the X-Elastic-Product header: not Elasticsearch, or older than 7.14)", err))
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return failure.Business(err)
	}
	return failure.Infra(err)
}

// userinfo matches credentials in a URL.
var userinfo = regexp.MustCompile(`//[^/@\s"]+@`)

// scrubURLs removes credentials from URLs quoted in an error (net/http hides the password of
// a URL, not its user or an API key in a query).
func scrubURLs(s string) string { return userinfo.ReplaceAllString(s, "//") }

// serverVersion reads the version number from the answer of the root endpoint.
func serverVersion(body []byte) (string, error) {
	var info struct {
		Version struct {
			Number string `json:"number"`
		} `json:"version"`
	}
	if err := json.Unmarshal(body, &info); err != nil || info.Version.Number == "" {
		return "", errors.New("the root endpoint's answer has no version number: is this Elasticsearch?")
	}
	return info.Version.Number, nil
}
