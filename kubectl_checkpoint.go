package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/controllers"
	"github.com/sluice-dev/sluice/runner/source"
)

// kubectlCheckpointOptions are the flags of `checkpoint`.
type kubectlCheckpointOptions struct {
	output  string
	values  []string
	timeout time.Duration
}

func newKubectlCheckpointCmd(o *kubectlOptions) *cobra.Command {
	c := &kubectlCheckpointOptions{}
	cmd := &cobra.Command{
		Use:   "checkpoint NAME | checkpoint reset NAME | checkpoint set NAME --values V,...",
		Short: "Show a pipeline's checkpoint, or reset or set it while the pipeline is Paused",
		Long: `'checkpoint NAME' shows the committed checkpoint (the cursor's and keys' values of the last
committed row), the cursor columns it is on, and the last checkpoint request.

'checkpoint reset NAME' makes the next run read the whole source; 'checkpoint set NAME --values
V1,V2' makes an Incremental pipeline's next run read the rows after (V1, V2): the cursor column's
value, then the key columns'. Both work only while the pipeline is Paused, and are carried out
by the manager and a runner Job, never by the plugin: it writes the ` + etlv1.AnnotationCheckpointRequest + `
annotation with your user name as the API server knows it, which an admission policy checks,
then waits for the outcome in status.checkpointRequest. The values are checked against the
cursor columns' types before anything changes. Exit 1 unless the change was made.`,
		Example: `  kubectl sluice pause orders && kubectl sluice checkpoint reset orders && kubectl sluice resume orders
  kubectl sluice checkpoint set orders --values '2025-06-01 00:00:00+00,52000'`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case len(args) == 1:
				return nil
			case len(args) == 2 && (args[0] == "reset" || args[0] == "set"):
				return nil
			case len(args) == 0:
				return kubectlUsageErrorf("a pipeline NAME is required")
			}
			return kubectlUsageErrorf("usage: checkpoint NAME, checkpoint reset NAME, checkpoint set NAME --values V,...")
		},
		ValidArgsFunction: o.completePipelineNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := kubectlCheckOutput(c.output); err != nil {
				return err
			}
			if len(args) == 1 {
				if len(c.values) > 0 {
					return kubectlUsageErrorf("--values goes with 'checkpoint set'")
				}
				return o.showCheckpoint(cmd.Context(), args[0], c.output)
			}
			req := etlv1.CheckpointRequest{Action: etlv1.CheckpointReset}
			switch {
			case args[0] == "set" && len(c.values) == 0:
				return kubectlUsageErrorf("checkpoint set needs --values: the cursor column's value, then the key columns'")
			case args[0] == "set":
				req.Action, req.Values = etlv1.CheckpointSet, c.values
			case len(c.values) > 0:
				return kubectlUsageErrorf("checkpoint reset takes no --values")
			}
			if c.timeout <= 0 {
				return kubectlUsageErrorf("--timeout must be positive, got %s", c.timeout)
			}
			return o.requestCheckpoint(cmd.Context(), args[1], req, c.timeout)
		},
	}
	cmd.Flags().StringVarP(&c.output, "output", "o", "", "output format of 'checkpoint NAME': json or yaml")
	cmd.Flags().StringSliceVar(&c.values, "values", nil, "the checkpoint of 'checkpoint set': the cursor column's value, then the key columns', comma-separated")
	cmd.Flags().DurationVar(&c.timeout, "timeout", 2*time.Minute, "how long to wait for the manager to carry the request out")
	return cmd
}

// kubectlCheckpoint is what `checkpoint NAME -o` prints.
type kubectlCheckpoint struct {
	Namespace string                         `json:"namespace"`
	Name      string                         `json:"name"`
	Columns   []string                       `json:"columns"`
	Committed *etlv1.CheckpointStatus        `json:"committed,omitempty"`
	Request   *etlv1.CheckpointRequestStatus `json:"lastRequest,omitempty"`
}

// kubectlCheckpointColumns are the columns a pipeline's checkpoint is on, the reader's keyset
// order: the cursor (Incremental), then the keys.
func kubectlCheckpointColumns(p *etlv1.ETLPipeline) []string {
	cur := p.Spec.Source.Cursor
	if p.Spec.Mode != etlv1.ModeIncremental {
		return source.Order("", cur.KeyColumns)
	}
	return source.Order(cur.Column, cur.KeyColumns)
}

func (o *kubectlOptions) showCheckpoint(ctx context.Context, name, output string) error {
	_, p, err := o.getPipeline(ctx, name)
	if err != nil {
		return err
	}
	out := kubectlCheckpoint{Namespace: p.Namespace, Name: p.Name, Columns: kubectlCheckpointColumns(p),
		Committed: p.Status.Checkpoint, Request: p.Status.CheckpointRequest}
	if output != "" {
		return kubectlPrintObject(o.stdout, output, out)
	}
	return o.writeCheckpoint(o.stdout, p, out)
}

func (o *kubectlOptions) writeCheckpoint(w io.Writer, p *etlv1.ETLPipeline, c kubectlCheckpoint) error {
	fmt.Fprintf(w, "ETLPipeline %s/%s (%s, phase %s)\n", p.Namespace, p.Name, p.Spec.Mode, kubectlOr(string(p.Status.Phase)))
	fmt.Fprintf(w, "Columns:      %s\n", strings.Join(c.Columns, ", "))
	if cp := c.Committed; cp != nil && len(cp.Values) > 0 {
		fmt.Fprintf(w, "Checkpoint:   %s (committed %s)\n", strings.Join(cp.Values, ", "), kubectlAgo(cp.Time, o.now()))
	} else {
		fmt.Fprintf(w, "Checkpoint:   %s (the next run reads from the start)\n", kubectlNone)
	}
	if r := c.Request; r != nil {
		fmt.Fprintf(w, "Last request: %s %s by %s, %s %s", strings.ToLower(string(r.Action)), strings.Join(r.Values, ", "),
			kubectlOr(r.RequestedBy), r.Outcome, kubectlAgo(r.Time, o.now()))
		if r.Message != "" {
			fmt.Fprintf(w, ": %s", r.Message)
		}
		fmt.Fprintln(w)
	}
	return nil
}

// whoami returns the user the API server authenticates the plugin's requests as.
func (o *kubectlOptions) whoami(ctx context.Context, c *kubectlClients) (string, error) {
	r, err := c.kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("ask the API server who you are (SelfSubjectReview): %w", err)
	}
	return r.Status.UserInfo.Username, nil
}

// requestCheckpoint writes a checkpoint request and waits for its outcome.
func (o *kubectlOptions) requestCheckpoint(ctx context.Context, name string, req etlv1.CheckpointRequest, timeout time.Duration) error {
	c, p, err := o.getPipeline(ctx, name)
	if err != nil {
		return err
	}
	if why := controllers.CheckpointRefusal(p, req); why != "" {
		return fmt.Errorf("refused: ETLPipeline %s/%s: %s", p.Namespace, p.Name, why)
	}
	user, err := o.whoami(ctx, c)
	if err != nil {
		return err
	}
	last := ""
	if p.Status.CheckpointRequest != nil {
		last = p.Status.CheckpointRequest.ID
	}
	req.ID = kubectlRunRequestValue(o.now(), last)
	raw, err := json.Marshal(req)
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		etlv1.AnnotationCheckpointRequest: string(raw), etlv1.AnnotationCheckpointRequestedBy: user}}})
	if err != nil {
		return err
	}
	if err := o.mergePatch(ctx, c, p, patch); err != nil {
		return err
	}
	fmt.Fprintf(o.stderr, "checkpoint %s of ETLPipeline %s/%s requested as %s (request %s); waiting for the manager\n",
		strings.ToLower(string(req.Action)), p.Namespace, p.Name, user, req.ID)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if err := c.client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, p); err != nil {
			return kubectlAPIError(err, p.Namespace, p.Name)
		}
		if r := p.Status.CheckpointRequest; r != nil && r.ID == req.ID && r.Outcome != etlv1.CheckpointPending {
			if r.Outcome != etlv1.CheckpointDone {
				return fmt.Errorf("%s: ETLPipeline %s/%s: %s", strings.ToLower(string(r.Outcome)), p.Namespace, p.Name, r.Message)
			}
			fmt.Fprintf(o.stdout, "ETLPipeline %s/%s: %s (as %s asked); resume it to run from there.\n", p.Namespace, p.Name, r.Message, r.RequestedBy)
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("the request was not carried out within %s (see 'kubectl sluice status %s')", timeout, p.Name)
			}
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
