package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// kubectlRejectsOptions are the flags of `rejects`.
type kubectlRejectsOptions struct {
	output string
	replay bool
}

func newKubectlRejectsCmd(o *kubectlOptions) *cobra.Command {
	r := &kubectlRejectsOptions{}
	cmd := &cobra.Command{
		Use:   "rejects NAME",
		Short: "List a pipeline's rejected rows, or replay them (--replay)",
		Long: `Show how many rows of the pipeline are in etl.etl_rejects as its last run ended, and the
newest of them from status.recentRejects: the row's key, the stage that refused it, the error
class and the message. The state database's view etl.rejects lists them all, with the rows.

With --replay, request a run that reads the rejected rows again through the current spec (the
annotation ` + etlv1.AnnotationReplayRejectsRequestedAt + `): the rows that pass are written and
leave etl.etl_rejects, the others stay.`,
		Example: `  kubectl sluice rejects -n team-a orders
  kubectl sluice rejects orders -o yaml
  kubectl sluice rejects orders --replay`,
		Args:              kubectlPipelineArg,
		ValidArgsFunction: o.completePipelineNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := kubectlCheckOutput(r.output); err != nil {
				return err
			}
			if r.replay && r.output != "" {
				return kubectlUsageErrorf("--replay and -o do not go together")
			}
			return o.rejects(cmd.Context(), args[0], r)
		},
	}
	cmd.Flags().StringVarP(&r.output, "output", "o", "", "output format: json or yaml (default a table)")
	cmd.Flags().BoolVar(&r.replay, "replay", false, "request a run that replays the rejected rows")
	return cmd
}

// kubectlRejects is what `rejects -o` prints.
type kubectlRejects struct {
	Namespace  string                `json:"namespace"`
	Name       string                `json:"name"`
	Unresolved int64                 `json:"unresolved"`
	Recent     []etlv1.RejectSummary `json:"recent"`
}

func (o *kubectlOptions) rejects(ctx context.Context, name string, r *kubectlRejectsOptions) error {
	c, p, err := o.getPipeline(ctx, name)
	if err != nil {
		return err
	}
	if r.replay {
		value := kubectlRunRequestValue(o.now(), p.Annotations[etlv1.AnnotationReplayRejectsRequestedAt])
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
			etlv1.AnnotationReplayRejectsRequestedAt: value}}})
		if err != nil {
			return err
		}
		if err := o.mergePatch(ctx, c, p, patch); err != nil {
			return err
		}
		fmt.Fprintf(o.stdout, "ETLPipeline %s/%s: %s=%s; %s\n", p.Namespace, p.Name, etlv1.AnnotationReplayRejectsRequestedAt, value,
			kubectlRunEffect(p))
		return nil
	}
	if r.output != "" {
		out := kubectlRejects{Namespace: p.Namespace, Name: p.Name, Unresolved: p.Status.UnresolvedRejects, Recent: p.Status.RecentRejects}
		if out.Recent == nil {
			out.Recent = []etlv1.RejectSummary{}
		}
		return kubectlPrintObject(o.stdout, r.output, out)
	}
	return o.writeRejects(o.stdout, p)
}

// writeRejects writes the table of a pipeline's newest rejects.
func (o *kubectlOptions) writeRejects(w io.Writer, p *etlv1.ETLPipeline) error {
	st := p.Status
	if st.UnresolvedRejects == 0 {
		_, err := fmt.Fprintf(w, "ETLPipeline %s/%s has no rejected rows (as its last run ended).\n", p.Namespace, p.Name)
		return err
	}
	fmt.Fprintf(w, "ETLPipeline %s/%s: %d rows in etl.etl_rejects as its last run ended; the newest %d:\n\n",
		p.Namespace, p.Name, st.UnresolvedRejects, len(st.RecentRejects))
	rows := make([][]string, 0, len(st.RecentRejects))
	for _, rj := range st.RecentRejects {
		rows = append(rows, []string{rj.Key, rj.Stage, rj.Class, rj.RunID, kubectlAge(rj.Time, o.now()),
			strconv.Itoa(int(rj.Attempts)), kubectlOneLine(rj.Message, 100)})
	}
	if err := kubectlWriteTable(w, []string{"KEY", "STAGE", "CLASS", "RUN", "AGE", "ATTEMPTS", "MESSAGE"}, rows); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nAll of them, with the rows: SELECT * FROM etl.rejects WHERE namespace = '%s' AND name = '%s';\n"+
		"Replay them once the cause is fixed: kubectl sluice rejects -n %s %s --replay\n", p.Namespace, p.Name, p.Namespace, p.Name)
	return err
}

// kubectlOneLine puts a message on one line and cuts it at n characters.
func kubectlOneLine(s string, n int) string {
	r := []rune(strings.Join(strings.Fields(s), " "))
	if len(r) <= n {
		return string(r)
	}
	return string(r[:n-3]) + "..."
}
