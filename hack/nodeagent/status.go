package main

import (
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// localIP is the pod IP and host IP of every pod: processes share the host's network.
const localIP = "127.0.0.1"

// Container state reasons, as the kubelet reports them.
const (
	reasonCompleted        = "Completed"
	reasonError            = "Error"
	reasonConfigError      = "CreateContainerConfigError"
	reasonStatusUnknown    = "ContainerStatusUnknown"
	reasonPodCompleted     = "PodCompleted"
	reasonNodeAgentRestart = "NodeAgentRestarted"
	exitKilled             = 137
	maxTerminationMessage  = 4096
	fallbackLogLines       = 80
	fallbackLogBytes       = 2048
	imageIDPrefix          = "nodeagent://"
	containerIDPrefix      = "nodeagent://pid/"
)

// exit is how a container ended.
type exit struct {
	code     int32
	message  string
	started  metav1.Time
	finished metav1.Time
}

func conditions(now metav1.Time, ready corev1.ConditionStatus, reason string) []corev1.PodCondition {
	return []corev1.PodCondition{
		{Type: corev1.PodReadyToStartContainers, Status: ready, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: ready, Reason: reason, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: ready, Reason: reason, LastTransitionTime: now},
	}
}

func addresses(st *corev1.PodStatus) {
	st.HostIP, st.PodIP = localIP, localIP
	st.HostIPs = []corev1.HostIP{{IP: localIP}}
	st.PodIPs = []corev1.PodIP{{IP: localIP}}
}

func startTime(pod *corev1.Pod, now metav1.Time) *metav1.Time {
	if pod.Status.StartTime != nil {
		return pod.Status.StartTime
	}
	return &now
}

// runningStatus is the status of a pod whose process started at started with pid.
func runningStatus(pod *corev1.Pod, binary string, pid int, started metav1.Time) corev1.PodStatus {
	c := pod.Spec.Containers[0]
	st := corev1.PodStatus{
		Phase:      corev1.PodRunning,
		Conditions: conditions(started, corev1.ConditionTrue, ""),
		StartTime:  startTime(pod, started),
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:         c.Name,
			Image:        c.Image,
			ImageID:      imageIDPrefix + binary,
			ContainerID:  containerIDPrefix + strconv.Itoa(pid),
			Ready:        true,
			Started:      ptr.To(true),
			State:        corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
			RestartCount: 0,
		}},
	}
	addresses(&st)
	return st
}

// terminatedStatus is the final status of a pod whose process ended.
func terminatedStatus(pod *corev1.Pod, binary string, pid int, e exit) corev1.PodStatus {
	c := pod.Spec.Containers[0]
	phase, reason := corev1.PodSucceeded, reasonCompleted
	if e.code != 0 {
		phase, reason = corev1.PodFailed, reasonError
	}
	st := corev1.PodStatus{
		Phase:      phase,
		Conditions: conditions(e.finished, corev1.ConditionFalse, reasonPodCompleted),
		StartTime:  startTime(pod, e.started),
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     imageIDPrefix + binary,
			ContainerID: containerIDPrefix + strconv.Itoa(pid),
			Started:     ptr.To(false),
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode:    e.code,
				Reason:      reason,
				Message:     e.message,
				StartedAt:   e.started,
				FinishedAt:  e.finished,
				ContainerID: containerIDPrefix + strconv.Itoa(pid),
			}},
		}},
	}
	addresses(&st)
	return st
}

// lostStatus is the final status of a pod whose process the agent cannot account for: it was
// killed when the agent restarted, or the pod was deleted before it ran. Its exit code is 137,
// as for a container killed with its node.
func lostStatus(pod *corev1.Pod, reason, message string, now metav1.Time) corev1.PodStatus {
	c := pod.Spec.Containers[0]
	started := now
	if pod.Status.StartTime != nil {
		started = *pod.Status.StartTime
	}
	st := corev1.PodStatus{
		Phase:      corev1.PodFailed,
		Reason:     reason,
		Message:    message,
		Conditions: conditions(now, corev1.ConditionFalse, reasonPodCompleted),
		StartTime:  startTime(pod, now),
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:    c.Name,
			Image:   c.Image,
			Started: ptr.To(false),
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: exitKilled, Reason: reasonStatusUnknown, Message: message,
				StartedAt: started, FinishedAt: now,
			}},
		}},
	}
	addresses(&st)
	return st
}

// refusedStatus is the final status of a pod the agent will not run: Failed, with the reason,
// and its containers waiting with that reason (they never ran, so they have no exit code).
func refusedStatus(pod *corev1.Pod, r *refusal, now metav1.Time) corev1.PodStatus {
	st := corev1.PodStatus{
		Phase:      corev1.PodFailed,
		Reason:     r.reason,
		Message:    r.message,
		Conditions: conditions(now, corev1.ConditionFalse, reasonPodCompleted),
		StartTime:  startTime(pod, now),
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:    c.Name,
			Image:   c.Image,
			Started: ptr.To(false),
			State:   corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: r.reason, Message: r.message}},
		})
	}
	addresses(&st)
	return st
}

// waitingStatus is the status of a pod that cannot start yet (a missing Secret or
// ConfigMap): Pending, its container waiting, as the kubelet reports it.
func waitingStatus(pod *corev1.Pod, reason, message string, now metav1.Time) corev1.PodStatus {
	c := pod.Spec.Containers[0]
	st := corev1.PodStatus{
		Phase:      corev1.PodPending,
		Conditions: conditions(now, corev1.ConditionFalse, "ContainersNotReady"),
		StartTime:  startTime(pod, now),
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:    c.Name,
			Image:   c.Image,
			Started: ptr.To(false),
			State:   corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}},
		}},
	}
	addresses(&st)
	return st
}

func isTerminal(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// terminationMessage is what the kubelet reports: the termination message file (at most
// 4 KiB), or, with FallbackToLogsOnError and a failure, the tail of the log.
func terminationMessage(file []byte, logTail func() string, policy corev1.TerminationMessagePolicy, code int32) string {
	msg := string(file)
	if len(msg) > maxTerminationMessage {
		msg = msg[:maxTerminationMessage]
	}
	if msg == "" && code != 0 && policy == corev1.TerminationMessageFallbackToLogsOnError {
		return logTail()
	}
	return msg
}

// tail returns the last lines of data, at most maxBytes of them.
func tail(data []byte, lines, maxBytes int) string {
	parts := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	out := strings.Join(parts, "\n")
	if len(out) > maxBytes {
		out = out[len(out)-maxBytes:]
	}
	return out
}
