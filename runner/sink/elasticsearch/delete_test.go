package elasticsearch

import (
	"errors"
	"testing"
)

func TestItemSucceeded(t *testing.T) {
	for _, tc := range []struct {
		name string
		it   item
		want bool
	}{
		{"an applied index", item{answered: true, status: 201}, true},
		{"an unanswered item", item{}, false},
		{"a rejected index", item{answered: true, failed: true, status: 400, errType: "mapper_parsing_exception"}, false},
		{"a missing document for an update", item{answered: true, failed: true, status: 404, errType: "document_missing_exception"}, false},
		{"a delete of a document that is not there", item{del: true, answered: true, failed: true, status: 404}, true},
		{"a delete on a missing index", item{del: true, answered: true, failed: true, status: 404, errType: "index_not_found_exception"}, false},
		{"a delete whose request failed", item{del: true, answered: true, failed: true, err: errors.New("reset")}, false},
		{"an overloaded delete", item{del: true, answered: true, failed: true, status: 429}, false},
	} {
		if got := tc.it.succeeded(); got != tc.want {
			t.Errorf("%s: succeeded = %v, want %v", tc.name, got, tc.want)
		}
	}
}
