#!/usr/bin/env bash
# Starts (or stops) a throwaway PostgreSQL cluster of our own for tests and the demo: Debian's
# postgresql package (installed when missing), initdb into a run directory, a loopback port.
# The system cluster, if any, is never touched.
#
#   hack/postgres.sh start   # prints the DSN on stdout
#   hack/postgres.sh stop
#   hack/postgres.sh status  # exit 0 when it answers
set -euo pipefail

CACHE=${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}
RUN=${SLUICE_RUN:-$CACHE/run}
PORT=${SLUICE_PG_PORT:-15432}
DATA="$RUN/pg/data"
SOCK="$RUN/pg/sock"
LOG="$RUN/pg.log"
DB=sluice
DSN="postgres://postgres@127.0.0.1:$PORT/$DB?sslmode=disable"

log() { echo "postgres: $*" >&2; }

pg_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

ensure_installed() {
  pg_bin >/dev/null && return 0
  log "installing Debian's postgresql package"
  if [ "$(id -u)" -ne 0 ]; then
    log "not root: install it with 'sudo apt-get install -y postgresql'"
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  # The package starts a system cluster; we do not use it.
  pg_bin >/dev/null || { log "postgresql installed but initdb not found"; exit 1; }
}

# as_owner runs a command as the owner of the data directory: postgres refuses to run as root.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

answers() {
  local bin
  bin=$(pg_bin) || return 1
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PORT" -d "$DB" -U postgres
}

# Logical replication, for CDC pipelines: each test pipeline makes a slot and a walsender.
# Written into postgresql.conf at initdb, and into that of a cluster made before them.
REPLICATION_CONF="# Logical replication (CDC pipelines): wal_level needs a restart.
wal_level = logical
max_replication_slots = 64
max_wal_senders = 64"

# replication_ready reports whether the running server has the settings above.
replication_ready() {
  local bin
  bin=$(pg_bin) || return 1
  [ "$("$bin/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB" -XAtc \
    "SELECT current_setting('wal_level') = 'logical'
        AND current_setting('max_replication_slots')::int >= 64
        AND current_setting('max_wal_senders')::int >= 64" 2>/dev/null)" = t ]
}

# ensure_replication gives a cluster of ours started without the settings (an older version
# of this script made it) the settings and restarts it: wal_level is read at start only.
ensure_replication() {
  local bin
  bin=$(pg_bin)
  replication_ready && return 0
  if [ ! -f "$DATA/postgresql.conf" ]; then
    log "warning: the server on port $PORT is not ours ($DATA has no postgresql.conf) and lacks" \
      "wal_level = logical, max_replication_slots and max_wal_senders >= 64: CDC tests will fail"
    return 0
  fi
  log "restarting with wal_level = logical (the cluster predates it)"
  printf '%s\n' "$REPLICATION_CONF" >> "$DATA/postgresql.conf"
  as_owner "$bin/pg_ctl" -D "$DATA" -l "$LOG" -m fast -w -t 60 restart >/dev/null
  replication_ready || { log "restarted, but wal_level is still not logical: see $LOG"; exit 1; }
}

start() {
  ensure_installed
  local bin
  bin=$(pg_bin)
  if answers; then
    ensure_replication
    echo "$DSN"
    return 0
  fi
  mkdir -p "$RUN"
  rm -rf "$RUN/pg"
  mkdir -p "$DATA" "$SOCK"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$RUN/pg" postgres
    chown -R postgres: "$RUN/pg"
    # the postgres user must be able to reach the run directory
    chmod o+x "$RUN" "$(dirname "$RUN")" 2>/dev/null || true
    local d=$RUN
    while [ "$d" != / ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
  fi
  log "initdb in $DATA"
  as_owner "$bin/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  cat >> "$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 200
shared_buffers = 512MB
work_mem = 16MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
# A throwaway cluster: durability of the server itself is not under test (the runner's crash
# safety is, and it does not depend on these).
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
$REPLICATION_CONF
CONF
  touch "$LOG"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$LOG"
  as_owner "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null
  as_owner "$bin/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
  log "listening on 127.0.0.1:$PORT ($("$bin/postgres" --version))"
  echo "$DSN"
}

stop() {
  local bin
  bin=$(pg_bin) || return 0
  [ -f "$DATA/postmaster.pid" ] || return 0
  as_owner "$bin/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null || true
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  dsn) echo "$DSN" ;;
  *) echo "usage: $0 start|stop|status|dsn" >&2; exit 2 ;;
esac
