package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/controllers"
)

// kubectlRunnerContainer is the runner's container in the pods of a runner Job.
const kubectlRunnerContainer = "runner"

// kubectlLogsOptions are the flags of `logs`.
type kubectlLogsOptions struct {
	follow bool
	tail   int64
	runID  string
}

func newKubectlLogsCmd(o *kubectlOptions) *cobra.Command {
	l := &kubectlLogsOptions{}
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print the runner log of a pipeline's current or last run",
		Long: `Print the log of the runner pod of the pipeline's current or last run (--run: an earlier run
in status.history), found through the run's Job in the operator's namespace. A Job with
several pods (a replacement after a crash) shows its newest pod.

With -f, stream the log until the runner exits, waiting for the pod to start if it has not.`,
		Example: `  kubectl sluice logs -n team-a orders-to-analytics
  kubectl sluice logs orders-to-analytics -f
  kubectl sluice logs orders-to-analytics --tail 50`,
		Args:              kubectlPipelineArg,
		ValidArgsFunction: o.completePipelineNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if l.tail < -1 {
				return kubectlUsageErrorf("--tail must be -1 (all) or a number of lines, got %d", l.tail)
			}
			return o.logs(cmd.Context(), args[0], l)
		},
	}
	cmd.Flags().BoolVarP(&l.follow, "follow", "f", false, "stream the log")
	cmd.Flags().Int64Var(&l.tail, "tail", -1, "lines from the end of the log to show (-1: all)")
	cmd.Flags().StringVar(&l.runID, "run", "", "the run whose log to show (default the current or last run)")
	return cmd
}

// kubectlJobNameOf returns the runner Job of run runID (the current or last run when empty).
func kubectlJobNameOf(p *etlv1.ETLPipeline, runID string) (string, error) {
	run := p.Status.Run
	if runID == "" || (run != nil && run.ID == runID) {
		if run == nil {
			return "", fmt.Errorf("ETLPipeline %s/%s has not run yet", p.Namespace, p.Name)
		}
		if run.JobName != "" {
			return run.JobName, nil
		}
		runID = run.ID
	} else if !slices.ContainsFunc(p.Status.History, func(h etlv1.RunSummary) bool { return h.ID == runID }) {
		return "", fmt.Errorf("ETLPipeline %s/%s has no run %q in status.run or status.history", p.Namespace, p.Name, runID)
	}
	// The manager names every Job after its run: older runs are found by their id alone.
	return controllers.JobName(p.Namespace, p.Name, runID), nil
}

// logs prints (or streams) the runner log of a run of pipeline name.
func (o *kubectlOptions) logs(ctx context.Context, name string, l *kubectlLogsOptions) error {
	c, p, err := o.getPipeline(ctx, name)
	if err != nil {
		return err
	}
	jobName, err := kubectlJobNameOf(p, l.runID)
	if err != nil {
		return err
	}
	var pod *corev1.Pod
	for waited := false; ; waited = true {
		pod, err = o.startedRunnerPod(ctx, c, p, jobName)
		if err == nil || !l.follow {
			break
		}
		if !waited {
			fmt.Fprintf(o.stderr, "waiting for the runner of Job %s: %v\n", jobName, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.pollInterval):
		}
	}
	if err != nil {
		return err
	}
	rc, err := o.podLogs(ctx, c, pod, l.follow, l.tail)
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	if _, err := io.Copy(o.stdout, rc); err != nil && ctx.Err() == nil {
		return fmt.Errorf("read logs of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// errKubectlNotStarted is returned for a runner pod whose container has not started: its log
// does not exist yet.
var errKubectlNotStarted = errors.New("not started yet")

// startedRunnerPod returns the newest pod of Job jobName of p once its container has started.
func (o *kubectlOptions) startedRunnerPod(ctx context.Context, c *kubectlClients, p *etlv1.ETLPipeline, jobName string) (*corev1.Pod, error) {
	job, err := o.runnerJob(ctx, c, p, jobName)
	if err != nil {
		return nil, err
	}
	pod, others, err := o.runnerPod(ctx, c, job)
	if err != nil {
		return nil, err
	}
	if !kubectlContainerStarted(pod) {
		return nil, fmt.Errorf("pod %s/%s is %s: %w", pod.Namespace, pod.Name, kubectlPodState(pod), errKubectlNotStarted)
	}
	if others > 0 {
		fmt.Fprintf(o.stderr, "Job %s/%s has %d pods; showing the newest, %s\n", job.Namespace, job.Name, others+1, pod.Name)
	}
	return pod, nil
}

// runnerPod returns the newest pod of a runner Job and how many older ones it has.
func (o *kubectlOptions) runnerPod(ctx context.Context, c *kubectlClients, job *batchv1.Job) (*corev1.Pod, int, error) {
	selector := batchv1.JobNameLabel + "=" + job.Name
	if job.Spec.Selector != nil {
		s, err := metav1.LabelSelectorAsSelector(job.Spec.Selector)
		if err != nil {
			return nil, 0, fmt.Errorf("selector of Job %s/%s: %w", job.Namespace, job.Name, err)
		}
		selector = s.String()
	}
	pods, err := c.kube.CoreV1().Pods(job.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, 0, fmt.Errorf("list pods of Job %s/%s: %w", job.Namespace, job.Name, err)
	}
	pod := kubectlNewestPod(pods.Items)
	if pod == nil {
		return nil, 0, fmt.Errorf("job %s/%s has no pod yet", job.Namespace, job.Name)
	}
	return pod, len(pods.Items) - 1, nil
}

// kubectlNewestPod is the pod created last (by name when two were created in the same second).
func kubectlNewestPod(pods []corev1.Pod) *corev1.Pod {
	var newest *corev1.Pod
	for i := range pods {
		p := &pods[i]
		if newest == nil || newest.CreationTimestamp.Before(&p.CreationTimestamp) ||
			(newest.CreationTimestamp.Equal(&p.CreationTimestamp) && strings.Compare(p.Name, newest.Name) > 0) {
			newest = p
		}
	}
	return newest
}

// kubectlLogContainer is the container whose log to read: the runner, else the only one.
func kubectlLogContainer(pod *corev1.Pod) string {
	for _, c := range pod.Spec.Containers {
		if c.Name == kubectlRunnerContainer {
			return c.Name
		}
	}
	if len(pod.Spec.Containers) > 0 {
		return pod.Spec.Containers[0].Name
	}
	return ""
}

// kubectlContainerStarted reports whether the log container of pod has started (or ended),
// so that it has a log.
func kubectlContainerStarted(pod *corev1.Pod) bool {
	name := kubectlLogContainer(pod)
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == name {
			return cs.State.Running != nil || cs.State.Terminated != nil || cs.LastTerminationState.Terminated != nil
		}
	}
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// kubectlPodState is a pod's phase with the reason its container waits, for a person.
func kubectlPodState(pod *corev1.Pod) string {
	state := kubectlOr(string(pod.Status.Phase))
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			return state + " (" + w.Reason + ")"
		}
	}
	return state
}

// podLogs opens the log of pod's runner container.
func (o *kubectlOptions) podLogs(ctx context.Context, c *kubectlClients, pod *corev1.Pod, follow bool, tail int64) (io.ReadCloser, error) {
	opts := &corev1.PodLogOptions{Container: kubectlLogContainer(pod), Follow: follow}
	if tail >= 0 {
		opts.TailLines = &tail
	}
	rc, err := c.kube.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, opts).Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("get logs of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return rc, nil
}
