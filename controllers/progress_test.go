package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestStalledFor(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { v := metav1.NewTime(t0.Add(d)); return &v }
	cases := []struct {
		name  string
		st    etlv1.ETLPipelineStatus
		now   time.Duration
		late  bool
		since time.Duration
	}{
		{"a young run", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{StartTime: at(0)}}, 10 * time.Minute, false, 0},
		{"a run without a batch past the deadline", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{StartTime: at(0)}}, 31 * time.Minute, true, 0},
		{"a recent checkpoint keeps it progressing", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{StartTime: at(0)},
			Checkpoint: &etlv1.CheckpointStatus{Time: at(20 * time.Minute)}}, 40 * time.Minute, false, 20 * time.Minute},
		{"an old checkpoint of an earlier run does not", etlv1.ETLPipelineStatus{Phase: etlv1.PhasePauseRequested, Run: &etlv1.RunStatus{StartTime: at(time.Hour)},
			Checkpoint: &etlv1.CheckpointStatus{Time: at(0)}}, 95 * time.Minute, true, time.Hour},
		{"a CDC run streaming an idle table looks at its slot", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{StartTime: at(0)},
			Checkpoint:  &etlv1.CheckpointStatus{Time: at(time.Minute)},
			Replication: &etlv1.ReplicationStatus{Phase: etlv1.ReplicationStreaming, ObservedTime: at(50 * time.Minute)}}, 55 * time.Minute, false, 50 * time.Minute},
		{"a CDC runner that stopped looking at its slot", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{StartTime: at(0)},
			Checkpoint:  &etlv1.CheckpointStatus{Time: at(time.Minute)},
			Replication: &etlv1.ReplicationStatus{Phase: etlv1.ReplicationStreaming, ObservedTime: at(2 * time.Minute)}}, 40 * time.Minute, true, 2 * time.Minute},
		{"a CDC copy progresses by its batches only", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{StartTime: at(0)},
			Replication: &etlv1.ReplicationStatus{Phase: etlv1.ReplicationSnapshot, ObservedTime: at(35 * time.Minute)}}, 40 * time.Minute, true, 0},
		{"a look at the slot by an earlier run does not count", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunning, Run: &etlv1.RunStatus{StartTime: at(time.Hour)},
			Replication: &etlv1.ReplicationStatus{Phase: etlv1.ReplicationStreaming, ObservedTime: at(0)}}, 95 * time.Minute, true, time.Hour},
		{"a run not claimed yet is the start deadline's", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseRunRequested, Run: &etlv1.RunStatus{StartTime: at(0)}}, 2 * time.Hour, false, -1},
		{"a pipeline at rest", etlv1.ETLPipelineStatus{Phase: etlv1.PhaseIdle, Run: &etlv1.RunStatus{StartTime: at(0)}}, 2 * time.Hour, false, -1},
	}
	for _, tc := range cases {
		since, _, late := stalledFor(&tc.st, 30*time.Minute, t0.Add(tc.now))
		if late != tc.late || (tc.since >= 0 && !since.Equal(t0.Add(tc.since))) {
			t.Errorf("%s: since %v late %v, want since %v late %v", tc.name, since, late, t0.Add(tc.since), tc.late)
		}
	}
}
