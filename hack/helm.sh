#!/usr/bin/env bash
# The Helm side of Sluice: builds the helm CLI that the chart's tests use, and keeps the chart's
# copies of generated manifests in step with their sources.
#
#   hack/helm.sh install   # builds helm from the Go module proxy into the cache (once) and
#                          # prints the binary's path
#   hack/helm.sh sync      # copies the generated files the chart embeds into config/helm/sluice
#
# helm is built the way its own Makefile builds a release: with its version and the Kubernetes
# version of its client-go linked in. Without them `helm template` and `helm lint` would judge the
# chart against Kubernetes 1.20, which has no ValidatingAdmissionPolicy.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE=${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}
OUT="$CACHE/tools/helm-$HELM_VERSION"
HELM="$OUT/helm"
root=$(cd "$(dirname "$0")/.." && pwd)
chart="$root/config/helm/sluice"

log() { echo "helm: $*" >&2; }

install() {
  if [ -x "$HELM" ]; then
    echo "$HELM"
    return 0
  fi
  command -v go >/dev/null || { log "go is not installed"; exit 1; }
  mkdir -p "$OUT"
  # One build at a time: a second caller waits, then finds the binary built.
  exec 9>"$OUT/.build.lock"
  flock 9
  if [ -x "$HELM" ]; then
    echo "$HELM"
    return 0
  fi
  export GOTOOLCHAIN=local CGO_ENABLED=0
  local gomod kube major minor pkg=helm.sh/helm/v3
  gomod=$(cd "$OUT" && go mod download -json "$pkg@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  kube=$(awk '$1 == "k8s.io/client-go" {print $2}' "$gomod")
  minor=${kube#v0.}; minor=${minor%%.*}
  major=1
  local ldflags="-s -w -X $pkg/internal/version.version=$HELM_VERSION -X $pkg/internal/version.gitTreeState=clean"
  for p in pkg/chartutil pkg/lint/rules; do
    ldflags+=" -X $pkg/$p.k8sVersionMajor=$major -X $pkg/$p.k8sVersionMinor=$minor"
  done
  log "building helm $HELM_VERSION (Kubernetes $major.$minor) from the Go module proxy (a few minutes on 2 cores, once)"
  local t0=$SECONDS
  GOBIN="$OUT/.bin" go install -trimpath -ldflags "$ldflags" "$pkg/cmd/helm@$HELM_VERSION"
  mv "$OUT/.bin/helm" "$HELM"
  rmdir "$OUT/.bin"
  log "built $HELM in $((SECONDS - t0))s"
  echo "$HELM"
}

# The chart cannot read files outside its directory (.Files.Get, crds/), so it holds copies of
# the generated CRD and of the hand-written manifests it shares with the kustomize bases. make
# manifests runs this; hack/verify.sh fails when a copy is stale.
sync() {
  mkdir -p "$chart/crds" "$chart/files"
  cp "$root/config/crd/bases/etl.sluice.dev_etlpipelines.yaml" "$chart/crds/"
  cp "$root/config/rbac/role.yaml" "$chart/files/manager-role.yaml"
  cp "$root/config/rbac/runner_policy.yaml" "$chart/files/runner-policy.yaml"
  cp "$root/config/rbac/checkpoint_policy.yaml" "$chart/files/checkpoint-policy.yaml"
  cp "$root/config/prometheus/rules.yaml" "$chart/files/prometheus-rules.yaml"
}

case "${1:-}" in
  install) install ;;
  sync) sync ;;
  *) echo "usage: $0 install|sync" >&2; exit 2 ;;
esac
