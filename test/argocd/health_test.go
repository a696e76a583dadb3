// Package argocd tests the Argo CD health check of config/argocd by running its Lua, as Argo CD
// does, against ETLPipeline objects.
package argocd

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"

	"github.com/sluice-dev/sluice/test/testenv"
)

// health runs the check with `obj` bound to the object, as Argo CD does, and returns the
// status and message of the table it returns.
func health(t *testing.T, script string, obj map[string]any) (string, string) {
	t.Helper()
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		t.Fatalf("run health.lua: %v", err)
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("health.lua returned %s, want a table", L.Get(-1).Type())
	}
	return ret.RawGetString("status").String(), ret.RawGetString("message").String()
}

func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case map[string]any:
		tbl := L.NewTable()
		for k, e := range x {
			tbl.RawSetString(k, toLua(L, e))
		}
		return tbl
	case []any:
		tbl := L.NewTable()
		for _, e := range x {
			tbl.Append(toLua(L, e))
		}
		return tbl
	case string:
		return lua.LString(x)
	case float64:
		return lua.LNumber(x)
	case bool:
		return lua.LBool(x)
	default:
		return lua.LNil
	}
}

func loadScript(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "argocd", "health.lua"))
	if err != nil {
		t.Fatalf("read health.lua: %v", err)
	}
	return string(b)
}

func pipeline(t *testing.T, generation int, status string) map[string]any {
	t.Helper()
	doc := fmt.Sprintf(`{"apiVersion":"etl.sluice.dev/v1alpha1","kind":"ETLPipeline","metadata":{"name":"p","generation":%d}`, generation)
	if status != "" {
		doc += `,"status":` + status
	}
	doc += `}`
	var obj map[string]any
	if err := json.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	return obj
}

func TestHealthMapsEveryPhase(t *testing.T) {
	script := loadScript(t)
	ready := `{"type":"Ready","status":"True","reason":"Succeeded","message":"last run wrote 100 rows"}`
	notReady := func(reason string) string {
		return `{"type":"Ready","status":"False","reason":"` + reason + `","message":"` + reason + ` happened"}`
	}
	stalled := `{"type":"Stalled","status":"True","reason":"TargetNotAllowed","message":"target analytics.x is not in the whitelist"}`
	cases := []struct {
		name, status, want, wantMessage string
		generation                      int
	}{
		{name: "no status yet", want: "Progressing", generation: 1},
		{name: "idle and ready", status: `{"phase":"Idle","observedGeneration":1,"conditions":[` + ready + `]}`, want: "Healthy", wantMessage: "last run wrote 100 rows", generation: 1},
		{name: "idle but not observed the new generation", status: `{"phase":"Idle","observedGeneration":1,"conditions":[` + ready + `]}`, want: "Progressing", generation: 2},
		{name: "idle, Ready unknown", status: `{"phase":"Idle","observedGeneration":1,"conditions":[{"type":"Ready","status":"Unknown","reason":"Progressing"}]}`, want: "Progressing", generation: 1},
		{name: "run requested", status: `{"phase":"RunRequested","observedGeneration":1,"conditions":[` + notReady("RunRequested") + `]}`, want: "Progressing", generation: 1},
		{name: "running", status: `{"phase":"Running","observedGeneration":1,"conditions":[{"type":"Reconciling","status":"True","reason":"Running","message":"batch 3"}]}`, want: "Progressing", wantMessage: "batch 3", generation: 1},
		{name: "pause requested", status: `{"phase":"PauseRequested","observedGeneration":1}`, want: "Progressing", generation: 1},
		{name: "paused", status: `{"phase":"Paused","observedGeneration":1}`, want: "Suspended", generation: 1},
		{name: "paused, new generation still suspended", status: `{"phase":"Paused","observedGeneration":1}`, want: "Suspended", generation: 2},
		{name: "failed run", status: `{"phase":"Failed","observedGeneration":1,"run":{"id":"1","message":"column \"x\" does not exist"},"conditions":[` + notReady("RunFailed") + `]}`, want: "Degraded", wantMessage: `column "x" does not exist`, generation: 1},
		{name: "target not allowed", status: `{"phase":"Failed","observedGeneration":1,"conditions":[` + notReady("TargetNotAllowed") + `,` + stalled + `]}`, want: "Degraded", wantMessage: "target analytics.x is not in the whitelist", generation: 1},
		{name: "stalled whatever the phase", status: `{"phase":"Idle","observedGeneration":1,"conditions":[` + stalled + `]}`, want: "Degraded", generation: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, msg := health(t, script, pipeline(t, tc.generation, tc.status))
			if got != tc.want {
				t.Errorf("health = %s (%s), want %s", got, msg, tc.want)
			}
			if tc.wantMessage != "" && msg != tc.wantMessage {
				t.Errorf("message = %q, want %q", msg, tc.wantMessage)
			}
		})
	}
}

// The ConfigMap snippet users paste must carry exactly the tested script.
func TestConfigMapEmbedsTheTestedScript(t *testing.T) {
	script := loadScript(t)
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "argocd", "argocd-cm.yaml"))
	if err != nil {
		t.Fatalf("read argocd-cm.yaml: %v", err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatalf("parse argocd-cm.yaml: %v", err)
	}
	embedded, ok := cm.Data["resource.customizations.health.etl.sluice.dev_ETLPipeline"]
	if !ok {
		t.Fatalf("argocd-cm.yaml lacks the health key; keys: %v", cm.Data)
	}
	if strings.TrimSpace(embedded) != strings.TrimSpace(script) {
		t.Error("argocd-cm.yaml does not embed config/argocd/health.lua verbatim; regenerate it")
	}
}
