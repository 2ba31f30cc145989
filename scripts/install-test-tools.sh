#!/usr/bin/env bash
# Install the system tools the deploy tests run for real: Debian's `cron` (the crontab
# command and the daemon) and `systemd` (for systemd-analyze). Quick when they are already
# there. Where they cannot be installed (not root, no apt-get, apt-get failed) it prints a
# notice and exits 0: the tests that need a missing tool then say why they skip or fail.
set -euo pipefail

missing=""
if ! command -v crontab >/dev/null 2>&1 || [ ! -x /usr/sbin/cron ]; then
  missing="cron"
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
  missing="${missing:+$missing }systemd"
fi

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
# on purpose (SC2086).
# shellcheck disable=SC2086
if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
  apt-get update -qq || notice "apt-get update failed"
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
    notice "apt-get install failed"
fi
echo "install-test-tools: installed $missing"
