#!/usr/bin/env bash
# Runs a real single-node Elasticsearch 8 for the tests, without Docker: Elastic's own server
# and transport-netty4 jars from Maven Central (hack/es/pom.xml), started in one JVM by
# hack/es/SluiceEsNode.java, bound to 127.0.0.1 only, plain http, no security.
#
#   hack/elasticsearch.sh start    start it (or find it running), print its URL on stdout
#   hack/elasticsearch.sh stop     stop it; no-op when it is not running
#   hack/elasticsearch.sh status   exit 0 when it runs and is healthy (yellow or green)
#
# Environment:
#   SLUICE_CACHE     cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/sluice); Maven's local
#                    repository and the resolved runtime go to $SLUICE_CACHE/es
#   SLUICE_RUN       run dir (default $SLUICE_CACHE/run): node home $SLUICE_RUN/es (wiped at
#                    each start), log $SLUICE_RUN/es.log, pid $SLUICE_RUN/es.pid
#   SLUICE_ES_PORT   http port (default 19200); the transport port is an ephemeral one
#   SLUICE_ES_HEAP   JVM heap (default 1g)
#   SLUICE_ES_TIMEOUT  seconds to wait for health at start (default 180)
#   JAVA_HOME        JDK to use (default: java and javac on PATH); Java 17 or newer
#
# The first start resolves the jars with Maven (network: Maven Central only) and compiles the
# launcher; later starts reuse that (keyed on the content of hack/es/) and touch no network.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/hack/es"
CACHE=${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}
ES_CACHE="$CACHE/es"
RUN=${SLUICE_RUN:-$CACHE/run}
PORT=${SLUICE_ES_PORT:-19200}
HEAP=${SLUICE_ES_HEAP:-1g}
TIMEOUT=${SLUICE_ES_TIMEOUT:-180}
HOST=127.0.0.1
URL="http://$HOST:$PORT"
ES_HOME="$RUN/es"
LOG="$RUN/es.log"
PIDFILE="$RUN/es.pid"
CLUSTER_NAME=sluice-es
MAIN=SluiceEsNode

if [ -n "${JAVA_HOME:-}" ]; then
  JAVA="$JAVA_HOME/bin/java" JAVAC="$JAVA_HOME/bin/javac" JAR="$JAVA_HOME/bin/jar"
else
  JAVA=java JAVAC=javac JAR=jar
fi

log() { echo "elasticsearch.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# healthy: our cluster answers on the port with status yellow or green.
healthy() {
  local body
  body=$(curl -fsS --max-time 10 "$URL/_cluster/health?wait_for_status=yellow&timeout=${1:-1s}" 2>/dev/null) || return 1
  case "$body" in
    *"\"cluster_name\":\"$CLUSTER_NAME\""*\"status\":\"yellow\"* | *"\"cluster_name\":\"$CLUSTER_NAME\""*\"status\":\"green\"*) return 0 ;;
  esac
  return 1
}

# is_ours PID: the process is alive and is our launcher for this ES_HOME.
is_ours() {
  local pid=$1 cmd
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  case "$cmd" in *" $MAIN $ES_HOME"*) return 0 ;; esac
  return 1
}

# our_pids: every live JVM started by this script for this ES_HOME (pid file or not).
our_pids() {
  local d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    is_ours "$pid" && echo "$pid"
  done
  return 0
}

pid_from_file() { [ -f "$PIDFILE" ] && cat "$PIDFILE" 2>/dev/null || true; }

# jars_present CPFILE: every jar of the classpath file is still in Maven's local repository.
jars_present() {
  local j
  while read -r j; do
    [ -f "$j" ] || return 1
  done < <(tr ':' '\n' <"$1")
}

# resolve: print the build dir (classpath, launcher classes, modules/), making it if needed.
resolve() {
  local key build tmp
  key=$(cat "$SRC/pom.xml" "$SRC/$MAIN.java" "$SRC/SluiceRestRootPlugin.java" | sha256sum | cut -c1-16)
  build="$ES_CACHE/build-$key"
  if [ -f "$build/ok" ] && jars_present "$build/server.cp"; then
    echo "$build"
    return
  fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  command -v "$JAVAC" >/dev/null || die "$JAVAC not found: a JDK (17+) is needed"
  log "resolving Elasticsearch jars with Maven into $ES_CACHE/m2 (first run only)"
  mkdir -p "$ES_CACHE"
  tmp=$(mktemp -d "$ES_CACHE/build-$key.tmp.XXXXXX")
  # Maven writes nothing into hack/es for this goal; the outputs go to $tmp.
  local profile out
  for profile in "" netty4; do
    out="$tmp/server.cp"
    [ -z "$profile" ] || out="$tmp/all.cp"
    if ! mvn -B -q -f "$SRC/pom.xml" -Dmaven.repo.local="$ES_CACHE/m2" ${profile:+-P"$profile"} \
      dependency:build-classpath -Dmdep.outputFile="$out" >"$tmp/mvn.log" 2>&1; then
      cat "$tmp/mvn.log" >&2
      die "Maven could not resolve hack/es/pom.xml${profile:+ -P$profile}"
    fi
  done

  # modules/transport-netty4: its own jar and the jars it adds to the server's.
  local mod="$tmp/modules/transport-netty4" netty_jar=""
  mkdir -p "$mod"
  tr ':' '\n' <"$tmp/all.cp" | sort >"$tmp/all.list"
  tr ':' '\n' <"$tmp/server.cp" | sort >"$tmp/server.list"
  while read -r j; do
    [ -n "$j" ] || continue
    cp "$j" "$mod/"
    case "$j" in */transport-netty4-*.jar) netty_jar=$j ;; esac
  done < <(comm -23 "$tmp/all.list" "$tmp/server.list")
  [ -n "$netty_jar" ] || die "transport-netty4 jar not in the resolved classpath"
  # The jar's own descriptor, loaded as a classic (non-modular) plugin because the server
  # runs on the classpath here, not on the module path.
  (cd "$tmp" && "$JAR" xf "$netty_jar" META-INF/es-plugins/transport-netty4/plugin-descriptor.properties)
  grep -v '^modulename=' "$tmp/META-INF/es-plugins/transport-netty4/plugin-descriptor.properties" \
    >"$mod/plugin-descriptor.properties"
  rm -rf "$tmp/META-INF"

  "$JAVAC" -nowarn --release 17 -cp "$(cat "$tmp/server.cp")" -d "$tmp/classes" "$SRC/$MAIN.java" >&2

  # modules/sluice-rest-root: GET / (see SluiceRestRootPlugin.java), a module of its own so
  # that its classes are not on the JVM's classpath (the server checks for jar hell).
  local es_version root="$tmp/modules/sluice-rest-root"
  es_version=$(sed -n 's/^elasticsearch.version=//p' "$mod/plugin-descriptor.properties")
  mkdir -p "$root"
  "$JAVAC" -nowarn --release 17 -cp "$(cat "$tmp/server.cp")" -d "$tmp/rest-root-classes" \
    "$SRC/SluiceRestRootPlugin.java" >&2
  "$JAR" cf "$root/sluice-rest-root.jar" -C "$tmp/rest-root-classes" . >&2
  rm -rf "$tmp/rest-root-classes"
  cat >"$root/plugin-descriptor.properties" <<EOF
description=GET / (node, cluster, version, tagline) in place of the rest-root module, not on Maven Central
version=$es_version
name=sluice-rest-root
classname=dev.sluice.hack.es.SluiceRestRootPlugin
java.version=17
elasticsearch.version=$es_version
EOF
  touch "$tmp/ok"
  rm -rf "$build"
  mv "$tmp" "$build"
  echo "$build"
}

write_config() {
  mkdir -p "$ES_HOME/config" "$ES_HOME/data" "$ES_HOME/logs" "$ES_HOME/plugins" "$ES_HOME/tmp"
  cp "$SRC/log4j2.properties" "$ES_HOME/config/log4j2.properties"
  cat >"$ES_HOME/config/elasticsearch.yml" <<EOF
# written by hack/elasticsearch.sh; the node home is wiped at each start
cluster.name: $CLUSTER_NAME
node.name: $CLUSTER_NAME-1
path.data: $ES_HOME/data
path.logs: $ES_HOME/logs
# loopback only
network.host: $HOST
http.port: $PORT
transport.port: 0
discovery.type: single-node
# a near-full disk must not make the test indices read-only
cluster.routing.allocation.disk.threshold_enabled: false
# tests may delete indices by wildcard
action.destructive_requires_name: false
EOF
}

cmd_status() {
  local pid
  pid=$(pid_from_file)
  is_ours "$pid" && healthy
}

cmd_start() {
  local pid build deadline
  command -v curl >/dev/null || die "curl not found"
  mkdir -p "$RUN"
  pid=$(pid_from_file)
  if is_ours "$pid"; then
    if healthy; then
      echo "$URL"
      return 0
    fi
    log "pid $pid is starting (or unhealthy); waiting for it"
  else
    rm -f "$PIDFILE"
    if curl -s --max-time 3 -o /dev/null "$URL/"; then
      die "port $PORT already answers and it is not our node: set SLUICE_ES_PORT or stop it"
    fi
    build=$(resolve)
    rm -rf "$ES_HOME"
    write_config
    ln -s "$build/modules" "$ES_HOME/modules"
    : >"$LOG"
    log "starting Elasticsearch on $URL (log: $LOG)"
    # setsid: the node outlives this shell and its terminal's signals. (In a script, a
    # background job is not a group leader, so setsid execs in place and $! is the JVM.)
    local detach=setsid
    command -v setsid >/dev/null || detach=nohup
    "$detach" "$JAVA" -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
      -Djava.io.tmpdir="$ES_HOME/tmp" -Dfile.encoding=UTF-8 -Djava.awt.headless=true \
      -Djava.locale.providers=SPI,CLDR \
      -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true -Dlog4j2.formatMsgNoLookups=true \
      -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true \
      -Dio.netty.recycler.maxCapacityPerThread=0 \
      -Des.networkaddress.cache.ttl=60 -Des.networkaddress.cache.negative.ttl=10 \
      -cp "$build/classes:$(cat "$build/server.cp")" \
      "$MAIN" "$ES_HOME" </dev/null >>"$LOG" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PIDFILE"
  fi

  deadline=$((SECONDS + TIMEOUT))
  while ! healthy 5s; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PIDFILE"
      tail -n 40 "$LOG" >&2 || true
      die "Elasticsearch exited during start-up (log: $LOG)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 40 "$LOG" >&2 || true
      cmd_stop
      die "Elasticsearch not healthy after ${TIMEOUT}s (log: $LOG)"
    fi
    sleep 1
  done
  log "Elasticsearch is up (pid $pid)"
  echo "$URL"
}

# stop_pid PID: SIGTERM, wait up to 30 s, then SIGKILL.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  log "pid $pid still alive after 30 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 20); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  log "pid $pid did not die"
  return 1
}

cmd_stop() {
  local pid pids
  pid=$(pid_from_file)
  # the pid file's process, and any other JVM of ours on this ES_HOME (a lost pid file)
  pids=$( { is_ours "$pid" && echo "$pid"; our_pids; } | sort -u)
  for pid in $pids; do
    log "stopping Elasticsearch (pid $pid)"
    stop_pid "$pid"
  done
  rm -f "$PIDFILE"
}

# lock: one start or stop at a time (parallel test runs may all call start).
lock() {
  mkdir -p "$RUN"
  exec 9>"$RUN/es.lock"
  if command -v flock >/dev/null; then
    flock -w $((TIMEOUT + 60)) 9 || die "could not lock $RUN/es.lock"
  fi
}

case "${1:-}" in
  start) lock && cmd_start ;;
  stop) lock && cmd_stop ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
