package controllers

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// The CRD's schema and CEL rules are the first line of defence: a bad pipeline never reaches
// the reconciler, and the user learns which field is wrong from kubectl.
var _ = Describe("ETLPipeline admission", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newTestNamespace(ctx)
	})

	// create submits a pipeline with a dry run: admission runs in full, nothing is stored.
	create := func(spec etlv1.ETLPipelineSpec) error {
		p := &etlv1.ETLPipeline{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "candidate"}, Spec: spec}
		return k8sClient.Create(ctx, p, client.DryRunAll)
	}

	DescribeTable("rejects a bad pipeline and names the field",
		func(base func() etlv1.ETLPipelineSpec, mutate func(*etlv1.ETLPipelineSpec), field string) {
			spec := base()
			mutate(&spec)
			err := create(spec)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring(field))
		},
		Entry("first task not SQL", tasksSpec, func(s *etlv1.ETLPipelineSpec) {
			s.Tasks = []etlv1.Task{{Name: "py", Python: "def transform(r): return r"}}
		}, "spec.tasks"),
		Entry("a later task is SQL", tasksSpec, func(s *etlv1.ETLPipelineSpec) {
			s.Tasks[1] = etlv1.Task{Name: "again", SQL: "SELECT 1"}
		}, "spec.tasks"),
		Entry("task with both sql and python", tasksSpec, func(s *etlv1.ETLPipelineSpec) {
			s.Tasks[1].SQL = "SELECT 1"
		}, "spec.tasks[1]"),
		Entry("task with neither sql nor python", tasksSpec, func(s *etlv1.ETLPipelineSpec) {
			s.Tasks[1].Python = ""
		}, "spec.tasks[1]"),
		Entry("duplicate task names", tasksSpec, func(s *etlv1.ETLPipelineSpec) {
			s.Tasks[1].Name = s.Tasks[0].Name
		}, "spec.tasks[1]"),
		Entry("bad target syntax", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Target.Name = "public.orders" }, "spec.target.name"),
		Entry("target in another schema", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Target.Name = "analytics.x.y" }, "spec.target.name"),
		Entry("negative batchSize", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.BatchSize = -1 }, "spec.batchSize"),
		Entry("batchSize 1000000", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.BatchSize = 1000000 }, "spec.batchSize"),
		Entry("Incremental without a cursor column", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Source.Cursor.Column = "" }, "spec.source.cursor.column"),
		Entry("bad cron", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Schedule = "every day" }, "spec.schedule"),
		Entry("unknown desiredState", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.DesiredState = "Sleeping" }, "spec.desiredState"),
		Entry("unknown mode", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Mode = "Sometimes" }, "spec.mode"),
		Entry("empty keyColumns", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Source.Cursor.KeyColumns = []string{} }, "spec.source.cursor.keyColumns"),
		Entry("duplicate keyColumns", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Source.Cursor.KeyColumns = []string{"id", "id"} }, "spec.source.cursor.keyColumns"),
		Entry("action on a postgres target", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Target.Action = etlv1.ActionIndex }, "spec.target.action"),
		Entry("neither query nor tasks", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Source.Query = "" }, "spec.source.query"),
		Entry("a key column that is not an identifier", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Source.Cursor.KeyColumns = []string{"id; drop"} }, "spec.source.cursor.keyColumns"),
		Entry("a bad connection name", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Source.Connection = "Ware_House" }, "spec.source.connection"),
		Entry("too many retries", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Retry.Attempts = 11 }, "spec.retry.attempts"),
		Entry("a negative cursor lag", legacySpec, func(s *etlv1.ETLPipelineSpec) {
			s.Source.Cursor.Lag = &metav1.Duration{Duration: -time.Second}
		}, "spec.source.cursor.lag"),
		Entry("a cursor lag beyond a week", legacySpec, func(s *etlv1.ETLPipelineSpec) {
			s.Source.Cursor.Lag = &metav1.Duration{Duration: 200 * time.Hour}
		}, "spec.source.cursor.lag"),
		Entry("a cursor lag on a Full pipeline", legacySpec, func(s *etlv1.ETLPipelineSpec) {
			s.Mode = etlv1.ModeFull
			s.Source.Cursor.Lag = &metav1.Duration{Duration: time.Minute}
		}, "spec.source.cursor.lag"),
		Entry("a soft-delete marker that is a key column", legacySpec, func(s *etlv1.ETLPipelineSpec) {
			s.Target.DeleteWhen = &etlv1.DeleteWhenSpec{Column: s.Source.Cursor.KeyColumns[0]}
		}, "spec.target.deleteWhen.column"),
		Entry("a soft-delete marker that is the cursor", legacySpec, func(s *etlv1.ETLPipelineSpec) {
			s.Target.DeleteWhen = &etlv1.DeleteWhenSpec{Column: s.Source.Cursor.Column}
		}, "spec.target.deleteWhen.column"),
		Entry("an unknown fullSync", legacySpec, func(s *etlv1.ETLPipelineSpec) { s.Target.FullSync = "Replace" }, "spec.target.fullSync"),
		Entry("a delete ratio above 1", legacySpec, func(s *etlv1.ETLPipelineSpec) {
			r := 1.5
			s.Target.MaxDeleteRatio = &r
		}, "spec.target.maxDeleteRatio"),
	)

	It("defaults fullSync to Upsert and maxDeleteRatio to 0.5, and takes a Mirror pipeline with a soft-delete marker", func() {
		spec := legacySpec()
		p := &etlv1.ETLPipeline{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "defaults"}, Spec: spec}
		Expect(k8sClient.Create(ctx, p, client.DryRunAll)).To(Succeed())
		Expect(p.Spec.Target.FullSync).To(Equal(etlv1.FullSyncUpsert))
		Expect(p.Spec.Target.MaxDeleteRatio).To(HaveValue(Equal(0.5)))
		spec.Mode = etlv1.ModeFull
		spec.Target.FullSync = etlv1.FullSyncMirror
		spec.Target.DeleteWhen = &etlv1.DeleteWhenSpec{Column: "deleted_at"}
		Expect(create(spec)).To(Succeed())
	})

	It("accepts a cursor lag on an Incremental pipeline", func() {
		spec := legacySpec()
		spec.Source.Cursor.Lag = &metav1.Duration{Duration: 30 * time.Second}
		Expect(create(spec)).To(Succeed())
	})

	It("rejects batchSize 0 sent explicitly", func() {
		// The Go type omits a zero batchSize, which the API server then defaults; a client
		// sending 0 on the wire must be refused.
		u := map[string]any{
			"apiVersion": "etl.sluice.dev/v1alpha1", "kind": "ETLPipeline",
			"metadata": map[string]any{"namespace": ns, "name": "zero"},
			"spec": map[string]any{
				"mode": "Full", "batchSize": 0,
				"source": map[string]any{"connection": "warehouse", "query": "SELECT 1", "cursor": map[string]any{"keyColumns": []any{"id"}}},
				"target": map[string]any{"name": "analytics.orders"},
			},
		}
		err := k8sClient.Create(ctx, &unstructured.Unstructured{Object: u}, client.DryRunAll)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.batchSize"))
	})

	It("accepts the four samples of config/samples", func() {
		for file, p := range samplePipelines(GinkgoT()) {
			p.Namespace = ns
			Expect(k8sClient.Create(ctx, p, client.DryRunAll)).To(Succeed(), file)
		}
	})
})
