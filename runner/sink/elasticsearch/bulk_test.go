package elasticsearch

import (
	"fmt"
	"strings"
	"testing"

	"github.com/elastic/go-elasticsearch/v8/esutil"
)

func TestResponseDecoderReadsEveryItem(t *testing.T) {
	cases := []struct {
		name, body string
		want       string
	}{
		{"acknowledged updates", `{"items":[{"update":{"status":200}},{"update":{"status":201}},{"update":{"status":200}}]}`,
			"update:200 update:201 update:200"},
		{"index answers", `{"items":[{"index":{"status":201}}]}` + "\n", "index:201"},
		{"rejections go through encoding/json",
			`{"items":[{"update":{"status":200}},{"update":{"status":400,"error":{"type":"document_parsing_exception","reason":"bad","caused_by":{"type":"x","reason":"y"}}}}]}`,
			"update:200 update:400/document_parsing_exception/bad/x"},
		{"an unexpected shape goes through encoding/json", `{"took":3,"errors":false,"items":[{"index":{"_id":"1","status":201}}]}`,
			"index:201"},
		{"no items", `{}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var blk esutil.BulkIndexerResponse
			if err := (responseDecoder{}).UnmarshalFromReader(strings.NewReader(tc.body), &blk); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, it := range blk.Items {
				for action, r := range it {
					s := fmt.Sprintf("%s:%d", action, r.Status)
					if r.Error.Type != "" {
						s += "/" + r.Error.Type + "/" + r.Error.Reason + "/" + r.Error.Cause.Type
					}
					got = append(got, s)
				}
			}
			if strings.Join(got, " ") != tc.want {
				t.Fatalf("items %q, want %q", got, tc.want)
			}
		})
	}
	var blk esutil.BulkIndexerResponse
	if err := (responseDecoder{}).UnmarshalFromReader(strings.NewReader(`{"items":[{"update":{"status":20`), &blk); err == nil {
		t.Fatal("a truncated answer must be an error")
	}
}

func TestHTTPTransient(t *testing.T) {
	for status, want := range map[int]bool{
		200: false, 400: false, 401: false, 403: false, 404: false, 409: false, 413: false,
		408: true, 429: true, 500: true, 502: true, 503: true, 504: true,
	} {
		if got := httpTransient(status); got != want {
			t.Errorf("httpTransient(%d) = %v, want %v", status, got, want)
		}
	}
}
