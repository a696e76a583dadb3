#!/usr/bin/env bash
# Installs Debian's prometheus package when it is missing, for the tests of the alerting rules
# and the dashboard (promtool, and a real Prometheus server that test/testenv starts per test on
# a loopback port). The package's system service is neither started nor enabled: the tests run
# servers of their own, each with its own configuration and a temporary storage directory.
#
#   hack/prometheus.sh install   # installs when missing; prints the directory holding
#                                # prometheus and promtool
#   hack/prometheus.sh dir       # prints that directory, exit 1 when not installed
set -euo pipefail

BIN_DIR=/usr/bin
POLICY=/usr/sbin/policy-rc.d

log() { echo "prometheus: $*" >&2; }

installed() { [ -x "$BIN_DIR/prometheus" ] && [ -x "$BIN_DIR/promtool" ]; }

# While apt-get runs, policy-rc.d answers 101 ("action forbidden") to every request to start a
# service, so neither invoke-rc.d nor deb-systemd-invoke starts Prometheus. A policy-rc.d that
# was already there is put back afterwards.
policy_backup=""
policy_installed=0
restore_policy() {
  [ "$policy_installed" -eq 1 ] || return 0
  if [ -n "$policy_backup" ]; then
    mv -f "$policy_backup" "$POLICY"
  else
    rm -f "$POLICY"
  fi
  policy_installed=0
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
}

ensure_installed() {
  installed && return 0
  log "installing Debian's prometheus package (its service is not started)"
  if [ "$(id -u)" -ne 0 ]; then
    log "not root: install it with 'sudo apt-get install -y --no-install-recommends prometheus'"
    exit 1
  fi
  if [ -e "$POLICY" ]; then
    policy_backup=$(mktemp "$POLICY.sluice.XXXXXX")
    cp -p "$POLICY" "$policy_backup"
  fi
  trap restore_policy EXIT
  policy_installed=1
  printf '#!/bin/sh\n# Written by hack/prometheus.sh while it installs prometheus: start no service.\nexit 101\n' > "$POLICY"
  chmod 0755 "$POLICY"
  # The package lists may be fresh enough already; update them only when the install fails.
  if ! apt_install 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_install
  fi
  restore_policy
  trap - EXIT
  # The package enables its unit (and its SysV links) for the next boot: undo that.
  deb-systemd-helper disable prometheus.service >/dev/null 2>&1 || true
  update-rc.d prometheus disable >/dev/null 2>&1 || true
  installed || { log "prometheus installed but $BIN_DIR/prometheus or $BIN_DIR/promtool is missing"; exit 1; }
}

case "${1:-}" in
  install)
    ensure_installed
    log "$("$BIN_DIR/prometheus" --version 2>&1 | head -n 1)"
    echo "$BIN_DIR"
    ;;
  dir)
    installed || exit 1
    echo "$BIN_DIR"
    ;;
  *) echo "usage: $0 install|dir" >&2; exit 2 ;;
esac
