#!/usr/bin/env bash
# Brings up (or stops) every real component the tests need and writes the environment that
# test/testenv reads:
#   KUBEBUILDER_ASSETS  etcd, kube-apiserver, kube-controller-manager, kubectl (built once, cached)
#   SLUICE_TEST_PG_DSN  a throwaway PostgreSQL cluster on a loopback port
#   SLUICE_TEST_ES_URL  a real Elasticsearch 8 node on a loopback port
#   SLUICE_TEST_PROMETHEUS  the directory holding Debian's prometheus and promtool (installed once)
#   SLUICE_TEST_HELM    the helm binary the chart's tests use (built once, cached)
#
#   hack/test-env.sh up     # prints the path of the env file to source
#   hack/test-env.sh down   # stops the local cluster (if up), Postgres and Elasticsearch
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CACHE=${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}
RUN=${SLUICE_RUN:-$CACHE/run}
ENV_FILE="$RUN/test.env"
export SLUICE_CACHE=$CACHE SLUICE_RUN=$RUN

up() {
  mkdir -p "$RUN"
  local t0=$SECONDS assets pg es
  local prom helm
  # helm builds in the background (on a fresh machine its modules download while the
  # Kubernetes binaries compile); the databases start first: Elasticsearch boots while the
  # binaries are checked (or built).
  "$here/helm.sh" install > "$RUN/helm.path" &
  local helm_pid=$!
  pg=$("$here/postgres.sh" start)
  es=$("$here/elasticsearch.sh" start)
  assets=$("$here/k8s-binaries.sh")
  prom=$("$here/prometheus.sh" install)
  if ! wait "$helm_pid"; then
    echo "test-env: building helm failed" >&2
    exit 1
  fi
  helm=$(cat "$RUN/helm.path")
  cat > "$ENV_FILE" <<ENV
export KUBEBUILDER_ASSETS=$assets
export SLUICE_TEST_PG_DSN='$pg'
export SLUICE_TEST_ES_URL=$es
export SLUICE_TEST_PROMETHEUS=$prom
export SLUICE_TEST_HELM=$helm
ENV
  echo "test-env: up in $((SECONDS - t0))s: kube-apiserver $("$assets/kube-apiserver" --version 2>/dev/null | awk '{print $2}'), $(psql "$pg" -Atc 'show server_version' 2>/dev/null | sed 's/^/PostgreSQL /'), Elasticsearch at $es" >&2
  echo "$ENV_FILE"
}

down() {
  # The local cluster of make demo, when it runs, goes first: its pods use the databases.
  "$here/cluster.sh" down || true
  "$here/elasticsearch.sh" stop || true
  "$here/postgres.sh" stop || true
  rm -f "$ENV_FILE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
