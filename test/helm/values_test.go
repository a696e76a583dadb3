package helm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
)

func TestChartLintsStrictly(t *testing.T) {
	for _, set := range [][]string{nil, everythingOn} {
		args := []string{"lint", "--strict", chartDir(), "--namespace", namespace}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		out, err := helmCmd(t, args...)
		if err != nil {
			t.Errorf("%v\n%s", err, out)
		}
	}
}

// TestValuesTyposAreRejectedNamingTheKey: values.schema.json closes every object it defines,
// so a misspelt key fails template and lint (and install and upgrade) instead of being ignored.
func TestValuesTyposAreRejectedNamingTheKey(t *testing.T) {
	for _, tc := range []struct{ set, at, key string }{
		{"manger.replicas=2", "at ''", "'manger'"},
		{"manager.replica=2", "at '/manager'", "'replica'"},
		{"image.pullpolicy=Always", "at '/image'", "'pullpolicy'"},
		{"config.runner.strtDeadline=1m", "at '/config/runner'", "'strtDeadline'"},
		{"config.postgres[0].name=warehouse,config.postgres[0].dsnSecret.name=w,config.postgres[0].dsnSecret.key=dsn,config.postgres[0].namespace=team-a", "at '/config/postgres/0'", "'namespace'"},
		{"config.allowedTargets.postgresTable=analytics.x", "at '/config/allowedTargets'", "'postgresTable'"},
		{"metrics.podMonitor.enable=true", "at '/metrics/podMonitor'", "'enable'"},
		{"networkPolicy.runner.enabeld=true", "at '/networkPolicy/runner'", "'enabeld'"},
	} {
		for _, verb := range []string{"template", "lint"} {
			args := []string{verb}
			if verb == "template" {
				args = append(args, release)
			}
			// helm lint reports on stdout, helm template on stderr.
			out, err := helmCmd(t, append(args, chartDir(), "--set", tc.set)...)
			if err == nil {
				t.Errorf("helm %s --set %s: accepted", verb, tc.set)
				continue
			}
			msg := out + err.Error()
			if !strings.Contains(msg, tc.at) || !strings.Contains(msg, "additional properties "+tc.key+" not allowed") {
				t.Errorf("helm %s --set %s: the error does not name %s %s: %v", verb, tc.set, tc.key, tc.at, err)
			}
		}
	}
}

// schemaNode is the part of a JSON schema the checks below read.
type schemaNode struct {
	Ref                  string                 `json:"$ref"`
	Type                 any                    `json:"type"`
	Properties           map[string]*schemaNode `json:"properties"`
	AdditionalProperties any                    `json:"additionalProperties"`
	Items                *schemaNode            `json:"items"`
	Definitions          map[string]*schemaNode `json:"definitions"`
}

func loadSchema(t *testing.T) *schemaNode {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(), "values.schema.json")) // #nosec G304 -- the chart's own file
	if err != nil {
		t.Fatal(err)
	}
	var s schemaNode
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	return &s
}

// resolve follows a local $ref into the definitions.
func (s *schemaNode) resolve(root *schemaNode) *schemaNode {
	for s != nil && s.Ref != "" {
		s = root.Definitions[strings.TrimPrefix(s.Ref, "#/definitions/")]
	}
	return s
}

// TestSchemaClosesEveryObjectItDefines: wherever the schema lists an object's properties, it
// refuses any other (objects it passes through, such as a Kubernetes affinity, list none).
func TestSchemaClosesEveryObjectItDefines(t *testing.T) {
	root := loadSchema(t)
	var walk func(path string, s *schemaNode)
	walk = func(path string, s *schemaNode) {
		if s == nil {
			return
		}
		if len(s.Properties) > 0 && s.AdditionalProperties != false {
			t.Errorf("%s: lists properties but does not set additionalProperties: false", path)
		}
		for _, k := range sortedKeys(s.Properties) {
			walk(path+"."+k, s.Properties[k])
		}
		walk(path+"[]", s.Items)
		if m, ok := s.AdditionalProperties.(map[string]any); ok && len(m) > 0 && m["type"] == nil && m["$ref"] == nil {
			t.Errorf("%s: additionalProperties is a schema without a type", path)
		}
	}
	walk("values", root)
	for _, k := range sortedKeys(root.Definitions) {
		walk("definitions."+k, root.Definitions[k])
	}
}

// chartSetFields are the fields of the operator configuration that the chart sets itself, or
// that the manager no longer reads: the schema leaves them out.
var chartSetFields = []string{"apiVersion", "kind", "runner.configMapName", "runner.configMapKey", "runner.serviceAccountName"}

// TestSchemaCoversTheOperatorConfiguration: values.config has exactly the fields of
// OperatorConfig (api/config/v1alpha1), so a field added there cannot be forgotten in the
// chart, and the schema offers none that the manager would refuse.
func TestSchemaCoversTheOperatorConfiguration(t *testing.T) {
	root := loadSchema(t)
	var walk func(path string, typ reflect.Type, s *schemaNode)
	walk = func(path string, typ reflect.Type, s *schemaNode) {
		s = s.resolve(root)
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if s == nil || (len(s.Properties) == 0 && s.Items == nil) {
			// A scalar (a duration, a quantity) or an object passed through as it is.
			return
		}
		switch typ.Kind() {
		case reflect.Slice:
			walk(path+"[]", typ.Elem(), s.Items)
		case reflect.Struct:
			fields := jsonFields(typ)
			for name, ft := range fields {
				p := strings.TrimPrefix(path+"."+name, "config.")
				if slices.Contains(chartSetFields, p) {
					if _, ok := s.Properties[name]; ok {
						t.Errorf("values.schema.json offers %s, which the chart sets itself", path+"."+name)
					}
					continue
				}
				sub, ok := s.Properties[name]
				if !ok {
					t.Errorf("values.schema.json lacks %s (a field of %s)", path+"."+name, typ)
					continue
				}
				walk(path+"."+name, ft, sub)
			}
			for _, name := range sortedKeys(s.Properties) {
				if _, ok := fields[name]; !ok {
					t.Errorf("values.schema.json offers %s, which %s does not have", path+"."+name, typ)
				}
			}
		}
	}
	walk("config", reflect.TypeFor[configv1.OperatorConfig](), root.Properties["config"])
}

// jsonFields returns the JSON names of a struct's fields, inline structs flattened.
func jsonFields(typ reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if name == "" && (f.Anonymous || strings.Contains(opts, "inline")) {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
