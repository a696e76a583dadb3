package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// kubectlReportTimeout bounds the reads behind the report's runner log lines: the report is
// worth showing without them.
const kubectlReportTimeout = 10 * time.Second

// kubectlStatusOptions are the flags of `status`.
type kubectlStatusOptions struct {
	allNamespaces bool
	output        string
	logLines      int64
}

func newKubectlStatusCmd(o *kubectlOptions) *cobra.Command {
	s := &kubectlStatusOptions{}
	cmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "List the pipelines of a namespace, or report on one",
		Long: `Without NAME, a table of the namespace's pipelines (all namespaces with -A): phase, desired
state, the last run's outcome, rows written by the current or last run, freshness (the age of
the last committed checkpoint, else of the last successful run) and the next scheduled run.

With NAME, a report: the spec in short, the conditions, the current or last run, the
checkpoint, a CDC pipeline's replication slot, the last runs, the totals, and the last lines
of the runner's log (found through the run's Job in the operator's namespace).

-o json|yaml prints the pipeline (or the list) as the API returns it.`,
		Example: `  kubectl sluice status -A
  kubectl sluice status -n team-a orders-to-analytics
  kubectl sluice status orders-to-analytics -o yaml`,
		Args:              kubectlOptionalPipelineArg,
		ValidArgsFunction: o.completePipelineNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := kubectlCheckOutput(s.output); err != nil {
				return err
			}
			if len(args) == 1 {
				if s.allNamespaces {
					return kubectlUsageErrorf("a pipeline NAME cannot be combined with --all-namespaces: use -n NAMESPACE")
				}
				return o.statusOne(cmd.Context(), s, args[0])
			}
			return o.statusList(cmd.Context(), s)
		},
	}
	cmd.Flags().BoolVarP(&s.allNamespaces, "all-namespaces", "A", false, "list the pipelines of every namespace")
	cmd.Flags().StringVarP(&s.output, "output", "o", "", "output format: json or yaml (default a table, or a report for NAME)")
	cmd.Flags().Int64Var(&s.logLines, "log-lines", 20, "runner log lines in the report of NAME (0: none)")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(kubectlOutputFormats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// statusList prints the table of pipelines.
func (o *kubectlOptions) statusList(ctx context.Context, s *kubectlStatusOptions) error {
	c, err := o.clients()
	if err != nil {
		return err
	}
	var list etlv1.ETLPipelineList
	var opts []client.ListOption
	if !s.allNamespaces {
		opts = append(opts, client.InNamespace(c.namespace))
	}
	if err := c.client.List(ctx, &list, opts...); err != nil {
		return fmt.Errorf("list ETLPipelines: %w", kubectlAPIError(err, c.namespace, ""))
	}
	slices.SortFunc(list.Items, func(a, b etlv1.ETLPipeline) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	if s.output != "" {
		out := &etlv1.ETLPipelineList{Items: make([]etlv1.ETLPipeline, 0, len(list.Items))}
		out.APIVersion, out.Kind = etlv1.GroupVersion.String(), "ETLPipelineList"
		out.ResourceVersion = list.ResourceVersion
		for i := range list.Items {
			out.Items = append(out.Items, *kubectlForOutput(&list.Items[i]))
		}
		return kubectlPrintObject(o.stdout, s.output, out)
	}
	if len(list.Items) == 0 {
		if s.allNamespaces {
			fmt.Fprintln(o.stderr, "No ETLPipelines found.")
		} else {
			fmt.Fprintf(o.stderr, "No ETLPipelines found in namespace %s.\n", c.namespace)
		}
		return nil
	}
	header, rows := kubectlPipelineTable(list.Items, s.allNamespaces, o.now())
	return kubectlWriteTable(o.stdout, header, rows)
}

// kubectlPipelineTable returns the columns of `status` for pipelines at now.
func kubectlPipelineTable(pipelines []etlv1.ETLPipeline, allNamespaces bool, now time.Time) ([]string, [][]string) {
	header := []string{"NAME", "PHASE", "DESIRED", "LAST RUN", "ROWS", "FRESHNESS", "NEXT RUN"}
	if allNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
	}
	rows := make([][]string, 0, len(pipelines))
	for i := range pipelines {
		p := &pipelines[i]
		row := []string{
			p.Name,
			kubectlOr(string(p.Status.Phase)),
			string(kubectlDesired(p)),
			kubectlLastRun(p, now),
			kubectlRows(p),
			kubectlFreshness(p, now),
			kubectlUntil(p.Status.NextScheduledRun, now),
		}
		if allNamespaces {
			row = append([]string{p.Namespace}, row...)
		}
		rows = append(rows, row)
	}
	return header, rows
}

// kubectlDesired is spec.desiredState with its default.
func kubectlDesired(p *etlv1.ETLPipeline) etlv1.DesiredState {
	if p.Spec.DesiredState == "" {
		return etlv1.DesiredRunning
	}
	return p.Spec.DesiredState
}

// kubectlOutcome names the phase a run ended in for a person: a run that ended Idle succeeded.
func kubectlOutcome(ended etlv1.Phase) string {
	if ended == etlv1.PhaseIdle {
		return "Succeeded"
	}
	return kubectlOr(string(ended))
}

// kubectlActive reports whether a run is in flight in phase.
func kubectlActive(phase etlv1.Phase) bool {
	return phase == etlv1.PhaseRunRequested || phase == etlv1.PhaseRunning || phase == etlv1.PhasePauseRequested
}

// kubectlLastRun is the outcome of the last run that ended and how long ago, as kubectl
// shows restarts: "Succeeded (5m ago)". status.history has it; a status without history (a
// manager that predates it) has it in status.run once that run ended.
func kubectlLastRun(p *etlv1.ETLPipeline, now time.Time) string {
	if len(p.Status.History) > 0 {
		h := &p.Status.History[0]
		return fmt.Sprintf("%s (%s)", kubectlOutcome(h.Outcome), kubectlAgo(h.CompletionTime, now))
	}
	if r := p.Status.Run; r != nil && r.CompletionTime != nil && !kubectlActive(p.Status.Phase) && p.Status.Phase != "" {
		return fmt.Sprintf("%s (%s)", kubectlOutcome(p.Status.Phase), kubectlAgo(r.CompletionTime, now))
	}
	return kubectlNone
}

// kubectlRows is the rows written by the current or last run.
func kubectlRows(p *etlv1.ETLPipeline) string {
	if p.Status.Run != nil {
		return strconv.FormatInt(p.Status.Run.RowsWritten, 10)
	}
	return kubectlNone
}

// kubectlFreshness is how old the data in the sink may be: the age of the last committed
// checkpoint, else of the last run that completed.
func kubectlFreshness(p *etlv1.ETLPipeline, now time.Time) string {
	if cp := p.Status.Checkpoint; cp != nil && cp.Time != nil {
		return kubectlAge(cp.Time, now)
	}
	if t := p.Status.Totals; t != nil && t.LastSuccessTime != nil {
		return kubectlAge(t.LastSuccessTime, now)
	}
	for i := range p.Status.History {
		if h := &p.Status.History[i]; h.Outcome == etlv1.PhaseIdle && h.CompletionTime != nil {
			return kubectlAge(h.CompletionTime, now)
		}
	}
	return kubectlNone
}

// statusOne prints the report of one pipeline, or the pipeline itself with -o.
func (o *kubectlOptions) statusOne(ctx context.Context, s *kubectlStatusOptions, name string) error {
	c, p, err := o.getPipeline(ctx, name)
	if err != nil {
		return err
	}
	if s.output != "" {
		return kubectlPrintObject(o.stdout, s.output, kubectlForOutput(p))
	}
	var logs *kubectlReportLogs
	if s.logLines > 0 {
		lctx, cancel := context.WithTimeout(ctx, kubectlReportTimeout)
		logs = o.reportLogs(lctx, c, p, s.logLines)
		cancel()
	}
	return kubectlWriteReport(o.stdout, p, logs, o.now())
}

// kubectlReportLogs are the runner log lines of a report, or why there are none.
type kubectlReportLogs struct {
	// Pod is namespace/name of the pod the lines are from.
	Pod   string
	Lines []string
	// Note says why there are no lines (no run, the Job is gone, the API refused).
	Note string
}

// reportLogs reads the last lines of the runner log of p's current or last run.
func (o *kubectlOptions) reportLogs(ctx context.Context, c *kubectlClients, p *etlv1.ETLPipeline, lines int64) *kubectlReportLogs {
	if p.Status.Run == nil || p.Status.Run.JobName == "" {
		return &kubectlReportLogs{Note: "no run yet"}
	}
	job, err := o.runnerJob(ctx, c, p, p.Status.Run.JobName)
	if err != nil {
		return &kubectlReportLogs{Note: err.Error()}
	}
	pod, _, err := o.runnerPod(ctx, c, job)
	if err != nil {
		return &kubectlReportLogs{Note: err.Error()}
	}
	out := &kubectlReportLogs{Pod: pod.Namespace + "/" + pod.Name}
	if !kubectlContainerStarted(pod) {
		out.Note = "the runner has not started yet: " + kubectlPodState(pod)
		return out
	}
	rc, err := o.podLogs(ctx, c, pod, false, lines)
	if err != nil {
		out.Note = err.Error()
		return out
	}
	defer func() { _ = rc.Close() }()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		out.Lines = append(out.Lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		out.Note = fmt.Sprintf("read logs of pod %s: %v", out.Pod, err)
	} else if len(out.Lines) == 0 {
		out.Note = "the log is empty"
	}
	return out
}

// kubectlWriteReport writes the report of `status NAME`: what a person asks first (is it
// healthy, what ran, how far did it get) at the top, the details below.
func kubectlWriteReport(w io.Writer, p *etlv1.ETLPipeline, logs *kubectlReportLogs, now time.Time) error {
	r := &kubectlReport{w: w}
	st := &p.Status
	r.field("", "Name", p.Name)
	r.field("", "Namespace", p.Namespace)
	r.field("", "Phase", kubectlOr(string(st.Phase)))
	r.field("", "Desired", string(kubectlDesired(p)))
	if t, ok := kubectlArgoCDTracking(p); ok {
		r.field("", "Argo CD", t.describe())
	}

	r.section("Spec")
	r.field("  ", "Mode", string(p.Spec.Mode))
	r.field("  ", "Source", p.Spec.Source.Connection)
	r.field("  ", "Reader", kubectlReader(&p.Spec))
	cursor := "keys " + strings.Join(p.Spec.Source.Cursor.KeyColumns, ", ")
	if p.Spec.Source.Cursor.Column != "" {
		cursor = p.Spec.Source.Cursor.Column + ", " + cursor
	}
	if p.Spec.Source.Cursor.Lag != nil {
		cursor += ", lag " + p.Spec.Source.Cursor.Lag.Duration.String()
	}
	r.field("  ", "Cursor", cursor)
	r.field("  ", "Target", kubectlTarget(&p.Spec.Target))
	if p.Spec.BatchSize > 0 {
		r.field("  ", "Batch size", strconv.Itoa(int(p.Spec.BatchSize)))
	}
	schedule := kubectlOr(p.Spec.Schedule)
	if p.Spec.Schedule != "" && st.NextScheduledRun != nil {
		schedule += fmt.Sprintf(" (next run %s, %s)", kubectlUntil(st.NextScheduledRun, now), st.NextScheduledRun.UTC().Format(time.RFC3339))
	}
	r.field("  ", "Schedule", schedule)

	r.section("Conditions")
	if len(st.Conditions) == 0 {
		r.line("  " + kubectlNone)
	} else {
		rows := make([][]string, 0, len(st.Conditions))
		for _, c := range st.Conditions {
			rows = append(rows, []string{"  " + c.Type, string(c.Status), c.Reason, kubectlAge(&c.LastTransitionTime, now), c.Message})
		}
		r.table([]string{"  TYPE", "STATUS", "REASON", "AGE", "MESSAGE"}, rows)
	}

	run := st.Run
	if run != nil && run.CompletionTime == nil && kubectlActive(st.Phase) {
		r.section("Current run")
	} else {
		r.section("Last run")
	}
	if run == nil {
		r.line("  " + kubectlNone)
	} else {
		r.field("  ", "ID", run.ID)
		r.field("  ", "Trigger", kubectlOr(string(run.Trigger)))
		r.field("  ", "Started", kubectlTimestamp(run.StartTime, now))
		r.field("  ", "Duration", kubectlRunDuration(run, now))
		rows := fmt.Sprintf("read %d, written %d, deleted %d", run.RowsRead, run.RowsWritten, run.RowsDeleted)
		if run.RowsSwept > 0 {
			rows += fmt.Sprintf(", swept %d", run.RowsSwept)
		}
		r.field("  ", "Rows", fmt.Sprintf("%s in %d batches", rows, run.Batches))
		r.field("  ", "Job", kubectlOr(run.JobName))
		if run.ErrorClass != "" || run.Message != "" {
			msg := run.Message
			if run.ErrorClass != "" {
				msg = string(run.ErrorClass) + ": " + msg
			}
			r.field("  ", "Error", msg)
		}
	}

	r.section("Checkpoint")
	if cp := st.Checkpoint; cp == nil || (len(cp.Values) == 0 && cp.Time == nil) {
		r.line("  " + kubectlNone + " (the next run reads from the start)")
	} else {
		r.field("  ", "Values", kubectlOr(strings.Join(cp.Values, ", ")))
		r.field("  ", "Committed", kubectlTimestamp(cp.Time, now))
	}

	if rep := st.Replication; rep != nil {
		kubectlWriteReplication(r, rep, now)
	}

	r.section("History")
	if len(st.History) == 0 {
		r.line("  " + kubectlNone)
	} else {
		rows := make([][]string, 0, len(st.History))
		for _, h := range st.History {
			rows = append(rows, []string{"  " + h.ID, kubectlOr(string(h.Trigger)), kubectlOutcome(h.Outcome), kubectlAgo(h.StartTime, now),
				kubectlOr(h.Duration), strconv.FormatInt(h.RowsRead, 10), strconv.FormatInt(h.RowsWritten, 10),
				strconv.FormatInt(h.RowsDeleted, 10), kubectlOr(string(h.ErrorClass))})
		}
		r.table([]string{"  RUN", "TRIGGER", "OUTCOME", "STARTED", "DURATION", "READ", "WRITTEN", "DELETED", "ERROR"}, rows)
	}

	r.section("Totals")
	if t := st.Totals; t == nil {
		r.line("  " + kubectlNone)
	} else {
		r.field("  ", "Rows", fmt.Sprintf("read %d, written %d, deleted %d in %d batches", t.RowsRead, t.RowsWritten, t.RowsDeleted, t.Batches))
		r.field("  ", "Runs", fmt.Sprintf("succeeded %d, failed %d, paused %d", t.RunsSucceeded, t.RunsFailed, t.RunsPaused))
		r.field("  ", "Last success", kubectlTimestamp(t.LastSuccessTime, now))
	}
	if st.ConsecutiveFailures > 0 {
		r.field("  ", "Failing", fmt.Sprintf("%d runs in a row", st.ConsecutiveFailures))
	}

	if logs != nil {
		switch {
		case logs.Pod != "":
			r.section(fmt.Sprintf("Runner log (pod %s, last %d lines)", logs.Pod, len(logs.Lines)))
		default:
			r.section("Runner log")
		}
		for _, l := range logs.Lines {
			r.line("  " + l)
		}
		if logs.Note != "" {
			r.line("  (" + logs.Note + ")")
		}
	}
	return r.err
}

// kubectlWriteReplication writes the Replication section: a CDC pipeline's slot as its runner
// last reported it.
func kubectlWriteReplication(r *kubectlReport, rep *etlv1.ReplicationStatus, now time.Time) {
	r.section("Replication")
	r.field("  ", "Slot", kubectlOr(rep.Slot))
	r.field("  ", "Publication", kubectlOr(rep.Publication))
	r.field("  ", "Phase", kubectlOr(string(rep.Phase)))
	r.field("  ", "Confirmed", kubectlOr(rep.ConfirmedLSN))
	r.field("  ", "Retained WAL", kubectlBytes(rep.RetainedWALBytes))
	r.field("  ", "WAL status", kubectlOr(rep.WALStatus))
	lag := kubectlLag(rep.LagMilliseconds)
	if rep.LagMilliseconds == 0 {
		lag += " (caught up)"
	}
	r.field("  ", "Lag", lag)
	r.field("  ", "Last commit", kubectlTimestamp(rep.LastSourceCommitTime, now))
	r.field("  ", "Observed", kubectlTimestamp(rep.ObservedTime, now))
}

// kubectlBytes writes a size in binary units ("512 B", "1.5 GiB").
func kubectlBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 && n > -1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, i := float64(n)/1024, 0
	for ; (v >= 1024 || v <= -1024) && i < len(units)-1; i++ {
		v /= 1024
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i:i+1] + "iB"
}

// kubectlLag writes a replication lag: milliseconds under a second, tenths of a second under
// a minute, seconds above.
func kubectlLag(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Second:
		return d.String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return kubectlDuration(d)
}

// kubectlReader summarizes the reader: a CDC pipeline's table, the legacy query's first line,
// or the task plan.
func kubectlReader(spec *etlv1.ETLPipelineSpec) string {
	tasks := make([]string, 0, len(spec.Tasks))
	for _, t := range spec.Tasks {
		kind := "python"
		if t.SQL != "" {
			kind = "sql"
		}
		tasks = append(tasks, t.Name+" ("+kind+")")
	}
	if spec.Mode == etlv1.ModeCDC {
		reader := "table " + kubectlNone
		if spec.Source.Table != "" {
			reader = "table " + configv1.QualifiedTable(spec.Source.Table)
		}
		if len(spec.Source.Columns) > 0 {
			reader += " (columns " + strings.Join(spec.Source.Columns, ", ") + ")"
		}
		if len(tasks) > 0 {
			reader += ", then tasks " + strings.Join(tasks, " -> ")
		}
		return reader
	}
	if len(tasks) > 0 {
		return "tasks " + strings.Join(tasks, " -> ")
	}
	q := strings.Join(strings.Fields(spec.Source.Query), " ")
	if len(q) > 100 {
		q = q[:97] + "..."
	}
	return kubectlOr(q)
}

// kubectlTarget summarizes the sink with the settings that differ from the defaults.
func kubectlTarget(t *etlv1.TargetSpec) string {
	var extra []string
	if t.Connection != "" {
		extra = append(extra, "connection "+t.Connection)
	}
	if len(t.Key) > 0 {
		extra = append(extra, "key "+strings.Join(t.Key, ", "))
	}
	if t.Action != "" {
		extra = append(extra, "action "+string(t.Action))
	}
	if t.FullSync == etlv1.FullSyncMirror {
		extra = append(extra, "fullSync Mirror")
	}
	if t.DeleteWhen != nil {
		extra = append(extra, "deleteWhen "+t.DeleteWhen.Column)
	}
	if len(extra) == 0 {
		return t.Name
	}
	return t.Name + " (" + strings.Join(extra, "; ") + ")"
}

// kubectlRunDuration is how long the run took, or has been going.
func kubectlRunDuration(run *etlv1.RunStatus, now time.Time) string {
	switch {
	case run.StartTime == nil:
		return kubectlNone
	case run.CompletionTime != nil:
		return kubectlDuration(run.CompletionTime.Sub(run.StartTime.Time))
	}
	return "running for " + kubectlDuration(now.Sub(run.StartTime.Time))
}

// kubectlReport writes the sections of a report and keeps the first write error.
type kubectlReport struct {
	w   io.Writer
	err error
}

func (r *kubectlReport) line(s string) {
	if r.err == nil {
		_, r.err = fmt.Fprintln(r.w, s)
	}
}

func (r *kubectlReport) section(title string) {
	r.line("")
	r.line(title + ":")
}

func (r *kubectlReport) field(indent, key, value string) {
	r.line(fmt.Sprintf("%s%-*s %s", indent, 15-len(indent), key+":", value))
}

func (r *kubectlReport) table(header []string, rows [][]string) {
	if r.err == nil {
		r.err = kubectlWriteTable(r.w, header, rows)
	}
}
