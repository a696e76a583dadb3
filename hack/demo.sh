#!/usr/bin/env bash
# make demo: brings up the local components and shows where they listen.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
env_file=$("$here/test-env.sh" up)
# shellcheck disable=SC1090
source "$env_file"
cat <<MSG

Sluice local components are up:
  kube-apiserver binaries  $KUBEBUILDER_ASSETS
  PostgreSQL               $SLUICE_TEST_PG_DSN
  Elasticsearch            $SLUICE_TEST_ES_URL

Stop them with: make clean-deps
MSG
