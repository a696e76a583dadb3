package helm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/sluice-dev/sluice/test/testenv"
)

const (
	// release and namespace render the chart under the names config/default uses: release
	// "sluice" names every object as kustomize does.
	release   = "sluice"
	namespace = "sluice-system"
)

// chartDir is the chart under test.
func chartDir() string { return filepath.Join(testenv.RepoRoot(), "config", "helm", "sluice") }

// helmCmd runs the real helm with its home directories in a temporary directory, and returns
// stdout, and stderr in the error.
func helmCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := testenv.Helm(t)
	cmd := exec.Command(bin, args...) // #nosec G204 -- the test bed's own helm
	cmd.Env = testenv.HelmEnv(t.TempDir())
	cmd.Dir = testenv.RepoRoot()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// helmTemplate renders the chart (its CRD included) with the --set values given.
func helmTemplate(t *testing.T, set ...string) string {
	t.Helper()
	args := []string{"template", release, chartDir(), "--namespace", namespace, "--include-crds"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := helmCmd(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// kustomize builds a kustomize directory of config/ with the real kubectl.
func kustomize(t *testing.T, dir string) string {
	t.Helper()
	kubectl := testenv.Kubectl(t)
	cmd := exec.Command(kubectl, "kustomize", filepath.Join(testenv.RepoRoot(), "config", dir)) // #nosec G204 -- the test bed's own kubectl
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl kustomize config/%s: %v: %s", dir, err, stderr.String())
	}
	return stdout.String()
}

// readConfig returns a file of config/.
func readConfig(t *testing.T, parts ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{testenv.RepoRoot(), "config"}, parts...)...)) // #nosec G304 -- the repository's own files
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// decode splits a multi-document YAML stream into objects, skipping empty documents.
func decode(t *testing.T, what, stream string) []*unstructured.Unstructured {
	t.Helper()
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		err := d.Decode(&m)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("decode %s: %v", what, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// key names an object by group, kind, namespace and name.
func key(o *unstructured.Unstructured) string {
	gvk := o.GroupVersionKind()
	ns := o.GetNamespace()
	if ns != "" {
		ns += "/"
	}
	return fmt.Sprintf("%s %s.%s", gvk.Kind, ns+o.GetName(), gvk.Group)
}

// byKey indexes objects by key, failing on a duplicate.
func byKey(t *testing.T, what string, objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	t.Helper()
	m := make(map[string]*unstructured.Unstructured, len(objs))
	for _, o := range objs {
		k := key(o)
		if _, dup := m[k]; dup {
			t.Fatalf("%s renders %s twice", what, k)
		}
		m[k] = o
	}
	return m
}

// sortedKeys returns the keys of a map in order.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// diffs lists the paths where a and b differ, with both values, at most limit of them.
func diffs(path string, a, b any, limit int) []string {
	if reflect.DeepEqual(a, b) {
		return nil
	}
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		keys := map[string]bool{}
		for k := range av {
			keys[k] = true
		}
		for k := range bv {
			keys[k] = true
		}
		var out []string
		for _, k := range sortedKeys(keys) {
			out = append(out, diffs(path+"."+k, av[k], bv[k], limit-len(out))...)
			if len(out) >= limit {
				return out[:limit]
			}
		}
		return out
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			break
		}
		var out []string
		for i := range av {
			out = append(out, diffs(fmt.Sprintf("%s[%d]", path, i), av[i], bv[i], limit-len(out))...)
			if len(out) >= limit {
				return out[:limit]
			}
		}
		return out
	}
	return []string{fmt.Sprintf("%s: chart %s, kustomize %s", path, show(a), show(b))}
}

// show prints a value of a decoded object briefly.
func show(v any) string {
	if v == nil {
		return "<absent>"
	}
	s := fmt.Sprintf("%v", v)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
