package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// kubectlNone is what a table shows for a value that is not there, as kubectl does.
const kubectlNone = "<none>"

// kubectlOutputFormats are the values of -o.
var kubectlOutputFormats = []string{"json", "yaml"}

// kubectlCheckOutput returns a usage error unless format is "" or one of kubectlOutputFormats.
func kubectlCheckOutput(format string) error {
	if format == "" {
		return nil
	}
	for _, f := range kubectlOutputFormats {
		if format == f {
			return nil
		}
	}
	return kubectlUsageErrorf("unsupported output format %q: json or yaml", format)
}

// kubectlPrintObject writes obj as JSON or YAML, as `kubectl get -o` does.
func kubectlPrintObject(w io.Writer, format string, obj any) error {
	var (
		out []byte
		err error
	)
	switch format {
	case "json":
		out, err = json.MarshalIndent(obj, "", "    ")
		out = append(out, '\n')
	case "yaml":
		out, err = yaml.Marshal(obj)
	default:
		return kubectlUsageErrorf("unsupported output format %q: json or yaml", format)
	}
	if err != nil {
		return fmt.Errorf("encode as %s: %w", format, err)
	}
	_, err = w.Write(out)
	return err
}

// kubectlForOutput returns p as `kubectl get -o` shows it: with its kind, without the
// managed fields.
func kubectlForOutput(p *etlv1.ETLPipeline) *etlv1.ETLPipeline {
	out := p.DeepCopy()
	out.APIVersion, out.Kind = etlv1.GroupVersion.String(), "ETLPipeline"
	out.ManagedFields = nil
	return out
}

// kubectlWriteTable writes rows under header in aligned columns, as kubectl's tables are.
func kubectlWriteTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	for _, r := range append([][]string{header}, rows...) {
		if _, err := fmt.Fprintln(tw, strings.Join(r, "\t")); err != nil {
			return err
		}
	}
	return tw.Flush()
}

// kubectlAge is how long ago t was, the way kubectl writes ages ("5m", "3h12m", "2d").
func kubectlAge(t *metav1.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return kubectlNone
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

// kubectlAgo is kubectlAge followed by " ago".
func kubectlAgo(t *metav1.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return kubectlNone
	}
	return kubectlAge(t, now) + " ago"
}

// kubectlUntil is how long until t ("in 4m"), or "due" once t has passed.
func kubectlUntil(t *metav1.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return kubectlNone
	}
	if d := t.Sub(now); d > 0 {
		return "in " + duration.HumanDuration(d)
	}
	return "due"
}

// kubectlTimestamp is t in RFC 3339 with how long ago it was: "2025-06-01T10:00:00Z (5m ago)".
func kubectlTimestamp(t *metav1.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return kubectlNone
	}
	return fmt.Sprintf("%s (%s)", t.UTC().Format(time.RFC3339), kubectlAgo(t, now))
}

// kubectlDuration writes a run's length rounded to the second ("12s", "3m4s").
func kubectlDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second).String()
}

// kubectlOr returns s, or kubectlNone when it is empty.
func kubectlOr(s string) string {
	if s == "" {
		return kubectlNone
	}
	return s
}
