package runner

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
)

func TestCheckpointRedacted(t *testing.T) {
	spec := func(target string) string { return `{"mode":"Incremental","target":{"name":"` + target + `"}}` }
	withTargets := func(targets ...string) *configv1.OperatorConfig {
		return &configv1.OperatorConfig{Redaction: configv1.Redaction{CheckpointTargets: targets}}
	}
	cases := []struct {
		name string
		cfg  *configv1.OperatorConfig
		spec string
		want bool
	}{
		{"no configuration", nil, spec("analytics.users"), false},
		{"nothing redacted", withTargets(), spec("analytics.users"), false},
		{"the pipeline's table", withTargets("analytics.users"), spec("analytics.users"), true},
		{"another table", withTargets("analytics.users"), spec("analytics.orders"), false},
		{"an index", withTargets("es:customers"), spec("es:customers"), true},
		{"a table named like the index", withTargets("es:customers"), spec("analytics.customers"), false},
		{"every target", withTargets("*"), spec("analytics.orders"), true},
		{"every target, a snapshot that does not parse", withTargets("*"), "{", true},
		{"a snapshot that does not parse names no target", withTargets("analytics.users"), "{", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := CheckpointRedacted(tc.cfg, tc.spec); got != tc.want {
				t.Fatalf("CheckpointRedacted = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRedactLog(t *testing.T) {
	var buf bytes.Buffer
	log := RedactLog(slog.New(slog.NewJSONHandler(&buf, nil))).With("pipeline", "tenant/users")
	log.Info("progress", "rowsRead", 10, "checkpoint", []string{"2024-01-01 00:00:00Z", "42"})
	log.Info("no checkpoint: reading from the start", "checkpoint", []string(nil))
	log.Info("read horizon", "horizon", "2024-05-01 10:00:00Z", "empty", false)
	log.Info("read horizon", "horizon", "", "empty", true)
	log.Warn("infrastructure error, retrying the batch from the checkpoint",
		"error", `write to es:c: index c, _id "42": status 429`, "retry", 1)
	log.Error("run failed", slog.Group("cause", "error", errors.New("source row (id=42) has a NULL cursor column")))
	want := []string{
		`{"level":"INFO","msg":"progress","pipeline":"tenant/users","rowsRead":10,"checkpoint":["****","****"]}`,
		`{"level":"INFO","msg":"no checkpoint: reading from the start","pipeline":"tenant/users","checkpoint":null}`,
		`{"level":"INFO","msg":"read horizon","pipeline":"tenant/users","horizon":"****","empty":false}`,
		`{"level":"INFO","msg":"read horizon","pipeline":"tenant/users","horizon":"","empty":true}`,
		`{"level":"WARN","msg":"infrastructure error, retrying the batch from the checkpoint","pipeline":"tenant/users","error":"write to es:c: index c, _id \"****\": status 429","retry":1}`,
		`{"level":"ERROR","msg":"run failed","pipeline":"tenant/users","cause":{"error":"source row (id=****) has a NULL cursor column"}}`,
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, line := range lines {
		// Drop the time, the one field that differs between runs.
		if j := strings.Index(line, `"level"`); j > 0 {
			line = "{" + line[j:]
		}
		if line != want[i] {
			t.Errorf("line %d\n got %s\nwant %s", i+1, line, want[i])
		}
	}
}

// A redacted run names the failing row by its key columns only, in the status, the log and
// the termination message; an unredacted one names the key value, which is allowed.
func TestRedactedRunFailureNamesNoKeyValue(t *testing.T) {
	for _, redact := range []bool{false, true} {
		t.Run(map[bool]string{false: "not redacted", true: "redacted"}[redact], func(t *testing.T) {
			db := newTestDB(t, "main")
			createSource(t, db, 100)
			createTarget(t, db, "items")
			db.exec(t, `ALTER TABLE src ALTER COLUMN updated_at DROP NOT NULL`)
			db.exec(t, `UPDATE src SET updated_at = NULL WHERE id = 77`)
			cfg := testConfig(db)
			if redact {
				cfg.Redaction.CheckpointTargets = []string{"analytics.items"}
			}
			r := &inProcess{cfg: cfg, env: envOf(db), spec: specJSON(t, specOpts{sourceConn: "main", batch: 10}),
				termination: filepath.Join(t.TempDir(), "termination-log")}
			res := r.run(t)
			requireOutcome(t, res, OutcomeFailed, configv1.ExitBusiness)
			termination, err := os.ReadFile(r.termination)
			if err != nil {
				t.Fatal(err)
			}
			want := "source row (id=77) has a NULL cursor column updated_at"
			if redact {
				want = "source row (id=****) has a NULL cursor column updated_at"
			}
			for where, text := range map[string]string{"result": res.Message, "status": r.rep.lastEnd(t).Message,
				"termination message": string(termination)} {
				if !strings.Contains(text, want) {
					t.Errorf("%s: %q, want %q", where, text, want)
				}
			}
		})
	}
}
