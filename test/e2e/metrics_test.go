package e2e

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/sluice-dev/sluice/controllers"
	"github.com/sluice-dev/sluice/test/testenv"
)

// meteredYAML is a tasks-mode pipeline from public.orders_metered whose Python task sleeps a
// little per row, so that its run lasts long enough for Prometheus to scrape its runner.
func meteredYAML(name string) string {
	return fmt.Sprintf(`apiVersion: etl.sluice.dev/v1alpha1
kind: ETLPipeline
metadata:
  name: %s
spec:
  mode: Incremental
  source:
    connection: %s
    cursor:
      column: updated_at
      keyColumns: [id]
  tasks:
    - name: read
      sql: %s
    - name: slow
      python: |
        import time
        def transform(row):
            time.sleep(0.002)
            return row
  target:
    name: analytics.orders_metered
  batchSize: 100
`, name, connection, strconv.Quote(sourceOf("orders_metered")))
}

var _ = Describe("Metrics in a real Prometheus", func() {
	It("holds the pipelines' totals, freshness and batch latency, and fires PipelineFailed for a failing pipeline", func() {
		ns := newNamespace()

		By("Prometheus scrapes the manager with a token allowed /metrics, and the runner's port")
		mustKubectl("-n", ns, "create", "serviceaccount", "prometheus")
		binding := "sluice-metrics-" + ns
		mustKubectl("create", "clusterrolebinding", binding, "--clusterrole=sluice-metrics-reader", "--serviceaccount="+ns+":prometheus")
		DeferCleanup(func() { _, _ = kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found") })
		token := strings.TrimSpace(mustKubectl("-n", ns, "create", "token", "prometheus", "--duration=1h"))
		prom := testenv.StartPrometheus(GinkgoT(), testenv.PrometheusConfig{
			ScrapeInterval: 500 * time.Millisecond,
			Scrapes: []testenv.ScrapeTarget{
				{JobName: "sluice-manager", Targets: []string{fmt.Sprintf("127.0.0.1:%d", managerMetricsPort)}, Scheme: "https", BearerToken: token, InsecureSkipVerify: true, HonorLabels: true},
				{JobName: "sluice-runner", Targets: []string{fmt.Sprintf("127.0.0.1:%d", controllers.RunnerMetricsPort)}, HonorLabels: true},
			},
			RuleFiles: []string{filepath.Join(testenv.RepoRoot(), "config", "prometheus", "rules.yaml")},
			// The rules' `for:` are minutes long; the copy this server loads waits seconds.
			MaxFor: 2 * time.Second,
		})
		value := func(promql string) func() (float64, error) {
			return func() (float64, error) {
				samples := prom.Query(GinkgoT(), promql)
				if len(samples) != 1 {
					return -1, fmt.Errorf("%s: %d samples", promql, len(samples))
				}
				return samples[0].Value, nil
			}
		}
		Eventually(value(`up{job="sluice-manager"}`)).WithTimeout(30*time.Second).WithPolling(time.Second).Should(Equal(1.0),
			func() string { return "the manager's metrics answer the token:\n" + prom.Diagnostics() })

		By("a run of 3000 rows, recent ones, long enough to be scraped")
		const rows = 3000
		createOrders("orders_metered", rows)
		execSQL(fmt.Sprintf(`UPDATE public.orders_metered SET updated_at = now() - (%d - id) * interval '1 millisecond'`, rows))
		apply(ns, meteredYAML("metered"))
		waitIdleAndReady(ns, "metered")
		expectSame("orders_metered")

		sel := fmt.Sprintf(`{namespace=%q,name="metered"}`, ns)
		Eventually(value("sluice_pipeline_rows_written_total" + sel)).WithTimeout(30 * time.Second).WithPolling(time.Second).Should(Equal(float64(rows)))
		Expect(value("sluice_pipeline_rows_read_total" + sel)()).To(Equal(float64(rows)))
		// Rows count the run in flight; a run counts once the manager folded it into the
		// totals, a pass after the runner reported Idle, and the scrape after that shows it.
		Eventually(value(`sluice_pipeline_runs_total{namespace="` + ns + `",name="metered",outcome="succeeded"}`)).
			WithTimeout(30 * time.Second).WithPolling(time.Second).Should(Equal(1.0))
		Expect(value("sluice_pipeline_freshness_seconds"+sel)()).To(BeNumerically("<", 120), "the checkpoint is the newest row, written moments ago")
		// The runner's series went stale when its pod ended: look back over the run.
		Expect(value(`sum(max_over_time(sluice_runner_batch_duration_seconds_count`+sel+`[10m]))`)()).To(BeNumerically(">", 0),
			"the runner was scraped while it ran")
		Expect(value(`max(max_over_time(sluice_runner_rows_read_total` + sel + `[10m]))`)()).To(BeNumerically(">", 0))

		By("a pipeline that fails: PipelineFailed fires for it, not for the healthy one")
		apply(ns, strings.Replace(pipelineYAML("broken", "orders_metered", 100, ""), "analytics.orders_metered", "analytics.not_whitelisted", 1))
		prom.WaitForAlert(GinkgoT(), "PipelineFailed", map[string]string{"namespace": ns, "name": "broken"}, 90*time.Second, "firing")
		for _, a := range prom.Alerts(GinkgoT()) {
			Expect(a.Labels["namespace"] == ns && a.Labels["name"] == "metered").To(BeFalse(), "alert %s for the healthy pipeline", a.Name)
		}
	})
})
