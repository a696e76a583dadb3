package elasticsearch

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/batch"
	"github.com/sluice-dev/sluice/runner/source"
	"github.com/sluice-dev/sluice/test/testenv"
)

// TestRawAndDecodedBatchesRenderTheSameDocuments reads rows of many types from a real
// Postgres both ways the executor may (decoded values, or the wire encoding when no transform
// runs) and requires the same _ids and bytes, and the documents of the first row as written.
func TestRawAndDecodedBatchesRenderTheSameDocuments(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, testenv.NewPostgresDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	source.RegisterTypes(conn.TypeMap())
	for _, sql := range []string{
		`SET TIME ZONE 'Europe/Paris'`,
		`CREATE TYPE mood AS ENUM ('ok', 'happy')`,
		`CREATE TABLE src (
			id bigint, region text, i2 smallint, i4 integer, f4 real, f8 double precision, n numeric(10,2),
			nbig numeric, nnan numeric, b boolean, vc varchar(10), bp char(3), tstz timestamptz, ts timestamp,
			d date, dinf date, tsinf timestamptz, u uuid, j json, jb jsonb, by bytea, ia integer[], ta text[],
			tsa timestamptz[], ja jsonb[], m mood, ip inet, net cidr, iv interval, tm time, nul text,
			PRIMARY KEY (i2, id, region))`,
		`INSERT INTO src VALUES
			(1, 'eu', -2, 40000, 1.5, 0.1, 2.50, 12345678901234567890.123, 'NaN', true, 'héllo "x"', 'ab',
			 '2024-03-04 05:06:07.123456+01', '2024-03-04 05:06:07', '2024-03-04', 'infinity', '-infinity',
			 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', E'{\n "a": [1, 2]\n}', '{"big": 12345678901234567890, "s": "x"}',
			 '\x00ff', '{1,NULL,3}', '{"a b","c,d"}', '{"2024-01-02 03:04:05+00"}', ARRAY['{"k": 1}'::jsonb],
			 'happy', '10.1.2.3', '10.0.0.0/8', '1 day 02:00:00', '12:34:56.5', NULL),
			(2, 'us', 0, 0, 'NaN', '-Infinity', -0.01, 0, 'Infinity', false, '', '', '1970-01-01 00:00:00+00',
			 '1999-12-31 23:59:59.999999', '1999-12-31', '-infinity', 'infinity', '00000000-0000-0000-0000-000000000000',
			 '[]', '{}', '', '{}', '{}', '{}', '{}', 'ok', '::1', '::/0', '-3 mons', '00:00', NULL),
			(1, 'eu', 7, 7, 7, 7, 7, 7, 7, true, 'dup', 'dup', now(), now()::timestamp, now()::date, now()::date,
			 now(), gen_random_uuid(), '{}', '{}', '', '{}', '{}', '{}', '{}', 'ok', '::1', '::/0', '0', '00:00', NULL)`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", strings.Fields(sql)[0], err)
		}
	}
	// The third row repeats the first one's key: one document per key, the last row wins; the
	// keyset order puts it... nowhere in particular, so order by a column that makes it last.
	r, err := source.Open(ctx, conn, source.Options{
		Query: `SELECT * FROM src`, Keys: []string{"i2", "id", "region"}, BatchSize: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := r.Read(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := r.ReadRaw(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	render := func(b *batch.Batch) []item {
		s, err := newSink(Target{Index: "x", Key: []string{"id", "region"}, Action: etlv1.ActionIndex},
			Connection{Name: "c", URLs: []string{"http://127.0.0.1:1"}}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Close(context.Background()) }()
		sh, err := s.shapeFor(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.encode(sh, b); err != nil {
			t.Fatalf("encode: %v", err)
		}
		return s.items
	}
	fromDecoded, fromRaw := render(decoded), render(raw)
	if len(fromDecoded) != 2 || len(fromRaw) != 2 {
		t.Fatalf("%d and %d documents, want 2 (rows 1 and 3 share a key)", len(fromDecoded), len(fromRaw))
	}
	for i := range fromDecoded {
		d, r := fromDecoded[i], fromRaw[i]
		if d.id != r.id || string(d.doc) != string(r.doc) {
			t.Errorf("document %d differs:\n decoded %s %s\n     raw %s %s", i, d.id, d.doc, r.id, r.doc)
		}
		if !json.Valid(d.doc) || strings.ContainsAny(string(d.doc), "\n\r") {
			t.Errorf("document %d is not one line of valid JSON: %s", i, d.doc)
		}
	}
	want := map[string]string{
		`[2,"us"]`: `{"id":2,"region":"us","i2":0,"i4":0,"f4":"NaN","f8":"-Infinity","n":-0.01,"nbig":0,"nnan":"Infinity",` +
			`"b":false,"vc":"","bp":"   ","tstz":"1970-01-01T00:00:00Z","ts":"1999-12-31T23:59:59.999999","d":"1999-12-31",` +
			`"dinf":"-infinity","tsinf":"infinity","u":"00000000-0000-0000-0000-000000000000","j":[],"jb":{},"by":"",` +
			`"ia":[],"ta":[],"tsa":[],"ja":[],"m":"ok","ip":"::1","net":"::/0","iv":"-3 mon 00:00:00","tm":"00:00:00.000000","nul":null}`,
		`[1,"eu"]`: `{"id":1,"region":"eu","i2":7,`,
	}
	for _, it := range fromDecoded {
		w, ok := want[it.id]
		if !ok {
			t.Errorf("unexpected _id %s", it.id)
			continue
		}
		if !strings.HasPrefix(string(it.doc), w) {
			t.Errorf("document %s:\n got %s\nwant %s", it.id, it.doc, w)
		}
	}

	// The first row alone, to pin the rendering of every type.
	r, err = source.Open(ctx, conn, source.Options{Query: `SELECT * FROM src WHERE i2 = -2`, Keys: []string{"id", "region"}, BatchSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, readRaw := range []bool{false, true} {
		read := r.Read
		if readRaw {
			read = r.ReadRaw
		}
		b, err := read(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := string(render(b)[0].doc)
		want := `{"id":1,"region":"eu","i2":-2,"i4":40000,"f4":1.5,"f8":0.1,"n":2.50,"nbig":12345678901234567890.123,` +
			`"nnan":"NaN","b":true,"vc":"héllo \"x\"","bp":"ab ","tstz":"2024-03-04T04:06:07.123456Z",` +
			`"ts":"2024-03-04T05:06:07","d":"2024-03-04","dinf":"infinity","tsinf":"-infinity",` +
			`"u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","j":{"a":[1,2]},"jb":{"s": "x", "big": 12345678901234567890},` +
			`"by":"AP8=","ia":[1,null,3],"ta":["a b","c,d"],"tsa":["2024-01-02T03:04:05Z"],"ja":[{"k": 1}],"m":"happy",` +
			`"ip":"10.1.2.3","net":"10.0.0.0/8","iv":"1 day 02:00:00","tm":"12:34:56.500000","nul":null}`
		if got != want {
			t.Errorf("raw %v:\n got %s\nwant %s", readRaw, got, want)
		}
	}
}
