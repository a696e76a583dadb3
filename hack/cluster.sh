#!/usr/bin/env bash
# The local Kubernetes cluster of `make demo` and of the e2e suite, without containers: the
# real etcd, kube-apiserver and kube-controller-manager (built by hack/k8s-binaries.sh), and
# hack/nodeagent, a node agent of our own that runs pods of the Sluice image as local processes
# of the sluice binary. It is a test harness for Jobs, not a kubelet: see hack/nodeagent/main.go
# for what it does and does not do (no images, no isolation, no resource limits, no probes, no
# networking).
#
#   hack/cluster.sh up           start it (or find it up); print the kubeconfig path on stdout
#   hack/cluster.sh down         stop every process of ours (pods included); keep the logs
#   hack/cluster.sh kubeconfig   print the kubeconfig path; exit 1 when the cluster is not up
#   hack/cluster.sh status       exit 0 when every component runs and the API server is ready
#
# A cold `up` starts from an empty state directory; when only some components run, `up`
# restarts them all from scratch. Once up, the cluster is used with
#   export KUBECONFIG=$(hack/cluster.sh kubeconfig)
#
# What runs (all on 127.0.0.1; PORT is $SLUICE_CLUSTER_PORT):
#   etcd                     client PORT+1, peer PORT+2 (plain http, loopback only)
#   kube-apiserver           https PORT; client certificates (the kubeconfig's user is in
#                            system:masters), service account tokens, authorization Node,RBAC,
#                            admission defaults plus NodeRestriction
#   kube-controller-manager  controllers job, ttl-after-finished, garbagecollector, namespace,
#                            serviceaccount, serviceaccount-token, root-ca-cert-publisher,
#                            deployment, replicaset; per-controller service account credentials
#   nodeagent                Node $SLUICE_NODE_NAME as system:node:<name>; binds pods as
#                            system:kube-scheduler; kubectl logs on https PORT+3
#
# Environment:
#   SLUICE_CACHE            cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/sluice)
#   SLUICE_RUN              run dir (default $SLUICE_CACHE/run); the cluster's state, logs, pid
#                           files and kubeconfig are in $SLUICE_RUN/cluster
#   SLUICE_CLUSTER_PORT     the API server's port (default 16443); PORT+1..PORT+3 are used too
#   SLUICE_K8S_BIN          directory of etcd, kube-apiserver, kube-controller-manager, kubectl
#                           (default: the output of hack/k8s-binaries.sh)
#   SLUICE_BINARY           the sluice binary pods of the Sluice image run (default bin/sluice,
#                           built when missing); pods started after a rebuild run the new one
#   SLUICE_IMAGE            the Sluice image; any tag of its repository runs SLUICE_BINARY
#                           (default ghcr.io/sluice-dev/sluice:latest)
#   SLUICE_NODE_NAME        the node's name (default sluice-local)
#   SLUICE_NODEAGENT_ARGS   extra flags of the node agent (tests: --extra-image repo=/path)
#   SLUICE_CLUSTER_TIMEOUT  seconds to wait for each component at start (default 60)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}
RUN=${SLUICE_RUN:-$CACHE/run}
DIR="$RUN/cluster"
PKI="$DIR/pki"
KUBECONFIG_PATH="$DIR/kubeconfig"
PORT=${SLUICE_CLUSTER_PORT:-16443}
ETCD_PORT=$((PORT + 1))
ETCD_PEER_PORT=$((PORT + 2))
AGENT_PORT=$((PORT + 3))
NODE=${SLUICE_NODE_NAME:-sluice-local}
IMAGE=${SLUICE_IMAGE:-ghcr.io/sluice-dev/sluice:latest}
TIMEOUT=${SLUICE_CLUSTER_TIMEOUT:-60}
HOST=127.0.0.1
SERVER="https://$HOST:$PORT"
COMPONENTS=(etcd kube-apiserver kube-controller-manager nodeagent)
CONTROLLERS=job,ttl-after-finished,garbagecollector,namespace,serviceaccount,serviceaccount-token,root-ca-cert-publisher,deployment,replicaset

log() { echo "cluster.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# is_ours PID: the process is alive and one of our components (its program is one of them and
# its command line names our directory).
is_ours() {
  local pid=$1 cmd
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  case "${cmd%% *}" in */etcd | */kube-apiserver | */kube-controller-manager | */nodeagent) ;; *) return 1 ;; esac
  case "$cmd" in *"$DIR/"*) return 0 ;; esac
  return 1
}

pid_of() { [ -f "$DIR/$1.pid" ] && cat "$DIR/$1.pid" 2>/dev/null || true; }

running() { is_ours "$(pid_of "$1")"; }

kubectl_() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" --request-timeout 5s "$@"; }

apiserver_ready() {
  curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$SERVER/readyz" >/dev/null 2>&1
}

all_up() {
  local c
  for c in "${COMPONENTS[@]}"; do running "$c" || return 1; done
  apiserver_ready
}

any_up() {
  local c
  for c in "${COMPONENTS[@]}"; do running "$c" && return 0; done
  return 1
}

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# cert NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]: a P-256 key and a certificate
# signed by the cluster CA.
cert() {
  local name=$1 subj=$2 eku=$3 san=${4:-}
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -z "$san" ] || echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -extfile "$PKI/$name.ext" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=sluice-local-ca" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$PKI/ca.crt" 2>/dev/null
  cert apiserver "/CN=kube-apiserver" serverAuth \
    "IP:$HOST,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" clientAuth
  cert admin "/O=system:masters/CN=sluice-admin" clientAuth
  cert kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  cert kube-scheduler "/CN=system:kube-scheduler" clientAuth
  cert node "/O=system:nodes/CN=system:node:$NODE" clientAuth
  cert nodeagent-serving "/CN=system:node:$NODE" serverAuth "IP:$HOST,DNS:$NODE,DNS:localhost"
  # The service account signing key pair.
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
  openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

# kubeconfig FILE USER: a kubeconfig for USER's client certificate, certificates embedded.
kubeconfig() {
  local file=$1 user=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sluice-local
  cluster:
    server: $SERVER
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$user.crt")
    client-key-data: $(base64 -w0 <"$PKI/$user.key")
contexts:
- name: sluice-local
  context:
    cluster: sluice-local
    user: $user
current-context: sluice-local
EOF
  chmod 600 "$file"
}

# start NAME COMMAND...: start a component detached from this shell, its output in NAME.log.
start() {
  local name=$1
  shift
  # setsid: the component outlives this shell and its terminal's signals. (In a script, a
  # background job is not a group leader, so setsid execs in place and $! is the component.)
  setsid "$@" </dev/null >>"$DIR/$name.log" 2>&1 9>&- &
  echo $! >"$DIR/$name.pid"
}

# wait_for NAME WHAT CHECK...: wait until CHECK succeeds while component NAME runs.
wait_for() {
  local name=$1 what=$2 deadline=$((SECONDS + TIMEOUT))
  shift 2
  until "$@"; do
    if ! running "$name"; then
      tail -n 30 "$DIR/$name.log" >&2 || true
      log "$name exited during start-up (log: $DIR/$name.log)"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$DIR/$name.log" >&2 || true
      log "$what not ready after ${TIMEOUT}s (log: $DIR/$name.log)"
      return 1
    fi
    sleep 0.25
  done
}

etcd_healthy() { curl -fsS --max-time 2 "http://$HOST:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'; }

controllers_ready() {
  kubectl_ -n default get serviceaccount default >/dev/null 2>&1 &&
    kubectl_ -n default get configmap kube-root-ca.crt >/dev/null 2>&1
}

node_ready() {
  [ "$(kubectl_ get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

sluice_binary() {
  if [ -n "${SLUICE_BINARY:-}" ]; then
    [ -x "$SLUICE_BINARY" ] || die "SLUICE_BINARY=$SLUICE_BINARY is not an executable"
    (cd "$(dirname "$SLUICE_BINARY")" && echo "$(pwd)/$(basename "$SLUICE_BINARY")")
    return
  fi
  if [ ! -x "$ROOT/bin/sluice" ]; then
    log "building bin/sluice"
    (cd "$ROOT" && go build -o bin/sluice .) >&2
  fi
  echo "$ROOT/bin/sluice"
}

cold_up() {
  local t0=$SECONDS binary p extra=()
  BIN=${SLUICE_K8S_BIN:-$("$ROOT/hack/k8s-binaries.sh")}
  for b in etcd kube-apiserver kube-controller-manager kubectl; do
    [ -x "$BIN/$b" ] || die "$BIN/$b not found (hack/k8s-binaries.sh builds it)"
  done
  command -v openssl >/dev/null || die "openssl not found"
  command -v curl >/dev/null || die "curl not found"
  for p in "$PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$AGENT_PORT"; do
    ! port_busy "$p" || die "port $p is in use: stop what listens there or set SLUICE_CLUSTER_PORT"
  done
  binary=$(sluice_binary)
  rm -rf "$DIR"
  mkdir -p "$DIR/bin"
  log "building the node agent"
  (cd "$ROOT" && go build -o "$DIR/bin/nodeagent" ./hack/nodeagent) >&2
  make_pki
  kubeconfig "$KUBECONFIG_PATH" admin
  kubeconfig "$DIR/kube-controller-manager.kubeconfig" kube-controller-manager
  kubeconfig "$DIR/kube-scheduler.kubeconfig" kube-scheduler
  kubeconfig "$DIR/nodeagent.kubeconfig" node

  start etcd "$BIN/etcd" --name sluice --data-dir "$DIR/etcd" --log-level warn \
    --listen-client-urls "http://$HOST:$ETCD_PORT" --advertise-client-urls "http://$HOST:$ETCD_PORT" \
    --listen-peer-urls "http://$HOST:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
    --initial-cluster "sluice=http://$HOST:$ETCD_PEER_PORT" --initial-cluster-state new \
    --unsafe-no-fsync
  wait_for etcd etcd etcd_healthy || return 1

  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://$HOST:$ETCD_PORT" \
    --bind-address "$HOST" --advertise-address "$HOST" --secure-port "$PORT" \
    --cert-dir "$PKI/generated" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --service-cluster-ip-range 10.0.0.0/24 \
    --endpoint-reconciler-type none \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --allow-privileged=true --profiling=false
  wait_for kube-apiserver kube-apiserver apiserver_ready || return 1

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/kube-controller-manager.kubeconfig" \
    --controllers "$CONTROLLERS" \
    --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --bind-address "$HOST" --secure-port 0 --profiling=false

  [ -z "${SLUICE_NODEAGENT_ARGS:-}" ] || read -ra extra <<<"$SLUICE_NODEAGENT_ARGS"
  start nodeagent "$DIR/bin/nodeagent" \
    --kubeconfig "$DIR/nodeagent.kubeconfig" --scheduler-kubeconfig "$DIR/kube-scheduler.kubeconfig" \
    --node-name "$NODE" --image "$IMAGE" --binary "$binary" --work-dir "$DIR/nodeagent" \
    --listen "$HOST:$AGENT_PORT" --tls-cert-file "$PKI/nodeagent-serving.crt" \
    --tls-private-key-file "$PKI/nodeagent-serving.key" --client-ca-file "$PKI/ca.crt" \
    "${extra[@]}"
  wait_for kube-controller-manager "kube-controller-manager (default service account, kube-root-ca.crt)" controllers_ready || return 1
  wait_for nodeagent "node $NODE" node_ready || return 1
  log "up in $((SECONDS - t0))s: $SERVER, node $NODE runs $IMAGE as $binary (logs: $DIR/*.log)"
}

# stop_pid PID: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 75); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  log "pid $pid still alive after 15 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 25); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  log "pid $pid did not die"
}

# pod_groups: the process groups of pods the node agent left (it kills them when it stops; this
# is for an agent that was killed). A pid counts only when its environment names its pod's
# termination log, so a recycled pid is never killed.
pod_groups() {
  local f pid d
  for f in "$DIR"/nodeagent/pods/*/pid; do
    [ -f "$f" ] || continue
    d=$(dirname "$f")
    pid=$(cat "$f" 2>/dev/null) || continue
    [ -r "/proc/$pid/environ" ] || continue
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "SLUICE_TERMINATION_LOG=$d/termination-log"; then
      echo "$pid"
    fi
  done
}

cmd_down() {
  local c pid d
  [ -d "$DIR" ] || return 0
  for c in nodeagent kube-controller-manager kube-apiserver etcd; do
    pid=$(pid_of "$c")
    if is_ours "$pid"; then
      log "stopping $c (pid $pid)"
      stop_pid "$pid"
    fi
    rm -f "$DIR/$c.pid"
  done
  for pid in $(pod_groups); do
    log "killing the process group $pid of a pod"
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  # Anything else of ours, its pid file lost.
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" != $$ ] && is_ours "$pid" || continue
    log "stopping leftover pid $pid: $(tr '\0' ' ' <"$d/cmdline" | cut -c1-100)"
    stop_pid "$pid"
  done
}

cmd_up() {
  BIN=${SLUICE_K8S_BIN:-}
  if all_up; then
    echo "$KUBECONFIG_PATH"
    return 0
  fi
  if any_up; then
    log "the cluster in $DIR is partly up: restarting it from scratch"
    cmd_down
  fi
  if ! cold_up; then
    cmd_down
    die "the cluster did not come up (logs: $DIR)"
  fi
  echo "$KUBECONFIG_PATH"
}

# lock: one up or down at a time.
lock() {
  mkdir -p "$RUN"
  exec 9>"$RUN/cluster.lock"
  flock -w $((TIMEOUT * 4 + 60)) 9 || die "could not lock $RUN/cluster.lock"
}

case "${1:-}" in
  up) lock && cmd_up ;;
  down) lock && cmd_down ;;
  kubeconfig)
    all_up || die "the cluster is not up: run hack/cluster.sh up"
    echo "$KUBECONFIG_PATH"
    ;;
  status) all_up ;;
  *)
    echo "usage: $0 up|down|kubeconfig|status" >&2
    exit 2
    ;;
esac
