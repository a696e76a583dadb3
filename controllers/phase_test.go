package controllers

import (
	"errors"
	"fmt"
	"testing"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

const (
	pIdle    = etlv1.PhaseIdle
	pReq     = etlv1.PhaseRunRequested
	pRun     = etlv1.PhaseRunning
	pPauseRq = etlv1.PhasePauseRequested
	pPaused  = etlv1.PhasePaused
	pFailed  = etlv1.PhaseFailed
	dRun     = etlv1.DesiredRunning
	dPause   = etlv1.DesiredPaused
)

// edge is one legal phase change and who makes it.
type edge struct{ from, to etlv1.Phase }

// managerEdges and runnerEdges are the whole transition graph, written out independently of
// NextPhase: any other change is a bug.
var (
	managerEdges = map[edge]bool{
		{pIdle, pReq}: true, {pIdle, pPaused}: true, {pIdle, pFailed}: true,
		{pReq, pPaused}: true, {pReq, pFailed}: true,
		{pRun, pPauseRq}: true, {pRun, pFailed}: true,
		{pPauseRq, pPaused}: true, {pPauseRq, pFailed}: true,
		{pPaused, pReq}: true, {pPaused, pFailed}: true,
		{pFailed, pReq}: true, {pFailed, pPaused}: true,
	}
	runnerEdges = map[edge]bool{
		{pReq, pRun}: true, {pReq, pFailed}: true,
		{pRun, pIdle}: true, {pRun, pFailed}: true,
		{pPauseRq, pIdle}: true, {pPauseRq, pPaused}: true, {pPauseRq, pFailed}: true,
	}
)

var (
	allPhases   = []etlv1.Phase{"", pIdle, pReq, pRun, pPauseRq, pPaused, pFailed}
	allDesired  = []etlv1.DesiredState{dRun, dPause}
	allRequests = []etlv1.RunTrigger{"", etlv1.TriggerCreated, etlv1.TriggerSpecChanged, etlv1.TriggerAnnotation, etlv1.TriggerSchedule, etlv1.TriggerResume}
	allJobs     = []JobOutcome{JobAbsent, JobActive, JobSucceeded, JobFailed}
	allReports  = []RunnerReport{ReportNone, ReportClaim, ReportIdle, ReportPaused, ReportFailed}
)

func TestNextPhaseTransitions(t *testing.T) {
	type want struct {
		phase   etlv1.Phase
		refused bool
	}
	cases := []struct {
		name string
		in   PhaseInput
		want want
	}{
		// The seed: Idle -> RunRequested -> Running -> Idle.
		{"idle + request -> run requested", PhaseInput{Phase: pIdle, Desired: dRun, Request: etlv1.TriggerAnnotation, Job: JobSucceeded}, want{phase: pReq}},
		{"new pipeline created running -> run requested", PhaseInput{Phase: "", Desired: dRun, Request: etlv1.TriggerCreated, Job: JobAbsent}, want{phase: pReq}},
		{"runner claims", PhaseInput{Phase: pReq, Desired: dRun, Job: JobActive, Report: ReportClaim}, want{phase: pRun}},
		{"runner reports idle", PhaseInput{Phase: pRun, Desired: dRun, Job: JobActive, Report: ReportIdle}, want{phase: pIdle}},
		// Running -> PauseRequested -> Paused.
		{"pause while running -> pause requested", PhaseInput{Phase: pRun, Desired: dPause, Job: JobActive}, want{phase: pPauseRq}},
		{"runner reports paused", PhaseInput{Phase: pPauseRq, Desired: dPause, Job: JobActive, Report: ReportPaused}, want{phase: pPaused}},
		// Paused -> RunRequested -> Running.
		{"resume -> run requested", PhaseInput{Phase: pPaused, Desired: dRun, Request: etlv1.TriggerResume, Job: JobSucceeded}, want{phase: pReq}},
		// Running -> Failed.
		{"runner reports failed", PhaseInput{Phase: pRun, Desired: dRun, Job: JobActive, Report: ReportFailed}, want{phase: pFailed}},
		{"job failed without report while running", PhaseInput{Phase: pRun, Desired: dRun, Job: JobFailed}, want{phase: pFailed}},

		// Pausing in every phase.
		{"pause while idle -> paused", PhaseInput{Phase: pIdle, Desired: dPause, Job: JobSucceeded}, want{phase: pPaused}},
		{"new pipeline created paused -> paused", PhaseInput{Phase: "", Desired: dPause, Request: etlv1.TriggerCreated, Job: JobAbsent}, want{phase: pPaused}},
		{"pause while run requested cancels", PhaseInput{Phase: pReq, Desired: dPause, Job: JobActive}, want{phase: pPaused}},
		{"pause while run requested without job yet", PhaseInput{Phase: pReq, Desired: dPause, Job: JobAbsent}, want{phase: pPaused}},
		{"pause requested stays until the runner reports", PhaseInput{Phase: pPauseRq, Desired: dPause, Job: JobActive}, want{phase: pPauseRq}},
		{"resume before the runner paused waits", PhaseInput{Phase: pPauseRq, Desired: dRun, Job: JobActive}, want{phase: pPauseRq}},
		{"pause requested, job ended without report", PhaseInput{Phase: pPauseRq, Desired: dPause, Job: JobSucceeded}, want{phase: pPaused}},
		{"pause requested, job deleted", PhaseInput{Phase: pPauseRq, Desired: dPause, Job: JobAbsent}, want{phase: pPaused}},
		{"pause requested, job failed", PhaseInput{Phase: pPauseRq, Desired: dPause, Job: JobFailed}, want{phase: pFailed}},
		{"paused stays paused", PhaseInput{Phase: pPaused, Desired: dPause, Request: etlv1.TriggerAnnotation, Job: JobAbsent}, want{phase: pPaused}},

		// Requests wait for the run in flight: never two runs at once.
		{"request while run requested waits", PhaseInput{Phase: pReq, Desired: dRun, Request: etlv1.TriggerAnnotation, Job: JobActive}, want{phase: pReq}},
		{"request while running waits", PhaseInput{Phase: pRun, Desired: dRun, Request: etlv1.TriggerSpecChanged, Job: JobActive}, want{phase: pRun}},
		{"request while pause requested waits", PhaseInput{Phase: pPauseRq, Desired: dRun, Request: etlv1.TriggerSchedule, Job: JobActive}, want{phase: pPauseRq}},
		{"idle without request stays", PhaseInput{Phase: pIdle, Desired: dRun, Job: JobSucceeded}, want{phase: pIdle}},

		// Job outcomes without a runner report.
		{"job failed before the claim", PhaseInput{Phase: pReq, Desired: dRun, Job: JobFailed}, want{phase: pFailed}},
		{"runner not started within the deadline", PhaseInput{Phase: pReq, Desired: dRun, Job: JobActive, StartExpired: true}, want{phase: pFailed}},
		{"a pause wins over the start deadline", PhaseInput{Phase: pReq, Desired: dPause, Job: JobActive, StartExpired: true}, want{phase: pPaused}},
		{"job completed before the claim", PhaseInput{Phase: pReq, Desired: dRun, Job: JobSucceeded}, want{phase: pFailed}},
		{"job completed while running without report", PhaseInput{Phase: pRun, Desired: dRun, Job: JobSucceeded}, want{phase: pFailed}},
		{"job deleted while running", PhaseInput{Phase: pRun, Desired: dRun, Job: JobAbsent}, want{phase: pFailed}},
		{"job not created yet while run requested", PhaseInput{Phase: pReq, Desired: dRun, Job: JobAbsent}, want{phase: pReq}},
		{"old job outcome ignored when idle", PhaseInput{Phase: pIdle, Desired: dRun, Job: JobFailed}, want{phase: pIdle}},

		// Spec problems.
		{"bad spec on a new pipeline fails", PhaseInput{Phase: "", Desired: dRun, Request: etlv1.TriggerCreated, SpecProblem: true, Job: JobAbsent}, want{phase: pFailed}},
		{"bad spec while idle fails", PhaseInput{Phase: pIdle, Desired: dRun, Request: etlv1.TriggerSpecChanged, SpecProblem: true, Job: JobSucceeded}, want{phase: pFailed}},
		{"bad spec while paused fails", PhaseInput{Phase: pPaused, Desired: dPause, SpecProblem: true, Job: JobAbsent}, want{phase: pFailed}},
		{"bad spec before the job exists fails", PhaseInput{Phase: pReq, Desired: dRun, SpecProblem: true, Job: JobAbsent}, want{phase: pFailed}},
		{"bad spec lets a created job run", PhaseInput{Phase: pReq, Desired: dRun, SpecProblem: true, Job: JobActive}, want{phase: pReq}},
		{"bad spec lets a claimed run finish", PhaseInput{Phase: pRun, Desired: dRun, SpecProblem: true, Job: JobActive}, want{phase: pRun}},
		{"bad spec keeps failed", PhaseInput{Phase: pFailed, Desired: dRun, Request: etlv1.TriggerSpecChanged, SpecProblem: true, Job: JobAbsent}, want{phase: pFailed}},

		// Failed leaves only on a new generation or an explicit request.
		{"failed + spec change -> run requested", PhaseInput{Phase: pFailed, Desired: dRun, Request: etlv1.TriggerSpecChanged, Job: JobFailed}, want{phase: pReq}},
		{"failed + annotation -> run requested", PhaseInput{Phase: pFailed, Desired: dRun, Request: etlv1.TriggerAnnotation, Job: JobFailed}, want{phase: pReq}},
		{"failed + paused by a spec change -> paused", PhaseInput{Phase: pFailed, Desired: dPause, Request: etlv1.TriggerSpecChanged, Job: JobFailed}, want{phase: pPaused}},
		{"failed + schedule tick refused", PhaseInput{Phase: pFailed, Desired: dRun, Request: etlv1.TriggerSchedule, Job: JobFailed}, want{phase: pFailed, refused: true}},
		{"infra failure + schedule tick runs again", PhaseInput{Phase: pFailed, Desired: dRun, Request: etlv1.TriggerSchedule, Job: JobFailed, InfraFailure: true}, want{phase: pReq}},
		{"infra failure + bad spec stays failed", PhaseInput{Phase: pFailed, Desired: dRun, Request: etlv1.TriggerSchedule, SpecProblem: true, InfraFailure: true}, want{phase: pFailed}},
		{"failed + created refused", PhaseInput{Phase: pFailed, Desired: dRun, Request: etlv1.TriggerCreated, Job: JobAbsent}, want{phase: pFailed, refused: true}},
		{"failed without request stays", PhaseInput{Phase: pFailed, Desired: dPause, Job: JobFailed}, want{phase: pFailed}},

		// The runner's refused writes.
		{"claim from idle refused", PhaseInput{Phase: pIdle, Desired: dRun, Job: JobActive, Report: ReportClaim}, want{phase: pIdle, refused: true}},
		{"claim from paused refused (cancelled)", PhaseInput{Phase: pPaused, Desired: dPause, Job: JobActive, Report: ReportClaim}, want{phase: pPaused, refused: true}},
		{"claim from failed refused", PhaseInput{Phase: pFailed, Desired: dRun, Job: JobActive, Report: ReportClaim}, want{phase: pFailed, refused: true}},
		{"re-claim by a replacement pod", PhaseInput{Phase: pRun, Desired: dRun, Job: JobActive, Report: ReportClaim}, want{phase: pRun}},
		{"re-claim during pause requested", PhaseInput{Phase: pPauseRq, Desired: dPause, Job: JobActive, Report: ReportClaim}, want{phase: pPauseRq}},
		{"paused report without a pause request refused", PhaseInput{Phase: pRun, Desired: dRun, Job: JobActive, Report: ReportPaused}, want{phase: pRun, refused: true}},
		{"idle report before the claim refused", PhaseInput{Phase: pReq, Desired: dRun, Job: JobActive, Report: ReportIdle}, want{phase: pReq, refused: true}},
		{"idle report when already idle refused", PhaseInput{Phase: pIdle, Desired: dRun, Job: JobActive, Report: ReportIdle}, want{phase: pIdle, refused: true}},
		{"failed report from paused refused", PhaseInput{Phase: pPaused, Desired: dRun, Job: JobActive, Report: ReportFailed}, want{phase: pPaused, refused: true}},
		{"failed report before the claim", PhaseInput{Phase: pReq, Desired: dRun, Job: JobActive, Report: ReportFailed}, want{phase: pFailed}},
		{"idle report during pause requested", PhaseInput{Phase: pPauseRq, Desired: dPause, Job: JobActive, Report: ReportIdle}, want{phase: pIdle}},
		{"unknown phase refused", PhaseInput{Phase: "Bogus", Desired: dRun, Job: JobAbsent}, want{phase: "Bogus", refused: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NextPhase(tc.in)
			if refused := errors.Is(err, ErrTransitionRefused); refused != tc.want.refused {
				t.Fatalf("NextPhase(%+v) error = %v, want refused=%v", tc.in, err, tc.want.refused)
			}
			if err != nil && !errors.Is(err, ErrTransitionRefused) {
				t.Fatalf("NextPhase(%+v) unexpected error %v", tc.in, err)
			}
			if got != tc.want.phase {
				t.Fatalf("NextPhase(%+v) = %q, want %q", tc.in, got, tc.want.phase)
			}
		})
	}
}

// TestNextPhaseExhaustive walks every input and checks the invariants the rest of Sluice relies
// on, so that no combination the explicit table forgot can break them.
func TestNextPhaseExhaustive(t *testing.T) {
	seenManager := map[edge]bool{}
	seenRunner := map[edge]bool{}
	n := 0
	for _, phase := range allPhases {
		for _, desired := range allDesired {
			for _, req := range allRequests {
				for _, job := range allJobs {
					for _, report := range allReports {
						for _, bad := range []bool{false, true} {
							n++
							in := PhaseInput{Phase: phase, Desired: desired, Request: req, SpecProblem: bad, Job: job, Report: report}
							got, err := NextPhase(in)
							name := fmt.Sprintf("%+v", in)
							if err != nil {
								if !errors.Is(err, ErrTransitionRefused) {
									t.Fatalf("%s: error %v is not a refusal", name, err)
								}
								if got != phase {
									t.Fatalf("%s: refused but moved to %q", name, got)
								}
								continue
							}
							from := phase
							if from == "" {
								from = pIdle
							}
							if got == phase {
								continue
							}
							e := edge{from, got}
							if report == ReportNone {
								if !managerEdges[e] {
									t.Fatalf("%s: manager move %s -> %s is not in the graph", name, from, got)
								}
								seenManager[e] = true
							} else {
								if !runnerEdges[e] {
									t.Fatalf("%s: runner move %s -> %s is not in the graph", name, from, got)
								}
								seenRunner[e] = true
							}
							// Never two runs at once: a run starts only from rest.
							if got == pReq && isActive(phase) {
								t.Fatalf("%s: a run was requested while one is in flight", name)
							}
							if got == pReq && (bad || desired == dPause || report != ReportNone) {
								t.Fatalf("%s: a run was requested with a bad spec, while paused, or by the runner", name)
							}
							// Failed leaves only on a new generation or an explicit request.
							if phase == pFailed && report == ReportNone && !explicitRequest(req) {
								t.Fatalf("%s: left Failed without an explicit request", name)
							}
							// Only the runner claims, and only the runner ends a run as Idle.
							if (got == pRun || got == pIdle) && report == ReportNone {
								t.Fatalf("%s: the manager wrote the runner's phase %s", name, got)
							}
						}
					}
				}
			}
		}
	}
	for e := range managerEdges {
		if !seenManager[e] {
			t.Errorf("manager edge %s -> %s is never taken", e.from, e.to)
		}
	}
	for e := range runnerEdges {
		if !seenRunner[e] {
			t.Errorf("runner edge %s -> %s is never taken", e.from, e.to)
		}
	}
	t.Logf("checked %d inputs", n)
}
