package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// Where Argo CD records that it manages a resource. Label tracking (the default before Argo CD
// 3.0) writes app.kubernetes.io/instance, which Helm charts set too; installations often move
// it to argocd.argoproj.io/instance; annotation tracking writes argocd.argoproj.io/tracking-id.
const (
	argoCDTrackingIDAnnotation = "argocd.argoproj.io/tracking-id"
	argoCDInstanceKey          = "argocd.argoproj.io/instance"
	argoCDLegacyInstanceLabel  = "app.kubernetes.io/instance"
)

// kubectlArgoCD says which Argo CD Application tracks a pipeline, and by what.
type kubectlArgoCD struct {
	// App is the Application's name (with its namespace as `ns_app` for an Application
	// outside Argo CD's namespace, as Argo CD writes it).
	App string
	// By names the label or annotation it was found in.
	By string
	// Certain is false for app.kubernetes.io/instance alone, which Helm sets as well.
	Certain bool
}

func (t kubectlArgoCD) describe() string {
	if t.Certain {
		return fmt.Sprintf("tracked by Application %q (%s)", t.App, t.By)
	}
	return fmt.Sprintf("probably tracked by Application %q (%s, Argo CD's default tracking label; Helm sets it too)", t.App, t.By)
}

// kubectlArgoCDTracking finds the marks Argo CD leaves on the resources it syncs.
func kubectlArgoCDTracking(obj metav1.Object) (kubectlArgoCD, bool) {
	annotations, labels := obj.GetAnnotations(), obj.GetLabels()
	// <app>:<group>/<kind>:<namespace>/<name>
	if id := annotations[argoCDTrackingIDAnnotation]; id != "" {
		app, _, _ := strings.Cut(id, ":")
		return kubectlArgoCD{App: app, By: "annotation " + argoCDTrackingIDAnnotation, Certain: true}, true
	}
	if app := labels[argoCDInstanceKey]; app != "" {
		return kubectlArgoCD{App: app, By: "label " + argoCDInstanceKey, Certain: true}, true
	}
	if app := annotations[argoCDInstanceKey]; app != "" {
		return kubectlArgoCD{App: app, By: "annotation " + argoCDInstanceKey, Certain: true}, true
	}
	if app := labels[argoCDLegacyInstanceLabel]; app != "" {
		return kubectlArgoCD{App: app, By: "label " + argoCDLegacyInstanceLabel}, true
	}
	return kubectlArgoCD{}, false
}

// kubectlArgoCDWarning tells the user that Argo CD may undo the change of desiredState to
// `to`, and how to make it last.
func kubectlArgoCDWarning(p *etlv1.ETLPipeline, t kubectlArgoCD, to etlv1.DesiredState) string {
	undo := "the pipeline resumes"
	if to == etlv1.DesiredRunning {
		undo = "the pipeline pauses again"
	}
	return fmt.Sprintf(`Warning: ETLPipeline %s/%s is %s.
  If the Application has self-heal on, Argo CD puts spec.desiredState back to the value in Git
  within seconds, and %s. To make desiredState: %s last, commit it to Git, or let the
  cluster own the field (ignoreDifferences on /spec/desiredState with
  RespectIgnoreDifferences=true), or turn self-heal off for the Application.
`, p.Namespace, p.Name, t.describe(), undo, to)
}

func newKubectlPauseCmd(o *kubectlOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "pause NAME",
		Short: "Pause a pipeline: spec.desiredState Paused",
		Long: `Set spec.desiredState to Paused (a JSON merge patch). A run in flight stops after its
current batch, at a committed checkpoint; no new run starts until 'resume'.

A pipeline synced by Argo CD gets a warning on stderr: with self-heal on, Argo CD puts Git's
desiredState back unless the change is committed to Git or the field is ignored.`,
		Example:           `  kubectl sluice pause -n team-a orders-to-analytics`,
		Args:              kubectlPipelineArg,
		ValidArgsFunction: o.completePipelineNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.setDesiredState(cmd.Context(), args[0], etlv1.DesiredPaused)
		},
	}
}

func newKubectlResumeCmd(o *kubectlOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "resume NAME",
		Short: "Resume a paused pipeline: spec.desiredState Running",
		Long: `Set spec.desiredState to Running (a JSON merge patch). A paused pipeline starts a run that
continues from its checkpoint.

A pipeline synced by Argo CD gets a warning on stderr, as for 'pause'.`,
		Example:           `  kubectl sluice resume -n team-a orders-to-analytics`,
		Args:              kubectlPipelineArg,
		ValidArgsFunction: o.completePipelineNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.setDesiredState(cmd.Context(), args[0], etlv1.DesiredRunning)
		},
	}
}

// setDesiredState patches spec.desiredState of pipeline name to `to`.
func (o *kubectlOptions) setDesiredState(ctx context.Context, name string, to etlv1.DesiredState) error {
	c, p, err := o.getPipeline(ctx, name)
	if err != nil {
		return err
	}
	from := kubectlDesired(p)
	if from == to {
		fmt.Fprintf(o.stdout, "ETLPipeline %s/%s: spec.desiredState is already %s (phase %s); nothing to do.\n",
			p.Namespace, p.Name, to, kubectlOr(string(p.Status.Phase)))
		return nil
	}
	if t, ok := kubectlArgoCDTracking(p); ok {
		fmt.Fprint(o.stderr, kubectlArgoCDWarning(p, t, to))
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"desiredState": to}})
	if err != nil {
		return err
	}
	if err := o.mergePatch(ctx, c, p, patch); err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "ETLPipeline %s/%s: spec.desiredState %s -> %s; %s\n", p.Namespace, p.Name, from, to, kubectlDesiredEffect(p.Status.Phase, to))
	return nil
}

// kubectlDesiredEffect says what the manager does once desiredState is `to` in phase.
func kubectlDesiredEffect(phase etlv1.Phase, to etlv1.DesiredState) string {
	switch {
	case to == etlv1.DesiredPaused && (phase == etlv1.PhaseRunning || phase == etlv1.PhasePauseRequested):
		return "the run stops after its current batch, at a committed checkpoint."
	case to == etlv1.DesiredPaused:
		return "no run starts until the pipeline is resumed."
	case phase == etlv1.PhasePaused:
		return "a run starts from the checkpoint."
	}
	return "runs start again on their triggers."
}

// kubectlRunOptions are the flags of `run`.
type kubectlRunOptions struct {
	wait    bool
	timeout time.Duration
}

func newKubectlRunCmd(o *kubectlOptions) *cobra.Command {
	r := &kubectlRunOptions{}
	cmd := &cobra.Command{
		Use:   "run NAME",
		Short: "Request a run: the annotation " + etlv1.AnnotationRunRequestedAt,
		Long: `Request a run by setting the annotation ` + etlv1.AnnotationRunRequestedAt + ` to the current
time (a JSON merge patch). The manager starts the run at once, or after the run in flight; a
paused pipeline runs once it is resumed.

With --wait, wait for the requested run to end: exit 0 when it completed, 1 when it failed,
was paused, or did not end within --timeout.`,
		Example: `  kubectl sluice run -n team-a orders-to-analytics
  kubectl sluice run orders-to-analytics --wait --timeout 30m`,
		Args:              kubectlPipelineArg,
		ValidArgsFunction: o.completePipelineNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if r.timeout <= 0 {
				return kubectlUsageErrorf("--timeout must be positive, got %s", r.timeout)
			}
			return o.requestRun(cmd.Context(), args[0], r)
		},
	}
	cmd.Flags().BoolVar(&r.wait, "wait", false, "wait for the run to end; exit 1 unless it completed")
	cmd.Flags().DurationVar(&r.timeout, "timeout", time.Hour, "how long --wait waits")
	return cmd
}

// kubectlRunRequestValue is the annotation value of a run requested at now: RFC 3339, with
// the fraction of a second only when the pipeline's current value is the same second, since
// the manager runs only for a value it has not seen.
func kubectlRunRequestValue(now time.Time, current string) string {
	v := now.UTC().Format(time.RFC3339)
	if v == current {
		v = now.UTC().Format(time.RFC3339Nano)
	}
	return v
}

// requestRun sets the run-requested-at annotation of pipeline name and, with --wait, waits
// for the run that serves it.
func (o *kubectlOptions) requestRun(ctx context.Context, name string, r *kubectlRunOptions) error {
	c, p, err := o.getPipeline(ctx, name)
	if err != nil {
		return err
	}
	value := kubectlRunRequestValue(o.now(), p.Annotations[etlv1.AnnotationRunRequestedAt])
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{etlv1.AnnotationRunRequestedAt: value}}})
	if err != nil {
		return err
	}
	if err := o.mergePatch(ctx, c, p, patch); err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "ETLPipeline %s/%s: %s=%s; %s\n", p.Namespace, p.Name, etlv1.AnnotationRunRequestedAt, value, kubectlRunEffect(p))
	if !r.wait {
		return nil
	}
	if kubectlDesired(p) == etlv1.DesiredPaused {
		return fmt.Errorf("not waiting: ETLPipeline %s/%s is paused, the run starts once it is resumed", p.Namespace, p.Name)
	}
	return o.waitRun(ctx, c, p, value, r.timeout)
}

// kubectlRunEffect says when the requested run starts.
func kubectlRunEffect(p *etlv1.ETLPipeline) string {
	switch {
	case kubectlDesired(p) == etlv1.DesiredPaused:
		return "the run starts once the pipeline is resumed."
	case kubectlActive(p.Status.Phase):
		return "the run starts after the run in flight."
	}
	return "the manager starts the run."
}

// waitRun polls p until the run serving request value has ended.
func (o *kubectlOptions) waitRun(ctx context.Context, c *kubectlClients, p *etlv1.ETLPipeline, value string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	servingID, lastPhase := "", etlv1.Phase("")
	for {
		w := kubectlRunWait(p, value, servingID)
		if w.RunID != "" && servingID == "" {
			fmt.Fprintf(o.stderr, "run %s started\n", w.RunID)
		}
		servingID = w.RunID
		if ph := p.Status.Phase; ph != lastPhase && servingID != "" && !w.Done {
			fmt.Fprintf(o.stderr, "run %s: %s\n", servingID, ph)
			lastPhase = ph
		}
		if w.Done {
			return kubectlRunResult(o, p, w)
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				if servingID == "" {
					return fmt.Errorf("no run started for the request within %s (phase %s; see 'kubectl sluice status %s')", timeout, kubectlOr(string(p.Status.Phase)), p.Name)
				}
				return fmt.Errorf("run %s did not end within %s (phase %s)", servingID, timeout, kubectlOr(string(p.Status.Phase)))
			}
			return ctx.Err()
		case <-time.After(o.pollInterval):
		}
		next := &etlv1.ETLPipeline{}
		if err := c.client.Get(ctx, client.ObjectKeyFromObject(p), next); err != nil {
			if ctx.Err() != nil {
				continue // reported at the top of the loop
			}
			return kubectlAPIError(err, p.Namespace, p.Name)
		}
		p = next
	}
}

// kubectlRunResult prints how the awaited run ended; anything but a completed run is an error.
func kubectlRunResult(o *kubectlOptions, p *etlv1.ETLPipeline, w kubectlWaitState) error {
	switch w.Outcome {
	case etlv1.PhaseIdle:
		fmt.Fprintf(o.stdout, "run %s completed: %s\n", w.RunID, w.Summary)
		return nil
	case etlv1.PhaseFailed:
		return fmt.Errorf("run %s failed: %s", w.RunID, w.Summary)
	case etlv1.PhasePaused:
		return fmt.Errorf("run %s was paused: %s", w.RunID, w.Summary)
	}
	return fmt.Errorf("run %s ended, but ETLPipeline %s/%s no longer records how", w.RunID, p.Namespace, p.Name)
}

// kubectlWaitState is where the run serving a run request stands.
type kubectlWaitState struct {
	// RunID is the run serving the request, "" until the manager started it.
	RunID string
	// Done is true once that run ended; Outcome is then its final phase ("" when unknown).
	Done    bool
	Outcome etlv1.Phase
	// Summary is the ended run's rows and error, for a person.
	Summary string
}

// kubectlRunWait decides, from p's status, whether the run serving request value (runID once
// known) has ended. The manager echoes the value in status.lastHandledRunRequest when it
// starts the run that serves it; that run ends with a completion time and a phase at rest,
// or has been pushed into status.history by a later run.
func kubectlRunWait(p *etlv1.ETLPipeline, value, runID string) kubectlWaitState {
	st := &p.Status
	if runID == "" {
		if st.LastHandledRunRequest != value || st.Run == nil {
			return kubectlWaitState{}
		}
		runID = st.Run.ID
	}
	if run := st.Run; run != nil && run.ID == runID {
		if run.CompletionTime == nil || kubectlActive(st.Phase) {
			return kubectlWaitState{RunID: runID}
		}
		summary := fmt.Sprintf("read %d, written %d, deleted %d rows in %s", run.RowsRead, run.RowsWritten, run.RowsDeleted, kubectlRunDuration(run, run.CompletionTime.Time))
		if run.Message != "" {
			summary += "; " + strings.TrimPrefix(string(run.ErrorClass)+": ", ": ") + run.Message
		}
		return kubectlWaitState{RunID: runID, Done: true, Outcome: st.Phase, Summary: summary}
	}
	for _, h := range st.History {
		if h.ID == runID {
			summary := fmt.Sprintf("read %d, written %d, deleted %d rows in %s", h.RowsRead, h.RowsWritten, h.RowsDeleted, kubectlOr(h.Duration))
			if h.ErrorClass != "" {
				summary += "; " + string(h.ErrorClass) + " error"
			}
			return kubectlWaitState{RunID: runID, Done: true, Outcome: h.Outcome, Summary: summary}
		}
	}
	return kubectlWaitState{RunID: runID, Done: true}
}
