package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// checkpointTable is the table of the checkpoint spec, whitelisted for its duration.
const checkpointTable = "orders_checkpoint"

// queryText returns the single text a query yields.
func queryText(sql string, args ...any) string {
	GinkgoHelper()
	conn := pg()
	defer func() { _ = conn.Close(context.Background()) }()
	var s string
	Expect(conn.QueryRow(context.Background(), sql, args...).Scan(&s)).To(Succeed(), "SQL: %s", sql)
	return s
}

// eventNotes returns the messages of the events of reason in ns.
func eventNotes(ns, reason string) string {
	GinkgoHelper()
	out, err := kubectl("get", "events", "-n", ns, "--field-selector", "reason="+reason, "-o", "jsonpath={.items[*].message}")
	Expect(err).NotTo(HaveOccurred())
	return out
}

var _ = Describe("Checkpoint operations with kubectl sluice", func() {
	It("resets and sets a paused pipeline's checkpoint as the user the API server knows, and refuses while it runs", func() {
		ns := newNamespace()
		plugins := pluginPath()
		const rows = 200000
		createOrders(checkpointTable, rows)
		whitelistForSpec(checkpointTable)
		apply(ns, pipelineYAML("moved", checkpointTable, 5000, ""))
		waitIdleAndReady(ns, "moved")
		user := strings.TrimSpace(mustKubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"))
		Expect(user).NotTo(BeEmpty())

		By("checkpoint reset on a Running pipeline is refused with the reason")
		// A pipeline whose Python task sleeps per row stays Running for half a minute.
		createOrders("orders_busy", 3000)
		whitelistForSpec("orders_busy")
		busy := strings.Replace(strings.ReplaceAll(meteredYAML("busy"), "orders_metered", "orders_busy"), "time.sleep(0.002)", "time.sleep(0.01)", 1)
		apply(ns, busy)
		waitRunning(ns, "busy")
		_, stderr, code := kubectlSluice(plugins, "checkpoint", "reset", "busy", "-n", ns)
		Expect(code).To(Equal(1))
		Expect(stderr).To(ContainSubstring("refused: ETLPipeline " + ns + "/busy: the pipeline is Running"))
		mustKubectl("delete", "etlp", "busy", "-n", ns, "--wait=false")

		By("the manager refuses a request for a pipeline that is not Paused, too, and says why in the status")
		request, err := json.Marshal(etlv1.CheckpointRequest{ID: "direct-1", Action: etlv1.CheckpointReset})
		Expect(err).NotTo(HaveOccurred())
		mustKubectl("annotate", "etlp", "moved", "-n", ns, "--overwrite",
			etlv1.AnnotationCheckpointRequest+"="+string(request), etlv1.AnnotationCheckpointRequestedBy+"="+user)
		Eventually(func(g Gomega) {
			p, err := getPipeline(ns, "moved")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Status.CheckpointRequest).NotTo(BeNil())
			g.Expect(p.Status.CheckpointRequest.ID).To(Equal("direct-1"))
			g.Expect(p.Status.CheckpointRequest.Outcome).To(Equal(etlv1.CheckpointRefused))
			g.Expect(p.Status.CheckpointRequest.Message).To(ContainSubstring("the pipeline is Idle"))
		}).WithTimeout(30 * time.Second).WithPolling(poll).Should(Succeed())

		By("a request may not name another user than the one who makes it")
		request, err = json.Marshal(etlv1.CheckpointRequest{ID: "forged", Action: etlv1.CheckpointReset})
		Expect(err).NotTo(HaveOccurred())
		_, err = kubectl("annotate", "etlp", "moved", "-n", ns, "--overwrite",
			etlv1.AnnotationCheckpointRequest+"="+string(request), etlv1.AnnotationCheckpointRequestedBy+"=someone-else")
		Expect(err).To(MatchError(ContainSubstring("must name the user who asks for the checkpoint change: " + user)))

		By("pause, checkpoint reset, resume: the whole source is read again, the sink stays exact")
		_, stderr, code = kubectlSluice(plugins, "pause", "moved", "-n", ns)
		Expect(code).To(BeZero(), stderr)
		Eventually(phaseOf(ns, "moved")).WithTimeout(30 * time.Second).WithPolling(poll).Should(Equal(etlv1.PhasePaused))
		stdout, stderr, code := kubectlSluice(plugins, "checkpoint", "reset", "moved", "-n", ns)
		Expect(code).To(BeZero(), stderr)
		Expect(stdout).To(ContainSubstring("checkpoint reset"))
		Expect(eventNotes(ns, "CheckpointReset")).To(ContainSubstring("as " + user + " asked"))
		Expect(queryInt(`SELECT count(*) FROM etl.etl_runs WHERE namespace = $1 AND name = 'moved'
			AND outcome = 'checkpoint-reset' AND requested_by = $2`, ns, user)).To(BeEquivalentTo(1))
		stdout, stderr, code = kubectlSluice(plugins, "checkpoint", "moved", "-n", ns)
		Expect(code).To(BeZero(), stderr)
		Expect(stdout).To(And(ContainSubstring("Columns:      updated_at, id"), ContainSubstring("Checkpoint:   <none>"),
			ContainSubstring("Last request: reset  by "+user+", Done")))
		_, stderr, code = kubectlSluice(plugins, "resume", "moved", "-n", ns)
		Expect(code).To(BeZero(), stderr)
		p := waitIdleAndReady(ns, "moved")
		Expect(p.Status.Run.RowsRead).To(BeEquivalentTo(rows), "the run after the reset reads the whole source")
		expectSame(checkpointTable)

		By("pause, checkpoint set to a row in the middle, resume: only the rows after it are read")
		_, stderr, code = kubectlSluice(plugins, "pause", "moved", "-n", ns)
		Expect(code).To(BeZero(), stderr)
		Eventually(phaseOf(ns, "moved")).WithTimeout(30 * time.Second).WithPolling(poll).Should(Equal(etlv1.PhasePaused))
		_, stderr, code = kubectlSluice(plugins, "checkpoint", "set", "moved", "-n", ns, "--values", "not a time,150000")
		Expect(code).To(Equal(1))
		Expect(stderr).To(ContainSubstring("is not a timestamp with time zone"), "the values are checked before anything changes")
		at := queryText("SELECT updated_at::text FROM public." + checkpointTable + " WHERE id = 150000")
		stdout, stderr, code = kubectlSluice(plugins, "checkpoint", "set", "moved", "-n", ns, "--values", at+",150000")
		Expect(code).To(BeZero(), stderr)
		Expect(stdout).To(ContainSubstring("checkpoint set to ("))
		Expect(eventNotes(ns, "CheckpointSet")).To(ContainSubstring("as " + user + " asked"))
		_, stderr, code = kubectlSluice(plugins, "resume", "moved", "-n", ns)
		Expect(code).To(BeZero(), stderr)
		p = waitIdleAndReady(ns, "moved")
		Expect(p.Status.Run.RowsRead).To(BeEquivalentTo(rows-150000), "the run after the set reads only the rows after it")
		expectSame(checkpointTable)
	})
})
