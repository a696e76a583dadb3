package e2e

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// cdcTable is the CDC spec's own table: public.cdcTable streamed into analytics.cdcTable.
const cdcTable = "orders_cdc"

// cdcPipelineYAML is a continuous CDC pipeline (no schedule) of public.<table> into
// analytics.<table>, keyed by the table's primary key.
func cdcPipelineYAML(name, table string) string {
	return fmt.Sprintf(`apiVersion: etl.sluice.dev/v1alpha1
kind: ETLPipeline
metadata:
  name: %s
spec:
  mode: CDC
  source:
    connection: %s
    table: public.%s
    columns: [%s]
    cursor:
      keyColumns: [id]
  target:
    name: analytics.%s
  batchSize: 500
`, name, connection, table, orderColumns, table)
}

// allowCDCForSpec lets the suite's connection replicate public.<table> (replicationTables)
// into analytics.<table> (allowedTargets) until the spec ends.
func allowCDCForSpec(table string) {
	GinkgoHelper()
	conn := "  - name: " + connection + "\n"
	editConfigForSpec(func(config string) string {
		Expect(config).To(ContainSubstring(conn))
		config = strings.Replace(config, "postgresTables: [", "postgresTables: [analytics."+table+", ", 1)
		return strings.Replace(config, conn, conn+"    replicationTables: [public."+table+"]\n", 1)
	})
}

// configReloads counts the manager's "operator configuration reloaded" log lines.
func configReloads() int {
	GinkgoHelper()
	return strings.Count(mustKubectl("logs", "-n", operatorNamespace, "deployment/sluice-manager"), "operator configuration reloaded")
}

// tableSum is a table's row count and the md5 of all its rows (orderColumns, by id).
type tableSum struct {
	Count int64
	MD5   string
}

// cdcSums reads the sums of public.<table> and analytics.<table> in one statement, so in one
// snapshot.
func cdcSums(table string) (src, sink tableSum, err error) {
	sum := func(t string) string {
		return fmt.Sprintf(`(SELECT count(*) FROM %[1]s), (SELECT md5(coalesce(string_agg(row(%[2]s)::text, ',' ORDER BY id), '')) FROM %[1]s)`,
			t, orderColumns)
	}
	conn, err := pgx.Connect(context.Background(), suiteDSN)
	if err != nil {
		return src, sink, err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = conn.QueryRow(ctx, "SELECT "+sum(pgx.Identifier{"public", table}.Sanitize())+", "+sum(pgx.Identifier{"analytics", table}.Sanitize())).
		Scan(&src.Count, &src.MD5, &sink.Count, &sink.MD5)
	return src, sink, err
}

// sinkSum is analytics.<table>'s sum alone.
func sinkSum(table string) (tableSum, error) {
	_, sink, err := cdcSums(table)
	return sink, err
}

// waitSinkEqualsSource waits until analytics.<table> holds exactly public.<table>'s rows
// (count and checksum), and returns the sum.
func waitSinkEqualsSource(table string, timeout time.Duration) tableSum {
	GinkgoHelper()
	var sum tableSum
	Eventually(func(g Gomega) {
		src, sink, err := cdcSums(table)
		g.Expect(err).NotTo(HaveOccurred())
		if src != sink {
			// Say which rows differ, for the failure message.
			d, _ := compare(sourceOf(table), pgx.Identifier{"analytics", table}.Sanitize())
			g.Expect(sink).To(Equal(src), "sink vs source: %+v", d)
		}
		sum = src
	}).WithTimeout(timeout).WithPolling(200*time.Millisecond).Should(Succeed(), "the sink converges to the source")
	return sum
}

// currentLSN is the source's WAL insert position now.
func currentLSN() pglogrepl.LSN {
	GinkgoHelper()
	conn := pg()
	defer func() { _ = conn.Close(context.Background()) }()
	var lsn string
	Expect(conn.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn)).To(Succeed())
	pos, err := pglogrepl.ParseLSN(lsn)
	Expect(err).NotTo(HaveOccurred())
	return pos
}

// cdcChange runs one source transaction of inserts, updates (a key change among them) and
// deletes over public.<table>'s ids [from, to) for the inserts.
func cdcChange(table string, from, to int, status string) {
	GinkgoHelper()
	src := pgx.Identifier{"public", table}.Sanitize()
	execSQL(fmt.Sprintf(`
INSERT INTO %[1]s SELECT i, 7, 'new', i * 3, clock_timestamp() FROM generate_series(%[2]d, %[3]d - 1) AS i;
UPDATE %[1]s SET status = %[4]s, total_cents = total_cents + 1, updated_at = clock_timestamp() WHERE id %% 37 = 0;
DELETE FROM %[1]s WHERE id %% 41 = 0;
UPDATE %[1]s SET id = id + 1000000 WHERE id = (SELECT min(id) FROM %[1]s WHERE id < 1000000)`,
		src, from, to, sqlLiteral(status)))
}

var _ = Describe("A CDC pipeline on the local cluster", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	JustAfterEach(func() {
		dumpIfFailed(ns, []string{"logs", "-n", operatorNamespace, "-l", etlv1.LabelPipelineNamespace + "=" + ns, "--prefix", "--tail=100"})
		if !CurrentSpecReport().Failed() {
			return
		}
		if out, err := queryInt(`SELECT count(*) FROM pg_replication_slots`); err == nil {
			_, _ = fmt.Fprintf(GinkgoWriter, "--- replication slots on the server: %d\n", out)
		}
	})

	It("streams inserts, updates and deletes continuously, holds still while paused, and drops its slot when deleted", func() {
		const name = "orders-cdc"
		start := time.Now()
		createOrders(cdcTable, 5000)
		allowCDCForSpec(cdcTable)

		By("kubectl apply: a CDC pipeline without a schedule")
		apply(ns, cdcPipelineYAML(name, cdcTable))
		phases := recordPhases(ns, name)
		var slot, publication string
		// A database that still has a logical slot cannot be dropped at the suite's end: a
		// spec that failed before the deletion drops what its pipeline left.
		DeferCleanup(func() {
			if slot == "" {
				return
			}
			_, _ = kubectl("delete", "etlpipeline", name, "-n", ns, "--timeout=60s")
			conn, err := pgx.Connect(context.Background(), suiteDSN)
			if err != nil {
				return
			}
			defer func() { _ = conn.Close(context.Background()) }()
			_, _ = conn.Exec(context.Background(), `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
				WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
			for range 50 {
				if _, err := conn.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
					WHERE slot_name = $1`, slot); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			_, _ = conn.Exec(context.Background(), "DROP PUBLICATION IF EXISTS "+pgx.Identifier{publication}.Sanitize())
		})

		By("the copy, then the stream: the sink equals the source")
		initial := waitSinkEqualsSource(cdcTable, 60*time.Second)
		Expect(initial.Count).To(BeEquivalentTo(5000))
		_, _ = fmt.Fprintf(GinkgoWriter, "copied in %s\n", time.Since(start).Round(time.Millisecond))

		By("inserts, updates and deletes in the source")
		before := currentLSN()
		cdcChange(cdcTable, 5001, 5201, "refunded")
		changed := waitSinkEqualsSource(cdcTable, 30*time.Second)
		Expect(changed).NotTo(Equal(initial))
		_, _ = fmt.Fprintf(GinkgoWriter, "changes streamed at %s\n", time.Since(start).Round(time.Millisecond))

		By("status.replication: the slot, Streaming, a confirmed LSN past the changes; ReplicationSlotHealthy")
		var p *etlv1.ETLPipeline
		Eventually(func(g Gomega) {
			var err error
			p, err = getPipeline(ns, name)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Status.Phase).To(Equal(etlv1.PhaseRunning), "a continuous stream stays Running")
			r := p.Status.Replication
			g.Expect(r).NotTo(BeNil())
			g.Expect(r.Phase).To(Equal(etlv1.ReplicationStreaming))
			g.Expect(r.ConfirmedLSN).To(MatchRegexp(`^[0-9A-F]+/[0-9A-F]+$`))
			confirmed, err := pglogrepl.ParseLSN(r.ConfirmedLSN)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(confirmed).To(BeNumerically(">", before), "confirmedLSN %s is past the changes' start %s", confirmed, before)
			g.Expect(p.Status.Run).NotTo(BeNil())
			g.Expect(p.Status.Run.RowsDeleted).To(BeNumerically(">", 0), "the source's deletes are counted")
		}).WithTimeout(30 * time.Second).WithPolling(poll).Should(Succeed())
		r := p.Status.Replication
		slot, publication = r.Slot, r.Publication
		Expect(r.Slot).To(MatchRegexp(`^sluice_[0-9a-f]+$`))
		Expect(r.Publication).To(MatchRegexp(`^sluice_[0-9a-f]+$`))
		Expect(r.WALStatus).To(Equal("reserved"))
		Expect(r.ObservedTime).NotTo(BeNil())
		expectCondition(p, etlv1.ConditionReplicationSlotHealthy, metav1.ConditionTrue, etlv1.ReasonWALReserved)
		Expect(condition(p, etlv1.ConditionReplicationSlotHealthy).Message).To(ContainSubstring(r.Slot))
		Expect(p.Status.Run).NotTo(BeNil())
		Expect(p.Status.Run.Trigger).To(Equal(etlv1.TriggerCreated))
		Expect(queryInt(`SELECT count(*) FROM pg_replication_slots
			WHERE slot_name = $1 AND slot_type = 'logical' AND plugin = 'pgoutput' AND database = current_database() AND active`, r.Slot)).
			To(BeEquivalentTo(1), "the slot is in the source, streamed by the runner")
		Expect(queryInt(`SELECT count(*) FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'public' AND tablename = $2`,
			r.Publication, cdcTable)).To(BeEquivalentTo(1), "the publication publishes the table")
		streamRun := p.Status.Run.ID

		By("kubectl patch desiredState Paused")
		mustKubectl("patch", "etlp", name, "-n", ns, "--type", "merge", "-p", `{"spec":{"desiredState":"Paused"}}`)
		Eventually(phaseOf(ns, name)).WithTimeout(30 * time.Second).WithPolling(poll).Should(Equal(etlv1.PhasePaused))
		Eventually(phases.seen).WithTimeout(10*time.Second).Should(Satisfy(func(s []etlv1.Phase) bool {
			return inOrder(s, etlv1.PhaseRunning, etlv1.PhasePauseRequested, etlv1.PhasePaused)
		}), "the manager asks, the runner stops")
		mustKubectl("wait", "-n", ns, "--for=condition=Ready", "--timeout=30s", "etlpipeline/"+name)
		paused, err := getPipeline(ns, name)
		Expect(err).NotTo(HaveOccurred())
		expectCondition(paused, etlv1.ConditionReady, metav1.ConditionTrue, etlv1.ReasonPaused)
		Expect(paused.Status.Run.ID).To(Equal(streamRun))
		Expect(paused.Status.Run.CompletionTime).NotTo(BeNil())
		mustKubectl("wait", "-n", operatorNamespace, "--for=condition=Complete", "--timeout=30s", "job/"+paused.Status.Run.JobName)
		Expect(queryInt(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot)).
			To(BeEquivalentTo(1), "a paused pipeline keeps its slot")

		By("changes in the source while paused: the sink does not move")
		atPause, err := sinkSum(cdcTable)
		Expect(err).NotTo(HaveOccurred())
		Expect(atPause).To(Equal(changed), "the sink had every change before the pause")
		cdcChange(cdcTable, 5201, 5401, "disputed")
		src, _, err := cdcSums(cdcTable)
		Expect(err).NotTo(HaveOccurred())
		Expect(src).NotTo(Equal(atPause))
		Consistently(func() (tableSum, error) { return sinkSum(cdcTable) }).
			WithTimeout(3*time.Second).WithPolling(200*time.Millisecond).Should(Equal(atPause), "nothing moves while paused")
		Expect(phaseOf(ns, name)()).To(Equal(etlv1.PhasePaused))

		By("kubectl patch desiredState Running: the stream goes on from its checkpoint")
		mustKubectl("patch", "etlp", name, "-n", ns, "--type", "merge", "-p", `{"spec":{"desiredState":"Running"}}`)
		resumed := waitSinkEqualsSource(cdcTable, 60*time.Second)
		Expect(resumed).To(Equal(src))
		Eventually(func(g Gomega) {
			p, err := getPipeline(ns, name)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Status.Phase).To(Equal(etlv1.PhaseRunning))
			g.Expect(p.Status.Run.ID).NotTo(Equal(streamRun))
			g.Expect(p.Status.Run.Trigger).To(Equal(etlv1.TriggerResume))
			g.Expect(p.Status.Replication).NotTo(BeNil())
			g.Expect(p.Status.Replication.Slot).To(Equal(slot), "the same slot")
			g.Expect(p.Status.Replication.Phase).To(Equal(etlv1.ReplicationStreaming))
			g.Expect(p.Status.Run.RowsRead).To(And(BeNumerically(">", 0), BeNumerically("<", 1000)),
				"the resumed run streams the changes made while paused; it does not copy the table again")
		}).WithTimeout(30 * time.Second).WithPolling(poll).Should(Succeed())
		Expect(phases.seen()).To(Satisfy(func(s []etlv1.Phase) bool {
			return inOrder(s, etlv1.PhaseRunning, etlv1.PhasePaused, etlv1.PhaseRunning)
		}), "%v", phases.seen())
		Expect(phases.seen()).NotTo(ContainElement(etlv1.PhaseFailed))
		_, _ = fmt.Fprintf(GinkgoWriter, "resumed and caught up at %s\n", time.Since(start).Round(time.Millisecond))

		By("kubectl delete: the pipeline goes, and its slot and publication with it")
		mustKubectl("delete", "etlpipeline", name, "-n", ns, "--wait=false")
		mustKubectl("wait", "-n", ns, "--for=delete", "--timeout=60s", "etlpipeline/"+name)
		Expect(queryInt(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot)).
			To(BeZero(), "the replication slot is dropped before the pipeline is gone")
		Expect(queryInt(`SELECT count(*) FROM pg_publication WHERE pubname = $1`, publication)).
			To(BeZero(), "the publication is dropped before the pipeline is gone")
		Expect(queryInt(`SELECT count(*) FROM etl.etl_slots WHERE slot = $1`, slot)).To(BeZero(), "etl.etl_slots forgets it")
		_, _ = fmt.Fprintf(GinkgoWriter, "deleted at %s\n", time.Since(start).Round(time.Millisecond))
	})
})
