package controllers

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestFoldRun(t *testing.T) {
	at := func(s int) *metav1.Time { v := metav1.NewTime(time.Unix(1_800_000_000+int64(s), 0)); return &v }
	run := func(id string, rows int64, end *metav1.Time) *etlv1.RunStatus {
		return &etlv1.RunStatus{ID: id, Trigger: etlv1.TriggerSchedule, StartTime: at(0), CompletionTime: end,
			RowsRead: rows, RowsWritten: rows - 1, RowsDeleted: 1, RowsRejected: 2, Batches: 2}
	}
	st := &etlv1.ETLPipelineStatus{}
	steps := []struct {
		phase     etlv1.Phase
		run       *etlv1.RunStatus
		folded    bool
		written   int64
		succeeded int64
		failed    int64
		paused    int64
		history   int
	}{
		{etlv1.PhaseRunning, run("a", 10, nil), false, 0, 0, 0, 0, 0},
		{etlv1.PhaseIdle, run("a", 10, at(75)), true, 9, 1, 0, 0, 1},
		// The same ended run seen again (a second pass, a manager restart): counted once.
		{etlv1.PhaseIdle, run("a", 10, at(75)), false, 9, 1, 0, 0, 1},
		{etlv1.PhaseRunRequested, &etlv1.RunStatus{ID: "b"}, false, 9, 1, 0, 0, 1},
		{etlv1.PhaseFailed, run("b", 5, at(30)), true, 13, 1, 1, 0, 2},
		{etlv1.PhasePaused, run("c", 3, at(10)), true, 15, 1, 1, 1, 3},
		// Cancelled before its claim: no completion time, nothing to count.
		{etlv1.PhaseIdle, &etlv1.RunStatus{ID: "d"}, false, 15, 1, 1, 1, 3},
		{etlv1.PhaseIdle, run("e", 1, at(5)), true, 15, 2, 1, 1, 4},
		{etlv1.PhaseIdle, run("f", 1, at(5)), true, 15, 3, 1, 1, 5},
		{etlv1.PhaseIdle, run("g", 1, at(5)), true, 15, 4, 1, 1, etlv1.MaxRunHistory},
	}
	for i, s := range steps {
		st.Phase, st.Run = s.phase, s.run
		sum := foldRun(st)
		if (sum != nil) != s.folded {
			t.Fatalf("step %d (%s %s): folded %v", i, s.phase, s.run.ID, sum != nil)
		}
		tot := st.Totals
		if tot == nil {
			if s.written != 0 {
				t.Fatalf("step %d: no totals", i)
			}
			continue
		}
		if tot.RowsWritten != s.written || tot.RunsSucceeded != s.succeeded || tot.RunsFailed != s.failed || tot.RunsPaused != s.paused ||
			len(st.History) != s.history {
			t.Fatalf("step %d: totals %+v, history %d", i, tot, len(st.History))
		}
		if sum != nil && (st.History[0].ID != s.run.ID || st.History[0].Outcome != s.phase) {
			t.Fatalf("step %d: newest history entry %+v", i, st.History[0])
		}
	}
	// Six runs were counted, each with two rejects; the newest summary carries its own.
	if st.Totals.RowsRejected != 12 || st.History[0].RowsRejected != 2 {
		t.Errorf("rejects: totals %d, newest run %d; want 12 and 2", st.Totals.RowsRejected, st.History[0].RowsRejected)
	}
	if got := st.History[len(st.History)-1].ID; got != "b" {
		t.Errorf("the oldest kept run is %s, want b (a went)", got)
	}
	if st.Totals.LastSuccessTime == nil || !st.Totals.LastSuccessTime.Equal(at(5)) || st.History[0].Duration != "5s" {
		t.Errorf("last success %v, duration %q", st.Totals.LastSuccessTime, st.History[0].Duration)
	}
}

var _ = Describe("Run history", func() {
	It("keeps the totals and the last runs in the status, and tells a pause and a resume in events, in order", func() {
		ctx := context.Background()
		ns := newTestNamespace(ctx)
		p := createPipeline(ctx, ns, "history", legacySpec())
		first := waitForRun(ctx, p, etlv1.TriggerCreated, 1)
		claim(ctx, p, first.ID)
		reportEnd(ctx, p, first.ID, etlv1.PhaseIdle)
		Eventually(func() []etlv1.RunSummary { return getPipeline(ctx, p).Status.History }, timeout, interval).Should(HaveLen(1))

		By("a second run, paused, then resumed")
		annotate(ctx, p, "again")
		second := waitForRun(ctx, p, etlv1.TriggerAnnotation, 2)
		claim(ctx, p, second.ID)
		editSpec(ctx, p, func(s *etlv1.ETLPipelineSpec) { s.DesiredState = etlv1.DesiredPaused })
		Eventually(phaseOf(ctx, p), timeout, interval).Should(Equal(etlv1.PhasePauseRequested))
		reportEnd(ctx, p, second.ID, etlv1.PhasePaused)
		// The manager's pass that records the pause, before the resume.
		Eventually(conditionOf(ctx, p, etlv1.ConditionReady), timeout, interval).Should(Equal("True/" + etlv1.ReasonPaused))
		editSpec(ctx, p, func(s *etlv1.ETLPipelineSpec) { s.DesiredState = etlv1.DesiredRunning })
		third := waitForRun(ctx, p, etlv1.TriggerResume, 3)

		st := getPipeline(ctx, p).Status
		Expect(st.Totals).NotTo(BeNil())
		Expect(st.Totals.RowsWritten).To(Equal(int64(20)), "two ended runs of 10 rows, each counted once")
		Expect(st.Totals.RunsSucceeded).To(Equal(int64(1)))
		Expect(st.Totals.RunsPaused).To(Equal(int64(1)))
		Expect(st.Totals.LastSuccessTime).NotTo(BeNil())
		Expect(st.History).To(HaveLen(2))
		Expect(st.History[0].ID).To(Equal(second.ID))
		Expect(st.History[0].Outcome).To(Equal(etlv1.PhasePaused))
		Expect(st.History[1].ID).To(Equal(first.ID))
		Expect(st.History[1].Outcome).To(Equal(etlv1.PhaseIdle))
		Expect(st.History[1].Trigger).To(Equal(etlv1.TriggerCreated))

		By("the events, oldest first")
		var got []string
		Eventually(func() []string {
			events := eventsOf(ctx, p)
			sort.SliceStable(events, func(i, j int) bool { return events[i].EventTime.Before(&events[j].EventTime) })
			got = got[:0]
			for _, e := range events {
				got = append(got, e.Reason+": "+e.Note)
			}
			return got
		}, timeout, interval).Should(ContainElement(ContainSubstring("run " + third.ID + " (Resume) requested")))
		order := []string{
			"RunRequested: run " + first.ID,
			"RunEnded: run " + first.ID + " (Created) completed",
			"RunRequested: run " + second.ID,
			"PauseRequested:",
			"RunEnded: run " + second.ID + " (Annotation) paused",
			"RunRequested: run " + third.ID + " (Resume)",
		}
		at := 0
		for _, line := range got {
			if at < len(order) && strings.HasPrefix(line, order[at]) {
				at++
			}
		}
		Expect(at).To(Equal(len(order)), "events in order %v; got\n%s", order, strings.Join(got, "\n"))
		// The pause's transition, beside its RunEnded (the same pass writes both).
		at = 0
		for _, line := range got {
			if at < 3 && strings.HasPrefix(line, []string{"PauseRequested:", "Paused:", "RunRequested: run " + third.ID}[at]) {
				at++
			}
		}
		Expect(at).To(Equal(3), "PauseRequested, Paused, then the resumed run; got\n%s", strings.Join(got, "\n"))
		ended := 0
		for _, line := range got {
			if strings.HasPrefix(line, "RunEnded: run "+second.ID) {
				ended++
			}
		}
		Expect(ended).To(Equal(1), "one RunEnded per run; got\n%s", strings.Join(got, "\n"))
	})
})
