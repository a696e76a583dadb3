package status

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
	"github.com/sluice-dev/sluice/test/testenv"
)

// kubeEnv is a real API server with a namespace for pipelines.
type kubeEnv struct {
	c  client.WithWatch
	ns string
	n  atomic.Int32
}

func newKubeEnv(t *testing.T) *kubeEnv {
	cfg, _ := testenv.StartAPIServer(t)
	scheme := runtime.NewScheme()
	if err := etlv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return &kubeEnv{c: c, ns: ns.Name}
}

// pipeline creates a pipeline whose status is phase with run id (none when empty).
func (k *kubeEnv) pipeline(t *testing.T, phase etlv1.Phase, runID string) types.NamespacedName {
	t.Helper()
	ctx := context.Background()
	p := &etlv1.ETLPipeline{
		ObjectMeta: metav1.ObjectMeta{Namespace: k.ns, Name: "p" + string(rune('a'+k.n.Add(1)%26)) + time.Now().Format("150405.000000")[7:]},
		Spec: etlv1.ETLPipelineSpec{
			Mode: etlv1.ModeIncremental,
			Source: etlv1.SourceSpec{Connection: "main", Query: "SELECT 1 AS id, now() AS t",
				Cursor: etlv1.CursorSpec{Column: "t", KeyColumns: []string{"id"}}},
			Target: etlv1.TargetSpec{Name: "analytics.items"},
		},
	}
	if err := k.c.Create(ctx, p); err != nil {
		t.Fatalf("create pipeline: %v", err)
	}
	p.Status.Phase = phase
	if runID != "" {
		start := metav1.Now()
		p.Status.Run = &etlv1.RunStatus{ID: runID, JobName: "job-" + runID, Trigger: etlv1.TriggerCreated, Generation: 1, StartTime: &start}
	}
	meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{Type: etlv1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: etlv1.ReasonRunRequested, Message: "set by the manager"})
	if err := k.c.Status().Update(ctx, p); err != nil {
		t.Fatalf("set status: %v", err)
	}
	return client.ObjectKeyFromObject(p)
}

func (k *kubeEnv) get(t *testing.T, key types.NamespacedName) *etlv1.ETLPipeline {
	t.Helper()
	p := &etlv1.ETLPipeline{}
	if err := k.c.Get(context.Background(), key, p); err != nil {
		t.Fatalf("get pipeline: %v", err)
	}
	return p
}

// conflicting wraps the client so that a manager-like write lands between the runner's read
// and its first status patch, which must then conflict and be redone.
func (k *kubeEnv) conflicting(t *testing.T) (client.Client, *atomic.Int32) {
	var patches atomic.Int32
	c := interceptor.NewClient(k.c, interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			if patches.Add(1) == 1 {
				p := &etlv1.ETLPipeline{}
				if err := c.Get(ctx, client.ObjectKeyFromObject(obj), p); err != nil {
					return err
				}
				meta.SetStatusCondition(&p.Status.Conditions, metav1.Condition{Type: etlv1.ConditionReconciling,
					Status: metav1.ConditionTrue, Reason: etlv1.ReasonRunRequested, Message: "manager wrote in between"})
				if err := c.Status().Update(ctx, p); err != nil {
					t.Errorf("interleaved manager write: %v", err)
				}
			}
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	})
	return c, &patches
}

func TestKubeReporter(t *testing.T) {
	k := newKubeEnv(t)
	ctx := context.Background()

	t.Run("claim", func(t *testing.T) {
		cases := []struct {
			name    string
			phase   etlv1.Phase
			runID   string
			fenced  bool
			written bool
		}{
			{name: "requested run becomes Running", phase: etlv1.PhaseRunRequested, runID: "r1", written: true},
			{name: "running run is claimed again without a write", phase: etlv1.PhaseRunning, runID: "r1"},
			{name: "pause requested is claimed again without a write", phase: etlv1.PhasePauseRequested, runID: "r1"},
			{name: "another run is refused", phase: etlv1.PhaseRunRequested, runID: "r0", fenced: true},
			{name: "a cancelled run is refused", phase: etlv1.PhasePaused, runID: "r1", fenced: true},
			{name: "a completed run is refused", phase: etlv1.PhaseIdle, runID: "r1", fenced: true},
			{name: "no run is refused", phase: etlv1.PhaseIdle, fenced: true},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				key := k.pipeline(t, tc.phase, tc.runID)
				before := k.get(t, key)
				c, err := NewKube(k.c, key, "r1").Claim(ctx)
				if failure.IsFenced(err) != tc.fenced || (err != nil && !tc.fenced) {
					t.Fatalf("Claim error %v, want fenced=%v", err, tc.fenced)
				}
				after := k.get(t, key)
				if (after.ResourceVersion != before.ResourceVersion) != tc.written {
					t.Fatalf("status written = %v, want %v", after.ResourceVersion != before.ResourceVersion, tc.written)
				}
				if tc.written && (after.Status.Phase != etlv1.PhaseRunning || c.Trigger != etlv1.TriggerCreated) {
					t.Fatalf("after the claim: phase %s, trigger %q", after.Status.Phase, c.Trigger)
				}
			})
		}
	})

	t.Run("claim redoes a conflicting write and keeps the manager's", func(t *testing.T) {
		key := k.pipeline(t, etlv1.PhaseRunRequested, "r1")
		c, patches := k.conflicting(t)
		if _, err := NewKube(c, key, "r1").Claim(ctx); err != nil {
			t.Fatalf("Claim: %v", err)
		}
		p := k.get(t, key)
		if patches.Load() != 2 || p.Status.Phase != etlv1.PhaseRunning ||
			meta.FindStatusCondition(p.Status.Conditions, etlv1.ConditionReconciling) == nil {
			t.Fatalf("after %d patches: phase %s, conditions %+v", patches.Load(), p.Status.Phase, p.Status.Conditions)
		}
	})

	t.Run("two claims of one requested run: one writes, both own the run", func(t *testing.T) {
		key := k.pipeline(t, etlv1.PhaseRunRequested, "r1")
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := NewKube(k.c, key, "r1").Claim(ctx)
				errs <- err
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("Claim: %v", err)
			}
		}
		if p := k.get(t, key); p.Status.Phase != etlv1.PhaseRunning {
			t.Fatalf("phase %s", p.Status.Phase)
		}
	})

	t.Run("check, progress and finish", func(t *testing.T) {
		key := k.pipeline(t, etlv1.PhaseRunRequested, "r1")
		r := NewKube(k.c, key, "r1")
		if _, err := r.Claim(ctx); err != nil {
			t.Fatal(err)
		}
		if sig, err := r.Check(ctx); err != nil || sig != Continue {
			t.Fatalf("Check = %s, %v", sig, err)
		}
		now := time.Now().Truncate(time.Second)
		if err := r.Progress(ctx, Progress{RowsRead: 100, RowsWritten: 90, Batches: 2, Checkpoint: []string{"x", "7"}, CheckpointTime: now}); err != nil {
			t.Fatal(err)
		}
		p := k.get(t, key)
		if p.Status.Run.RowsRead != 100 || p.Status.Checkpoint == nil || p.Status.Checkpoint.Values[1] != "7" {
			t.Fatalf("progress not written: %+v %+v", p.Status.Run, p.Status.Checkpoint)
		}
		// The manager asks for a pause.
		p.Status.Phase = etlv1.PhasePauseRequested
		if err := k.c.Status().Update(ctx, p); err != nil {
			t.Fatal(err)
		}
		if sig, _ := r.Check(ctx); sig != Pause {
			t.Fatalf("Check = %s, want Pause", sig)
		}
		c, patches := k.conflicting(t)
		r.c = c
		if err := r.Finish(ctx, End{Phase: etlv1.PhasePaused, Progress: Progress{RowsRead: 150, RowsWritten: 140, Batches: 3}, Time: now}); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		p = k.get(t, key)
		if patches.Load() != 2 || p.Status.Phase != etlv1.PhasePaused || p.Status.Run.CompletionTime == nil || p.Status.Run.RowsRead != 150 {
			t.Fatalf("after Finish (%d patches): %s %+v", patches.Load(), p.Status.Phase, p.Status.Run)
		}
	})

	t.Run("nothing is written once the run is not ours", func(t *testing.T) {
		key := k.pipeline(t, etlv1.PhaseRunning, "r1")
		r := NewKube(k.c, key, "r1")
		if _, err := r.Check(ctx); err != nil {
			t.Fatal(err)
		}
		// The manager cancels the run and requests another.
		p := k.get(t, key)
		p.Status.Phase, p.Status.Run = etlv1.PhaseRunRequested, &etlv1.RunStatus{ID: "r2"}
		if err := k.c.Status().Update(ctx, p); err != nil {
			t.Fatal(err)
		}
		rv := k.get(t, key).ResourceVersion
		if sig, _ := r.Check(ctx); sig != Stop {
			t.Fatalf("Check = %s, want Stop", sig)
		}
		if err := r.Progress(ctx, Progress{RowsRead: 1}); err != nil {
			t.Fatal(err)
		}
		err := r.Finish(ctx, End{Phase: etlv1.PhaseFailed, Message: "x", Time: time.Now()})
		if !failure.IsFenced(err) {
			t.Fatalf("Finish on another run: %v", err)
		}
		if k.get(t, key).ResourceVersion != rv {
			t.Fatalf("the runner wrote to a run that is not its own")
		}
	})

	t.Run("a deleted pipeline stops the run", func(t *testing.T) {
		key := k.pipeline(t, etlv1.PhaseRunning, "r1")
		if err := k.c.Delete(ctx, &etlv1.ETLPipeline{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}); err != nil {
			t.Fatal(err)
		}
		r := NewKube(k.c, key, "r1")
		if sig, err := r.Check(ctx); sig != Stop || err != nil {
			t.Fatalf("Check = %s, %v", sig, err)
		}
		if _, err := r.Claim(ctx); !errors.Is(err, failure.ErrFenced) {
			t.Fatalf("Claim = %v", err)
		}
	})
}
