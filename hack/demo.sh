#!/usr/bin/env bash
# make demo: the main job of Sluice on one machine.
#   1. PostgreSQL and Elasticsearch (hack/test-env.sh), a local cluster (hack/cluster.sh: real
#      etcd, kube-apiserver, kube-controller-manager and a node agent that runs Sluice pods as
#      local processes of bin/sluice);
#   2. about 100,000 rows of sample data;
#   3. the operator: CRD, RBAC, configuration and manager with `kubectl apply -k config/demo`;
#   4. two sample pipelines: incremental Postgres -> analytics.orders, and a tasks-mode
#      pipeline with a Python transform -> the Elasticsearch index customers;
#   5. waits until both are Idle and shows what they wrote.
# The cluster stays up afterwards, for your own kubectl commands.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cd "$root"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "PostgreSQL, Elasticsearch and the Kubernetes binaries"
env_file=$("$here/test-env.sh" up)
# shellcheck disable=SC1090
source "$env_file"
# kubectl, and bin/kubectl-sluice (make build) for `kubectl sluice`.
export PATH="$root/bin:$KUBEBUILDER_ASSETS:$PATH"

step "Local cluster"
KUBECONFIG=$("$here/cluster.sh" up)
export KUBECONFIG

step "Sample data: public.orders (100,000 rows), public.customers (20,000 rows)"
psql -q -v ON_ERROR_STOP=1 "$SLUICE_TEST_PG_DSN" -f "$here/demo-data.sql"

step "Operator: kubectl apply -k config/demo"
kubectl apply -k config/demo >/dev/null
kubectl wait --for condition=Established --timeout 60s crd/etlpipelines.etl.sluice.dev >/dev/null
kubectl -n sluice-system rollout status deployment/sluice-manager --timeout 120s

step "Pipelines: kubectl apply -n demo -f config/samples/{legacy_to_postgres,tasks_to_elasticsearch}.yaml"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n demo delete etlpipelines --all --wait=true >/dev/null 2>&1 || true
curl -fsS -X DELETE "$SLUICE_TEST_ES_URL/customers" >/dev/null 2>&1 || true
kubectl apply -n demo -f config/samples/legacy_to_postgres.yaml -f config/samples/tasks_to_elasticsearch.yaml

step "Waiting until both pipelines are Idle"
for p in orders-to-analytics customers-to-search; do
  if ! kubectl -n demo wait --for=jsonpath='{.status.phase}'=Idle --timeout 300s "etlpipeline/$p" >/dev/null; then
    echo "pipeline $p did not reach Idle:" >&2
    kubectl -n demo get etlpipeline "$p" -o yaml >&2
    exit 1
  fi
done
kubectl -n demo wait --for=condition=Ready --timeout 60s etlpipelines --all >/dev/null

step "kubectl get etlpipelines -A"
kubectl get etlpipelines -A

step "A few rows of analytics.orders"
psql "$SLUICE_TEST_PG_DSN" -c "SELECT count(*) AS rows FROM analytics.orders" \
  -c "SELECT * FROM analytics.orders ORDER BY id LIMIT 5"

step "A few documents of the Elasticsearch index customers"
curl -fsS -X POST "$SLUICE_TEST_ES_URL/customers/_refresh" >/dev/null  # the sink does not refresh per batch
curl -fsS "$SLUICE_TEST_ES_URL/customers/_count?pretty" | grep '"count"'
curl -fsS "$SLUICE_TEST_ES_URL/customers/_search?size=3&sort=id:asc&filter_path=hits.hits._id,hits.hits._source&pretty"

step "kubectl sluice status -A"
kubectl sluice status -A

cat <<MSG

The cluster stays up. Use it with:
  export KUBECONFIG=$KUBECONFIG PATH=$root/bin:$KUBEBUILDER_ASSETS:\$PATH
  kubectl sluice status -A; kubectl sluice status -n demo orders-to-analytics
Pause, resume, run again, read the runner's log (the plugin's patches and annotation):
  kubectl sluice pause -n demo orders-to-analytics
  kubectl sluice resume -n demo orders-to-analytics
  kubectl sluice run -n demo orders-to-analytics --wait
  kubectl sluice logs -n demo orders-to-analytics
Stop everything:
  make clean-deps
MSG
