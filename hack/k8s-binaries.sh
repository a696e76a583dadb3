#!/usr/bin/env bash
# Builds the real Kubernetes control-plane binaries that the tests and the local cluster use
# (etcd, kube-apiserver, kube-controller-manager, kubectl) from the Go module proxy, into a cache
# outside the clone, and prints that directory (use it as KUBEBUILDER_ASSETS).
#
# k8s.io/kubernetes is not meant to be required as a module: its go.mod points every staging
# module (k8s.io/api, k8s.io/client-go, ...) at ./staging. A throwaway module that requires it and
# replaces each staging module with its published v0.<minor>.<patch> builds the real commands.
# etcd is a tiny main around go.etcd.io/etcd/server/v3/etcdmain in a module of its own, because
# its dependency versions differ from Kubernetes'.
#
# A second run finds the binaries in the cache and returns at once.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE=${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}
OUT="$CACHE/k8s/$K8S_VERSION-etcd-$ETCD_VERSION"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"

log() { echo "k8s-binaries: $*" >&2; }

all_built() {
  for b in etcd kube-apiserver kube-controller-manager kubectl; do
    [ -x "$OUT/$b" ] || return 1
  done
}

if all_built; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed"; exit 1; }
mkdir -p "$OUT"
# One build at a time: a second caller waits, then finds the binaries built.
exec 9>"$CACHE/k8s/.build.lock"
flock 9
if all_built; then
  echo "$OUT"
  exit 0
fi
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

build_k8s() {
  local src="$CACHE/k8s/src-$K8S_VERSION"
  mkdir -p "$src"
  if [ ! -f "$src/go.mod" ] || ! grep -q "k8s.io/kubernetes $K8S_VERSION" "$src/go.mod"; then
    log "preparing a module for k8s.io/kubernetes $K8S_VERSION (staging modules at $STAGING_VERSION)"
    local modfile
    modfile=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "module sluice.local/k8s-binaries"
      echo
      echo "go 1.26.0"
      echo
      echo "godebug default=go1.26"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      echo "replace ("
      sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$STAGING_VERSION"'#p' "$modfile"
      echo ")"
    } > "$src/go.mod"
    cat > "$src/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    (cd "$src" && go mod tidy -e >/dev/null 2>&1 || true)
  fi
  local major=${K8S_VERSION#v}; major=${major%%.*}
  local minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    [ -x "$OUT/$cmd" ] && continue
    log "building $cmd $K8S_VERSION (several minutes on 2 cores, once)"
    (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$OUT/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
    mv "$OUT/$cmd.tmp" "$OUT/$cmd"
  done
}

build_etcd() {
  [ -x "$OUT/etcd" ] && return 0
  local src="$CACHE/k8s/src-etcd-$ETCD_VERSION"
  mkdir -p "$src"
  cat > "$src/go.mod" <<GOMOD
module sluice.local/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat > "$src/main.go" <<'GO'
// Command etcd is the real etcd server, built from its published module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "building etcd $ETCD_VERSION"
  (cd "$src" && go mod tidy >/dev/null && go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" .)
  mv "$OUT/etcd.tmp" "$OUT/etcd"
}

build_etcd
build_k8s
all_built || { log "some binaries are missing in $OUT"; exit 1; }
echo "$OUT"
