package status

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
)

// FieldOwner is the field manager of the runner's status writes.
const FieldOwner = "sluice-runner"

// Kube reports to the ETLPipeline's status subresource. Every write is a merge patch that
// carries the resourceVersion it was computed from (optimistic concurrency), and is computed
// only after re-checking that the pipeline's current run is this runner's: a runner never
// overwrites a run the manager has replaced or cancelled.
type Kube struct {
	c     client.Client
	key   types.NamespacedName
	runID string
	// last is the pipeline as last read, the base of the next progress patch.
	last *etlv1.ETLPipeline
	// finishAttempts bounds Finish's retries of API errors other than conflicts.
	finishAttempts int
	backoff        time.Duration
	opts           options
}

var _ Reporter = (*Kube)(nil)

// NewKube returns a reporter for run runID of the pipeline key. The client needs get and patch
// on etlpipelines/status, and create on events.
func NewKube(c client.Client, key types.NamespacedName, runID string, opts ...Option) *Kube {
	return &Kube{c: c, key: key, runID: runID, finishAttempts: 6, backoff: time.Second, opts: buildOptions(opts)}
}

func (k *Kube) get(ctx context.Context) (*etlv1.ETLPipeline, error) {
	p := &etlv1.ETLPipeline{}
	if err := k.c.Get(ctx, k.key, p); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("pipeline %s is gone: %w", k.key, failure.ErrFenced)
		}
		return nil, failure.Infra(fmt.Errorf("get pipeline %s: %w", k.key, err))
	}
	k.last = p
	return p, nil
}

// patch writes p's status as a merge patch from base, guarded by base's resourceVersion.
func (k *Kube) patch(ctx context.Context, base, p *etlv1.ETLPipeline) error {
	err := k.c.Status().Patch(ctx, p, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}),
		client.FieldOwner(FieldOwner))
	if err == nil {
		k.last = p
	}
	return err
}

// Claim implements Reporter: a conflict means someone else wrote in between, so it re-reads
// and decides again (the other writer may have been a runner of the same run claiming first).
func (k *Kube) Claim(ctx context.Context) (Claim, error) {
	for attempt := 0; ; attempt++ {
		p, err := k.get(ctx)
		if err != nil {
			return Claim{}, err
		}
		action, reason := decideClaim(&p.Status, k.runID)
		switch action {
		case claimRefused:
			return Claim{}, fmt.Errorf("claim pipeline %s: %s: %w", k.key, reason, failure.ErrFenced)
		case claimAgain:
			return Claim{Trigger: p.Status.Run.Trigger}, nil
		}
		base := p.DeepCopy()
		applyClaim(&p.Status)
		err = k.patch(ctx, base, p)
		if err == nil {
			return Claim{Trigger: p.Status.Run.Trigger}, nil
		}
		if !apierrors.IsConflict(err) || attempt >= 10 {
			return Claim{}, failure.Infra(fmt.Errorf("claim pipeline %s: %w", k.key, err))
		}
	}
}

// Check implements Reporter with one GET.
func (k *Kube) Check(ctx context.Context) (Signal, error) {
	p, err := k.get(ctx)
	if err != nil {
		if failure.IsFenced(err) {
			return Stop, nil
		}
		return Continue, err
	}
	return signalOf(&p.Status, k.runID), nil
}

// Progress implements Reporter. It patches from the pipeline as last read and, on a conflict,
// re-reads once; a second conflict skips this report.
func (k *Kube) Progress(ctx context.Context, pr Progress) error {
	for attempt := 0; attempt < 2; attempt++ {
		p := k.last
		if p == nil || attempt > 0 {
			var err error
			if p, err = k.get(ctx); err != nil {
				return err
			}
		}
		if signalOf(&p.Status, k.runID) == Stop {
			return nil // the next Check stops the run
		}
		p = p.DeepCopy()
		base := p.DeepCopy()
		if !applyProgress(&p.Status, pr, k.opts.redact) {
			return nil
		}
		err := k.patch(ctx, base, p)
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) {
			return failure.Infra(fmt.Errorf("report progress of pipeline %s: %w", k.key, err))
		}
	}
	return nil
}

// Finish implements Reporter: read, re-check the run id, apply, patch; conflicts retry at
// once, other API errors after a backoff.
func (k *Kube) Finish(ctx context.Context, e End) error {
	var lastErr error
	wait := k.backoff
	for attempt := 0; attempt < k.finishAttempts; {
		p, err := k.get(ctx)
		if err == nil {
			if signalOf(&p.Status, k.runID) == Stop {
				return fmt.Errorf("report end of run %s of pipeline %s: %w", k.runID, k.key, failure.ErrFenced)
			}
			base := p.DeepCopy()
			applyEnd(&p.Status, e, k.opts.redact)
			if err = k.patch(ctx, base, p); err == nil {
				return nil
			}
			if apierrors.IsConflict(err) {
				continue
			}
		} else if failure.IsFenced(err) {
			return err
		}
		lastErr = err
		attempt++
		if attempt >= k.finishAttempts {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("report end of run %s of pipeline %s: %w", k.runID, k.key, errors.Join(ctx.Err(), lastErr))
		case <-t.C:
		}
		wait *= 2
	}
	return fmt.Errorf("report end of run %s of pipeline %s: %w", k.runID, k.key, lastErr)
}

// Event implements Eventer: an events.k8s.io Event regarding the pipeline, from the runner.
func (k *Kube) Event(ctx context.Context, warning bool, reason, message string) {
	p := k.last
	if p == nil {
		var err error
		if p, err = k.get(ctx); err != nil {
			return
		}
	}
	if k.opts.redact {
		message = RedactValues(message)
	}
	typ := corev1.EventTypeNormal
	if warning {
		typ = corev1.EventTypeWarning
	}
	now := metav1.NewMicroTime(time.Now())
	ev := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:    p.Namespace,
			GenerateName: p.Name + "-",
		},
		EventTime:           now,
		ReportingController: "etl.sluice.dev/runner",
		ReportingInstance:   "sluice-runner-" + k.runID,
		Action:              "Run",
		Reason:              reason,
		Note:                truncate(message, 1024),
		Type:                typ,
		Regarding: corev1.ObjectReference{
			APIVersion: etlv1.GroupVersion.String(), Kind: "ETLPipeline",
			Namespace: p.Namespace, Name: p.Name, UID: p.UID, ResourceVersion: p.ResourceVersion,
		},
	}
	_ = k.c.Create(ctx, ev)
}
