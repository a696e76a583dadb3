package runner

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-dev/sluice/runner/status"
)

// scrubber removes credentials and row values from text that leaves the runner: status
// messages, log lines, the termination message. It knows the run's DSNs and their passwords,
// and also masks anything shaped like a credential-carrying URL or a password setting. Every
// outgoing error passes through it, so it is also where the row values that Postgres quotes in
// its errors are removed (withoutRowValues): a new call site cannot forget them.
type scrubber struct {
	secrets []string
}

var (
	urlUserinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@`)
	passwordKV  = regexp.MustCompile(`(?i)(password\s*=\s*)('[^']*'|\S+)`)
)

const redacted = status.Masked

func newScrubber(dsns map[string]string) *scrubber {
	s := &scrubber{}
	for _, dsn := range dsns {
		s.add(dsn)
	}
	return s
}

// add registers a DSN: the DSN itself and its password are secrets.
func (s *scrubber) add(dsn string) {
	if dsn == "" {
		return
	}
	s.secrets = append(s.secrets, dsn)
	if cfg, err := pgconn.ParseConfig(dsn); err == nil && cfg.Password != "" {
		s.secrets = append(s.secrets, cfg.Password)
		s.secrets = append(s.secrets, url.QueryEscape(cfg.Password), url.PathEscape(cfg.Password))
	}
}

// scrub returns text without secrets and without the row values of Postgres errors.
func (s *scrubber) scrub(text string) string {
	if s != nil {
		for _, secret := range s.secrets {
			if len(secret) >= 3 {
				text = strings.ReplaceAll(text, secret, redacted)
			}
		}
	}
	text = urlUserinfo.ReplaceAllString(text, "${1}"+redacted+"@")
	text = passwordKV.ReplaceAllString(text, "${1}"+redacted)
	return withoutRowValues(text)
}

var (
	// pgError is a *pgconn.PgError as its Error method renders it: "SEVERITY: message
	// (SQLSTATE code)". The method leaves out Detail, Hint, Where and InternalQuery, the
	// fields that quote rows (`Key (email)=(…) already exists`, `Failing row contains (…)`)
	// and statements; only the message can still quote a value. The severity may be
	// localized (lc_messages), hence any upper-case word.
	pgError = regexp.MustCompile(`(?s)(\p{Lu}+): (.*?) \(SQLSTATE ([0-9A-Z]{5})\)`)
	// pgQuoted is a quoted word of a message, with the noun before it when there is one.
	pgQuoted = regexp.MustCompile(`(?:\b(encoding|parameter|column|relation|table|constraint|domain|schema|type|enum) )?("(?:[^"]|"")*"|'(?:[^']|'')*')`)
	// pgBytes are the bytes of a value that is not valid in an encoding (22021, 22P05).
	pgBytes = regexp.MustCompile(`\b0x[0-9a-fA-F]{2}(?: 0x[0-9a-fA-F]{2})*`)
	// pgKeyDetail and pgFailingRow are the DETAIL texts that quote rows, in case a Detail is
	// ever formatted into an error: the columns stay, the values go.
	pgKeyDetail  = regexp.MustCompile(`\bKey \(([^()]*)\)=\(.*?\)( already exists| is not present| is still referenced| conflicts with)`)
	pgFailingRow = regexp.MustCompile(`\bFailing row contains \([^\n]*\)`)
)

// withoutRowValues removes the row values Postgres errors quote from text, keeping what
// identifies the failure: the severity, the SQLSTATE and the names of constraints, tables,
// columns and types.
func withoutRowValues(text string) string {
	text = pgKeyDetail.ReplaceAllString(text, "Key ($1)=("+redacted+")$2")
	text = pgFailingRow.ReplaceAllString(text, "Failing row contains ("+redacted+")")
	return pgError.ReplaceAllStringFunc(text, func(m string) string {
		sm := pgError.FindStringSubmatch(m)
		return sm[1] + ": " + pgMessageWithoutValues(sm[3], sm[2]) + " (SQLSTATE " + sm[3] + ")"
	})
}

// pgMessageWithoutValues removes the values a Postgres message of SQLSTATE code quotes.
// Postgres' own messages quote values only in class 22 (data exception: `invalid input
// syntax for type integer: "abc"`, `value "99999999999" is out of range for type integer`,
// `date/time field value out of range: "2024-13-45"`); the messages of the other classes
// quote names: constraints, relations, columns, types, roles (`duplicate key value violates
// unique constraint "users_email_key"`, `null value in column "x" of relation "y"`), and
// keep the values for DETAIL. Class P0 is text a PL/pgSQL RAISE wrote, from whatever a
// trigger or function had at hand, so it is treated as class 22.
//
// In those, a quoted word is a name only when a noun that names a schema object precedes it
// (`for encoding "UTF8"`, `for parameter "TimeZone"`). The value starts at the first other
// quote and runs to the last quote of its kind: Postgres quotes a value without escaping
// it, so a value holding a quote (`"ab"c"`) is masked whole.
func pgMessageWithoutValues(code, msg string) string {
	if !strings.HasPrefix(code, "22") && !strings.HasPrefix(code, "P0") {
		return msg
	}
	for _, m := range pgQuoted.FindAllStringSubmatchIndex(msg, -1) {
		if m[2] >= 0 { // a name: keep it
			continue
		}
		q := msg[m[4]]
		end := strings.LastIndexByte(msg, q)
		msg = msg[:m[4]] + string(q) + redacted + string(q) + msg[end+1:]
		break
	}
	return pgBytes.ReplaceAllString(msg, redacted)
}
