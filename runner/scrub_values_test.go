package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgCases are Postgres 15's errors, as its server sends them (Message, Detail and the named
// fields), wrapped as the Postgres sink wraps an upsert's error.
var pgCases = []struct {
	name string
	err  pgconn.PgError
	want string // the scrubbed message after "write to analytics.items: upsert: "
}{
	{"unique_violation",
		pgconn.PgError{Severity: "ERROR", Code: "23505", Message: `duplicate key value violates unique constraint "users_email_key"`,
			Detail: "Key (email)=(alice@example.com) already exists.", SchemaName: "analytics", TableName: "users", ConstraintName: "users_email_key"},
		`ERROR: duplicate key value violates unique constraint "users_email_key" (SQLSTATE 23505)`},
	{"not_null_violation",
		pgconn.PgError{Severity: "ERROR", Code: "23502", Message: `null value in column "n" of relation "users" violates not-null constraint`,
			Detail: "Failing row contains (3, bob@example.com, null).", TableName: "users", ColumnName: "n"},
		`ERROR: null value in column "n" of relation "users" violates not-null constraint (SQLSTATE 23502)`},
	{"check_violation",
		pgconn.PgError{Severity: "ERROR", Code: "23514", Message: `new row for relation "users" violates check constraint "users_age_check"`,
			Detail: "Failing row contains (4, carol@example.com, -5).", TableName: "users", ConstraintName: "users_age_check"},
		`ERROR: new row for relation "users" violates check constraint "users_age_check" (SQLSTATE 23514)`},
	{"foreign_key_violation",
		pgconn.PgError{Severity: "ERROR", Code: "23503", Message: `insert or update on table "users" violates foreign key constraint "users_ref_fkey"`,
			Detail: `Key (ref)=(99) is not present in table "users".`, TableName: "users", ConstraintName: "users_ref_fkey"},
		`ERROR: insert or update on table "users" violates foreign key constraint "users_ref_fkey" (SQLSTATE 23503)`},
	{"invalid_text_representation",
		pgconn.PgError{Severity: "ERROR", Code: "22P02", Message: `invalid input syntax for type integer: "alice@example.com"`},
		`ERROR: invalid input syntax for type integer: "****" (SQLSTATE 22P02)`},
	{"invalid_text_representation of an enum",
		pgconn.PgError{Severity: "ERROR", Code: "22P02", Message: `invalid input value for enum mood: "alice"`},
		`ERROR: invalid input value for enum mood: "****" (SQLSTATE 22P02)`},
	{"invalid_text_representation of json: the token is in DETAIL, the text in Where",
		pgconn.PgError{Severity: "ERROR", Code: "22P02", Message: "invalid input syntax for type json",
			Detail: `Token "alice" is invalid.`, Where: `JSON data, line 1: {"a":alice...`},
		`ERROR: invalid input syntax for type json (SQLSTATE 22P02)`},
	{"string_data_right_truncation",
		pgconn.PgError{Severity: "ERROR", Code: "22001", Message: "value too long for type character varying(5)"},
		`ERROR: value too long for type character varying(5) (SQLSTATE 22001)`},
	{"numeric_value_out_of_range",
		pgconn.PgError{Severity: "ERROR", Code: "22003", Message: `value "99999999999" is out of range for type integer`},
		`ERROR: value "****" is out of range for type integer (SQLSTATE 22003)`},
	{"numeric_value_out_of_range of a numeric",
		pgconn.PgError{Severity: "ERROR", Code: "22003", Message: "numeric field overflow",
			Detail: "A field with precision 4, scale 2 must round to an absolute value less than 10^2."},
		`ERROR: numeric field overflow (SQLSTATE 22003)`},
	{"datetime_field_overflow",
		pgconn.PgError{Severity: "ERROR", Code: "22008", Message: `date/time field value out of range: "2024-13-45"`,
			Hint: `Perhaps you need a different "datestyle" setting.`},
		`ERROR: date/time field value out of range: "****" (SQLSTATE 22008)`},
	{"invalid_datetime_format",
		pgconn.PgError{Severity: "ERROR", Code: "22007", Message: `invalid input syntax for type timestamp with time zone: "alice's birthday"`},
		`ERROR: invalid input syntax for type timestamp with time zone: "****" (SQLSTATE 22007)`},
	{"invalid_parameter_value keeps the parameter",
		pgconn.PgError{Severity: "ERROR", Code: "22023", Message: `invalid value for parameter "TimeZone": "Mars/Base"`},
		`ERROR: invalid value for parameter "TimeZone": "****" (SQLSTATE 22023)`},
	{"character_not_in_repertoire keeps the encoding, not the bytes",
		pgconn.PgError{Severity: "ERROR", Code: "22021", Message: `invalid byte sequence for encoding "UTF8": 0xc3 0x28`},
		`ERROR: invalid byte sequence for encoding "UTF8": **** (SQLSTATE 22021)`},
	{"a value holding quotes is masked whole",
		pgconn.PgError{Severity: "ERROR", Code: "22003", Message: `value "9"9 "alice" 9" is out of range for type integer`},
		`ERROR: value "****" is out of range for type integer (SQLSTATE 22003)`},
	{"a value holding quotes after a name",
		pgconn.PgError{Severity: "ERROR", Code: "22023", Message: `invalid value for parameter "TimeZone": "a"lice"`},
		`ERROR: invalid value for parameter "TimeZone": "****" (SQLSTATE 22023)`},
	{"raise_exception from a trigger",
		pgconn.PgError{Severity: "ERROR", Code: "P0001", Message: `email 'alice@example.com' is banned`},
		`ERROR: email '****' is banned (SQLSTATE P0001)`},
	{"undefined_column names stay",
		pgconn.PgError{Severity: "ERROR", Code: "42703", Message: `column "nope" does not exist`},
		`ERROR: column "nope" does not exist (SQLSTATE 42703)`},
	{"a localized severity",
		pgconn.PgError{Severity: "ОШИБКА", Code: "22P02", Message: `неверный синтаксис для типа integer: "alice@example.com"`},
		`ОШИБКА: неверный синтаксис для типа integer: "****" (SQLSTATE 22P02)`},
}

func TestScrubRemovesRowValuesOfPostgresErrors(t *testing.T) {
	for _, tc := range pgCases {
		t.Run(tc.name, func(t *testing.T) {
			err := fmt.Errorf("write to analytics.items: upsert: %w", &tc.err)
			got := (&scrubber{}).scrub(err.Error())
			if want := "write to analytics.items: upsert: " + tc.want; got != want {
				t.Fatalf("scrub\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestScrubRemovesRowQuotingDetails(t *testing.T) {
	cases := []struct{ in, want string }{
		{`upsert: ERROR: duplicate key value violates unique constraint "u_email_key" (SQLSTATE 23505): Key (email)=(alice@example.com) already exists.`,
			`upsert: ERROR: duplicate key value violates unique constraint "u_email_key" (SQLSTATE 23505): Key (email)=(****) already exists.`},
		{`Key (tenant, email)=(7, a), b@example.com) is not present in table "t".`, `Key (tenant, email)=(****) is not present in table "t".`},
		{`Failing row contains (3, bob@example.com, null).`, `Failing row contains (****).`},
		// Nothing else is touched.
		{`source row (id=5) has a NULL cursor column "c"`, `source row (id=5) has a NULL cursor column "c"`},
		{`pipeline tenant/X is gone`, `pipeline tenant/X is gone`},
	}
	for _, tc := range cases {
		if got := withoutRowValues(tc.in); got != tc.want {
			t.Errorf("withoutRowValues(%q)\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

// TestScrubPostgresErrorsFromTheServer makes the real server raise each error with a value
// that must not come out of the scrubber, and a name that must.
func TestScrubPostgresErrorsFromTheServer(t *testing.T) {
	db := newTestDB(t, "main")
	db.exec(t, `CREATE TYPE mood AS ENUM ('ok')`)
	db.exec(t, `CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE, n int NOT NULL, c varchar(5),
		age int CHECK (age > 0), ref int REFERENCES users (id), s smallint, num numeric(4,2), m mood, d date)`)
	db.exec(t, `INSERT INTO users (id, email, n) VALUES (1, 'alice@example.com', 1)`)
	db.exec(t, `CREATE FUNCTION ban() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.email = 'banned-alice@example.com' THEN RAISE EXCEPTION 'email % is banned', quote_literal(NEW.email); END IF; RETURN NEW; END $$`)
	db.exec(t, `CREATE TRIGGER ban BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION ban()`)
	cases := []struct {
		sql, name string
	}{
		{`INSERT INTO users (id, email, n) VALUES (2, 'alice@example.com', 1)`, `"users_email_key"`},
		{`INSERT INTO users (id, email, n) VALUES (3, 'alice-null@example.com', NULL)`, `column "n" of relation "users"`},
		{`INSERT INTO users (id, email, n, age) VALUES (4, 'alice-check@example.com', 1, -5)`, `"users_age_check"`},
		{`INSERT INTO users (id, email, n, ref) VALUES (5, 'alice-fk@example.com', 1, 99)`, `"users_ref_fkey"`},
		{`INSERT INTO users (id, email, n) VALUES (6, 'alice@example.com'::int, 1)`, "type integer"},
		{`INSERT INTO users (id, email, n, c) VALUES (7, 'alice-long@example.com', 1, 'alice@example.com')`, "character varying(5)"},
		{`INSERT INTO users (id, email, n, s) VALUES (8, 'x', 1, '31415926'::int)`, "smallint"},
		{`SELECT '31415926535'::int`, "type integer"},
		{`SELECT 'x" alice "y'::int`, "type integer"},
		{`SELECT 'alice@example.com'::mood`, "enum mood"},
		{`SELECT '2024-13-45 alice'::date`, "type date"},
		{`SELECT '2024-02-30 10:00'::timestamp`, "date/time field value out of range"},
		{`SELECT '{"a": alice}'::jsonb`, "type json"},
		{`SELECT convert_from('\xc328', 'UTF8')`, `encoding "UTF8"`},
		{`INSERT INTO users (id, email, n) VALUES (9, 'banned-alice@example.com', 1)`, "is banned"},
	}
	for _, tc := range cases {
		t.Run(firstLine(tc.sql), func(t *testing.T) {
			_, err := db.conn.Exec(context.Background(), tc.sql)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				t.Fatalf("want a Postgres error, got %v", err)
			}
			got := (&scrubber{}).scrub(fmt.Errorf("write to analytics.users: upsert: %w", err).Error())
			for _, value := range []string{"alice", "31415926", "2024-13-45", "2024-02-30", "0xc3"} {
				if strings.Contains(got, value) {
					t.Errorf("the scrubbed error still quotes %q: %s", value, got)
				}
			}
			if !strings.Contains(got, tc.name) || !strings.Contains(got, "(SQLSTATE "+pgErr.Code+")") {
				t.Errorf("the scrubbed error lost %q or its SQLSTATE %s: %s", tc.name, pgErr.Code, got)
			}
		})
	}
}
