package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/test/testenv"
)

const (
	// operatorNamespace is where config/default puts the manager, and where runner Jobs run.
	operatorNamespace = "sluice-system"
	// connection is the suite's Postgres connection in the operator configuration: the source
	// and the sink of every pipeline, and the home of the etl state.
	connection = "warehouse"
)

// managerMetricsPort is where the suite's manager serves its metrics (HTTPS, on the host).
var managerMetricsPort int

// freePort returns a loopback port that was free a moment ago.
func freePort() int {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// allowedTables is the suite's whitelist; each spec that moves rows owns one of these tables
// (and the source table of the same name in public), so specs never see each other's rows.
var allowedTables = []string{
	"analytics.orders",
	"analytics.orders_paused",
	"analytics.orders_crashed",
	"analytics.orders_followed",
	"analytics.orders_full",
	"analytics.orders_late",
	"analytics.orders_stopped",
	"analytics.orders_flaky",
	"analytics.orders_mirror",
	"analytics.orders_metered",
}

// suiteDSN is the database of the suite's own (testenv.NewPostgresDB): the operator
// configuration points there, so other test packages running in parallel never collide.
var suiteDSN string

// installOperator installs the operator as a user does, `kubectl apply -k`, with a generated
// overlay on top of testdata/operator: the operator configuration and the DSN Secret name
// the suite's database. It waits until the CRD is established and the manager runs.
func installOperator() {
	GinkgoHelper()
	suiteDSN = testenv.NewPostgresDB(GinkgoT())
	managerMetricsPort = freePort()

	dir, err := os.MkdirTemp("", "sluice-e2e-operator-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { _ = os.RemoveAll(dir) })
	// kustomize takes no absolute path as a resource: the base is named relative to dir.
	base, err := filepath.Rel(dir, filepath.Join(testenv.RepoRoot(), "test", "e2e", "testdata", "operator"))
	Expect(err).NotTo(HaveOccurred())
	write := func(name, content string) {
		Expect(os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600)).To(Succeed())
	}
	write("kustomization.yaml", fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
patches:
  - path: config.yaml
  - target:
      kind: Deployment
      name: sluice-manager
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --metrics-bind-address=127.0.0.1:%d
secretGenerator:
  - name: warehouse-dsn
    namespace: %s
    files:
      - dsn
    options:
      disableNameSuffixHash: true
`, base, managerMetricsPort, operatorNamespace))
	write("dsn", suiteDSN)
	write("config.yaml", fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata:
  name: sluice-config
  namespace: %s
data:
  config.yaml: |
    apiVersion: config.etl.sluice.dev/v1alpha1
    kind: OperatorConfig
    runner:
      image: %s
      backoffLimit: 3
      configMapName: sluice-config
      configMapKey: config.yaml
      startDeadline: 20s
      minScheduleInterval: 1s
    stateConnection: %s
    postgres:
      - name: %s
        dsnSecret:
          name: warehouse-dsn
          key: dsn
      # Its Secret exists only when a spec creates it: a runner that cannot start.
      - name: late
        dsnSecret:
          name: late-dsn
          key: dsn
      # Its Secret points at a closed port until a spec repairs it: a database that is down.
      - name: flaky
        dsnSecret:
          name: flaky-dsn
          key: dsn
    allowedTargets:
      postgresTables: [%s]
`, operatorNamespace, sluiceImage, connection, connection, strings.Join(allowedTables, ", ")))

	By("installing the operator: kubectl apply -k (config/default, the suite's configuration and DSN)")
	mustKubectl("apply", "-k", dir)
	mustKubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/etlpipelines.etl.sluice.dev")
	mustKubectl("-n", operatorNamespace, "rollout", "status", "deployment/sluice-manager", "--timeout=120s")
}

// pg connects to the suite's database.
func pg() *pgx.Conn {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, suiteDSN)
	Expect(err).NotTo(HaveOccurred())
	return conn
}

// execSQL runs statements in the suite's database.
func execSQL(sql string, args ...any) {
	GinkgoHelper()
	conn := pg()
	defer func() { _ = conn.Close(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := conn.Exec(ctx, sql, args...)
	Expect(err).NotTo(HaveOccurred(), "SQL: %s", sql)
}

// queryInt returns the single integer a query yields.
func queryInt(sql string, args ...any) (int64, error) {
	conn, err := pgx.Connect(context.Background(), suiteDSN)
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n int64
	err = conn.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

// orderColumns are the columns the sample query reads and analytics tables hold.
const orderColumns = "id, customer_id, total_cents, status, updated_at"

// createOrders creates public.<table> with n rows shaped like hack/demo-data.sql's orders
// (updated_at grows with id) and the empty target analytics.<table>.
func createOrders(table string, n int) {
	GinkgoHelper()
	src := pgx.Identifier{"public", table}.Sanitize()
	dst := pgx.Identifier{"analytics", table}.Sanitize()
	execSQL(fmt.Sprintf(`
CREATE SCHEMA IF NOT EXISTS analytics;
DROP TABLE IF EXISTS %[1]s, %[2]s;
CREATE TABLE %[1]s (
  id          bigint PRIMARY KEY,
  customer_id bigint NOT NULL,
  status      text NOT NULL,
  total_cents bigint NOT NULL,
  updated_at  timestamptz NOT NULL
);
INSERT INTO %[1]s
SELECT i, 1 + i %% 20000, (ARRAY['new', 'paid', 'shipped', 'delivered'])[1 + i %% 4],
       (i::bigint * 7919) %% 100000, timestamptz '2025-06-01' + i * interval '1 second'
FROM generate_series(1, %[3]d) AS i;
CREATE INDEX ON %[1]s (updated_at, id);
CREATE TABLE %[2]s (
  id          bigint PRIMARY KEY,
  customer_id bigint NOT NULL,
  total_cents bigint NOT NULL,
  status      text NOT NULL,
  updated_at  timestamptz NOT NULL
);`, src, dst, n))
}

// rowDiff compares a source query's rows with a sink table's.
type rowDiff struct {
	Source, Sink, Missing, Extra int64
}

// compare counts the rows of the source query and of the sink, and the rows of each that the
// other lacks (EXCEPT both ways), in SQL.
func compare(sourceQuery, sinkTable string) (rowDiff, error) {
	var d rowDiff
	sink := "SELECT " + orderColumns + " FROM " + sinkTable
	for _, q := range []struct {
		dst *int64
		sql string
	}{
		{&d.Source, "SELECT count(*) FROM (" + sourceQuery + ") AS s"},
		{&d.Sink, "SELECT count(*) FROM " + sinkTable},
		{&d.Missing, "SELECT count(*) FROM ((" + sourceQuery + ") EXCEPT (" + sink + ")) AS m"},
		{&d.Extra, "SELECT count(*) FROM ((" + sink + ") EXCEPT (" + sourceQuery + ")) AS e"},
	} {
		n, err := queryInt(q.sql)
		if err != nil {
			return d, err
		}
		*q.dst = n
	}
	return d, nil
}

// sourceOf is the reader query of the suite's pipelines over public.<table>.
func sourceOf(table string) string {
	return "SELECT " + orderColumns + " FROM " + pgx.Identifier{"public", table}.Sanitize()
}

// expectSame asserts that analytics.<table> holds exactly the rows of public.<table>.
func expectSame(table string) {
	GinkgoHelper()
	d, err := compare(sourceOf(table), pgx.Identifier{"analytics", table}.Sanitize())
	Expect(err).NotTo(HaveOccurred())
	Expect(d.Missing).To(BeZero(), "rows of the source missing from the sink: %+v", d)
	Expect(d.Extra).To(BeZero(), "rows of the sink not in the source: %+v", d)
	Expect(d.Sink).To(Equal(d.Source), "%+v", d)
}

// getPipeline reads a pipeline with kubectl.
func getPipeline(ns, name string) (*etlv1.ETLPipeline, error) {
	p := &etlv1.ETLPipeline{}
	if err := getJSON(p, "etlpipeline", name, "-n", ns); err != nil {
		return nil, err
	}
	return p, nil
}

// phaseOf returns a function polling the phase of a pipeline, for Eventually.
func phaseOf(ns, name string) func() (etlv1.Phase, error) {
	return func() (etlv1.Phase, error) {
		p, err := getPipeline(ns, name)
		if err != nil {
			return "", err
		}
		return p.Status.Phase, nil
	}
}
