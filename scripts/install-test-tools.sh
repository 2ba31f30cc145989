#!/usr/bin/env bash
# Install the system tools the deploy tests run for real, from Debian:
#   cron        the crontab command and the daemon (the crontab installer's tests)
#   systemd     systemd-analyze (verify, security, calendar) for the units
#   tini        the image's PID 1, for the signal test of the Docker process tree
#   prometheus  promtool, which judges the alert rules (`promtool test rules`)
#   chromium    headless, renders the freshness report as a desktop and a phone show it
# Quick when they are already there. Where they cannot be installed (not root, no apt-get,
# apt-get failed) it prints a notice and exits 0: the tests that need a missing tool then
# say why they skip.
set -euo pipefail

missing=""
add() {
  missing="${missing:+$missing }$1"
}
if ! command -v crontab >/dev/null 2>&1 || [ ! -x /usr/sbin/cron ]; then
  add cron
fi
command -v systemd-analyze >/dev/null 2>&1 || add systemd
command -v tini >/dev/null 2>&1 || add tini
command -v promtool >/dev/null 2>&1 || add prometheus
command -v chromium >/dev/null 2>&1 || add chromium

if [ -z "$missing" ]; then
  exit 0
fi

notice() {
  echo "install-test-tools: $1, so not installing: $missing (tests that need it will say so)"
  exit 0
}

[ "$(id -u)" -eq 0 ] || notice "not root"
command -v apt-get >/dev/null 2>&1 || notice "no apt-get on this system"

export DEBIAN_FRONTEND=noninteractive
echo "install-test-tools: installing $missing with apt-get"
# Try the package lists already on the machine first: `apt-get update` is the slow part,
# needed only when the lists are missing or stale. $missing is split into package names
# on purpose (SC2086). The prometheus package's postinst may start a server where an init
# system runs; policy-rc.d's exit 101 tells it not to, so installing starts nothing.
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  own_policy=yes
fi
cleanup() {
  if [ -n "$own_policy" ]; then
    rm -f "$policy"
  fi
}
trap cleanup EXIT
# shellcheck disable=SC2086
if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
  apt-get update -qq || notice "apt-get update failed"
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
    notice "apt-get install failed"
fi
echo "install-test-tools: installed $missing"
