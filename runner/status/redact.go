package status

import (
	"regexp"
	"strings"
)

// Masked stands for a checkpoint, cursor or key value of a pipeline whose checkpoint values
// are redacted (the operator configuration's redaction.checkpointTargets).
const Masked = "****"

// Option configures a reporter.
type Option func(*options)

type options struct {
	redact bool
}

func buildOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// RedactCheckpoint makes the reporter show the checkpoint as one Masked per value (the count
// still shows how many columns the position has) and mask the cursor and key values in the
// messages it writes: condition messages and event notes. The checkpoint the state database
// commits is not the reporter's, and stays exact.
func RedactCheckpoint(on bool) Option {
	return func(o *options) { o.redact = on }
}

// Mask returns one Masked per value; nil stays nil (no checkpoint).
func Mask(values []string) []string {
	if values == nil {
		return nil
	}
	out := make([]string, len(values))
	for i := range out {
		out[i] = Masked
	}
	return out
}

var (
	// rowKey starts the list of key (or order) columns that names a row: `source row (id=5)`,
	// `reader row (tenant=7, email="a@b")`, `key (id=5)`.
	rowKey = regexp.MustCompile(`\b(?:row|key) \(`)
	// keyValue is one name=value of such a list at its start: the value Go-quoted, or bare up
	// to the next comma or the closing parenthesis (the runner quotes values that hold either).
	keyValue = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^,)]*)`)
	// documentID is an Elasticsearch document _id: the sink's `_id "42"`, a reason's
	// `document with id '42'` and `[42]: version conflict`.
	documentID = regexp.MustCompile(`(_id )"(?:[^"\\]|\\.)*"|(document with id )'.*?'([ ;.)]|$)|(version_conflict_engine_exception: )\[.*?\](: version conflict)`)
	// horizonValue is the cursor value of the HorizonHeld condition's message.
	horizonValue = regexp.MustCompile(`(?m)(read horizon is (?:held at|at|the cursor value) )(.+?)( by |$)`)
	// advanceCheckpoint is what etl.advance reports of two checkpoints that differ (SQLSTATE
	// SLF02): text[] literals, or <NULL>.
	advanceCheckpoint = regexp.MustCompile(`(checkpoint is |the batch was read after )(\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\}|<NULL>)`)
)

// RedactValues masks the checkpoint, cursor and key values in a message of the runner: the
// key lists that name a row, Elasticsearch document ids, the read horizon and the checkpoints
// etl.advance compares. The messages of a pipeline whose checkpoint values are redacted pass
// through it; row values never reach a message at all (see the runner's scrubber).
func RedactValues(text string) string {
	text = maskKeyLists(text)
	text = documentID.ReplaceAllStringFunc(text, func(m string) string {
		sm := documentID.FindStringSubmatch(m)
		switch {
		case sm[1] != "":
			return sm[1] + `"` + Masked + `"`
		case sm[2] != "":
			return sm[2] + "'" + Masked + "'" + sm[3]
		}
		return sm[4] + "[" + Masked + "]" + sm[5]
	})
	text = horizonValue.ReplaceAllString(text, "${1}"+Masked+"${3}")
	return advanceCheckpoint.ReplaceAllStringFunc(text, func(m string) string {
		sm := advanceCheckpoint.FindStringSubmatch(m)
		return sm[1] + maskArray(sm[2])
	})
}

// maskKeyLists replaces each value of every row's key list with Masked, keeping the names.
func maskKeyLists(text string) string {
	var b strings.Builder
	for {
		loc := rowKey.FindStringIndex(text)
		if loc == nil {
			b.WriteString(text)
			return b.String()
		}
		b.WriteString(text[:loc[1]])
		text = text[loc[1]:]
		for {
			m := keyValue.FindStringSubmatchIndex(text)
			if m == nil {
				break
			}
			b.WriteString(text[:m[3]] + "=" + Masked)
			text = text[m[1]:]
			if !strings.HasPrefix(text, ", ") {
				break
			}
			b.WriteString(", ")
			text = text[2:]
		}
	}
}

// maskArray masks each element of a Postgres array literal ({a,"b c"}), keeping the count.
func maskArray(lit string) string {
	if lit == "<NULL>" || lit == "{}" {
		return lit
	}
	n, quoted, escaped := 1, false, false
	for _, c := range lit[1 : len(lit)-1] {
		switch {
		case escaped:
			escaped = false
		case c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			n++
		}
	}
	return "{" + strings.Repeat(Masked+",", n-1) + Masked + "}"
}
