package controllers

import (
	"fmt"
	"slices"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

func TestJobsToPrune(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	job := func(name string, age int, outcome batchv1.JobConditionType) batchv1.Job {
		j := batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(-time.Duration(age) * time.Minute)),
			Labels: map[string]string{etlv1.LabelRunID: name}}}
		if outcome != "" {
			j.Status.Conditions = []batchv1.JobCondition{{Type: outcome, Status: corev1.ConditionTrue}}
		}
		return j
	}
	var jobs []batchv1.Job
	for i := range 6 {
		jobs = append(jobs, job(fmt.Sprintf("ok%d", i), i, batchv1.JobComplete))
	}
	for i := range 4 {
		jobs = append(jobs, job(fmt.Sprintf("bad%d", i), 10+i, batchv1.JobFailed))
	}
	jobs = append(jobs, job("active", 100, ""), job("forget-abc", 200, batchv1.JobComplete))
	names := func(js []*batchv1.Job) []string {
		var out []string
		for _, j := range js {
			out = append(out, j.Name)
		}
		slices.Sort(out)
		return out
	}
	cases := []struct {
		name           string
		current        string
		keepOK, keepKO int
		want           []string
	}{
		{"keep three of each", "", 3, 3, []string{"bad3", "ok3", "ok4", "ok5"}},
		{"the current run's Job stays whatever its age", "ok5", 3, 3, []string{"bad3", "ok3", "ok4"}},
		{"keep none", "", 0, 0, []string{"bad0", "bad1", "bad2", "bad3", "ok0", "ok1", "ok2", "ok3", "ok4", "ok5"}},
		{"keep more than there are", "", 10, 10, nil},
	}
	for _, tc := range cases {
		if got := names(jobsToPrune(jobs, tc.current, tc.keepOK, tc.keepKO)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: prune %v, want %v", tc.name, got, tc.want)
		}
	}
}
