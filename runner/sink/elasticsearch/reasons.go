package elasticsearch

import (
	"regexp"
	"strings"
)

// Elasticsearch quotes document values in some of its reasons. What leaves the sink keeps the
// field's name and type and the document's _id (the key), never the value.
var (
	// valuePreview ends a document_parsing_exception reason: "failed to parse field [age] of
	// type [long] in document with id '42'. Preview of field's value: 'abc'".
	valuePreview = regexp.MustCompile(`(?s)\.?\s*Preview of field's value: .*$`)
	// sourceSnippet is the document around a JSON parse error: "at [Source: (byte[])"{…}";
	// line: 1, column: 31]".
	sourceSnippet = regexp.MustCompile(`(?s)\s*at \[Source: .*?; line: \d+, column: \d+\]`)
	// immenseTerm is the start of a term longer than Lucene allows.
	immenseTerm = regexp.MustCompile(`(?s)\s*The prefix of the first immense term is: '[^']*'(?:\.\.\.)?,?`)
)

// withoutValues removes the document values an Elasticsearch reason quotes.
func withoutValues(reason string) string {
	reason = valuePreview.ReplaceAllString(reason, "")
	reason = sourceSnippet.ReplaceAllString(reason, "")
	return immenseTerm.ReplaceAllString(reason, "")
}

// causeQuotesValue reports whether the cause of an item's error of type errType is about the
// value that failed to parse against the mapping: its reason quotes the value (`For input
// string: "abc"`, `failed to parse date field [abc]`, `'abc' is not an IP string literal`),
// so only the cause's type is reported; the error's own reason names the field and its type.
func causeQuotesValue(errType string) bool {
	switch strings.TrimPrefix(errType, "elasticsearch.") {
	case "document_parsing_exception", "mapper_parsing_exception":
		return true
	}
	return false
}
