package elasticsearch

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
)

// The reasons are Elasticsearch 8.19's answers to documents that do not fit their mapping.
func TestItemDescriptionsQuoteNoValue(t *testing.T) {
	cases := []struct {
		name string
		it   item
		want string
	}{
		{"a long that is not a number",
			item{status: 400, errType: "document_parsing_exception",
				reason:    "[1:8] failed to parse field [age] of type [long] in document with id '42'. Preview of field's value: 'alice@example.com'",
				causeType: "illegal_argument_exception", causeReason: `For input string: "alice@example.com"`},
			"status 400: document_parsing_exception: [1:8] failed to parse field [age] of type [long] in document with id '42' (caused by illegal_argument_exception)"},
		{"a date that is not a date",
			item{status: 400, errType: "document_parsing_exception",
				reason:    "[1:9] failed to parse field [born] of type [date] in document with id '43'. Preview of field's value: 'alice@example.com'",
				causeType: "illegal_argument_exception", causeReason: "failed to parse date field [alice@example.com] with format [strict_date_optional_time||epoch_millis]"},
			"status 400: document_parsing_exception: [1:9] failed to parse field [born] of type [date] in document with id '43' (caused by illegal_argument_exception)"},
		{"a number out of range, whose cause quotes the document",
			item{status: 400, errType: "document_parsing_exception",
				reason:    "[1:8] failed to parse field [age] of type [long] in document with id '46'. Preview of field's value: '99999999999999999999999'",
				causeType: "x_content_parse_exception", causeReason: "[1:31] Numeric value (99999999999999999999999) out of range of long (-9223372036854775808 - 9223372036854775807)\n at [Source: (byte[])\"{\"age\":99999999999999999999999}\"; line: 1, column: 31]"},
			"status 400: document_parsing_exception: [1:8] failed to parse field [age] of type [long] in document with id '46' (caused by x_content_parse_exception)"},
		{"an object where a number belongs",
			item{status: 400, errType: "document_parsing_exception",
				reason:    "[1:20] failed to parse field [age] of type [long] in document with id '49'. Preview of field's value: '{x=alice}'",
				causeType: "illegal_argument_exception", causeReason: "Cannot parse object as number"},
			"status 400: document_parsing_exception: [1:20] failed to parse field [age] of type [long] in document with id '49' (caused by illegal_argument_exception)"},
		{"an immense term",
			item{status: 400, errType: "illegal_argument_exception",
				reason: "Document contains at least one immense term in field=\"body\" (whose UTF8 encoding is longer than the max length 32766), all of which were skipped.  " +
					"Please correct the analyzer to not produce such terms.  The prefix of the first immense term is: '[97, 108, 105, 99, 101]...', original message: bytes can be at most 32766 in length; got 40000"},
			`status 400: illegal_argument_exception: Document contains at least one immense term in field="body" (whose UTF8 encoding is longer than the max length 32766), ` +
				"all of which were skipped. Please correct the analyzer to not produce such terms. original message: bytes can be at most 32766 in length; got 40000"},
		{"a strict mapping names the field",
			item{status: 400, errType: "strict_dynamic_mapping_exception",
				reason: "[1:9] mapping set to strict, dynamic introduction of [nope] within [_doc] is not allowed"},
			"status 400: strict_dynamic_mapping_exception: [1:9] mapping set to strict, dynamic introduction of [nope] within [_doc] is not allowed"},
		{"a version conflict names the _id",
			item{status: 409, errType: "version_conflict_engine_exception",
				reason: "[48]: version conflict, document already exists (current version [1])"},
			"status 409: version_conflict_engine_exception: [48]: version conflict, document already exists (current version [1])"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.it.describe(); got != tc.want {
				t.Fatalf("describe\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestRejectedDocumentsLeaveNoValueInTheError(t *testing.T) {
	ix := newIndex(t)
	ix.create(t, `{"properties":{"n":{"type":"long"},"born":{"type":"date"},"ip":{"type":"ip"}}}`)
	s := testSink(t, ix.url, ix.name, []string{"id"}, etlv1.ActionIndex, Options{})
	b := &batch.Batch{
		Columns: []batch.Column{{Name: "id", Type: pgtype.Int8OID}, {Name: "n", Type: pgtype.TextOID},
			{Name: "born", Type: pgtype.TextOID}, {Name: "ip", Type: pgtype.TextOID}},
		Rows: [][]any{
			{int64(1), "alice@example.com", nil, nil},
			{int64(2), nil, "alice@example.com", nil},
			{int64(3), nil, nil, "alice@example.com"},
		},
	}
	_, err := write(t, s, b)
	if err == nil {
		t.Fatal("the documents were accepted")
	}
	for _, want := range []string{`_id "1"`, `_id "3"`, "field [n] of type [long]", "field [ip] of type [ip]", "in document with id '1'"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "alice") {
		t.Errorf("the error quotes a value: %v", err)
	}
}
