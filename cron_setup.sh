#!/usr/bin/env bash
# Install, show or remove the crontab line that runs the analytics refresh (Linux, macOS).
#
# cron starts a job with almost no environment (PATH=/usr/bin:/bin, no virtualenv), in the
# user's home directory, and mails or drops whatever it prints. So the line written here
# changes into the project directory (where the runner finds .env and logs/), runs the
# project's own .venv Python by absolute path, and appends anything printed outside the
# runner's log (a crash before logging starts) to logs/cron_output.log. Overlapping runs
# need nothing here: the runner takes its own lock and exits 5 when another run holds it.
#
# Written for bash 3.2 (macOS) as well as bash 4/5: no associative arrays, no mapfile.
set -euo pipefail

# The schedule is documented once, in deploy/SCHEDULE.md; tests/deploy checks that every
# installer agrees with it.
DEFAULT_SCHEDULE='0 */2 * * *'
ENTRY=analytics_refresh_cron.py
MARKER_TAG='# analytics-refresh-cron:'
DEFAULT_DEADLINE=6600
LIMIT_MARGIN_SECONDS=300
# What cron's run will read: .env (cron passes almost no environment) and the interval the
# line exports.
DEADLINE_PROBE='import os
from pathlib import Path
from analytics_refresh.config.envfile import read_dotenv
from analytics_refresh.config.settings import Settings
env = {**read_dotenv(Path(".env")), "REFRESH_INTERVAL_MINUTES": os.environ["REFRESH_INTERVAL_MINUTES"]}
print(int(Settings.from_env(env).deadline))'

usage() {
  cat <<EOF
Usage: $0 [--print | --uninstall] [--schedule EXPR] [--user USER]

Installs one crontab line that runs $ENTRY from this project directory
with the project's .venv Python, every two hours ('$DEFAULT_SCHEDULE').
Running it again replaces that line; every other line of the crontab is kept as it is.
The line sets REFRESH_INTERVAL_MINUTES to the schedule's interval (and so does .env, where
installing sets it too, for the commands you run by hand). A schedule shorter than
two hours is meant for change-aware refresh: set REFRESH_CHANGE_SQL_FILE in .env first,
or every run refreshes every key (the installer warns).

  --print          show the line that would be installed, change nothing
  --uninstall      remove the line (only this project's), change nothing else
  --schedule EXPR  five-field cron expression instead of '$DEFAULT_SCHEDULE'
  --user USER      edit USER's crontab instead of your own (root only)
  -h, --help       this text
EOF
}

# Print a problem and each way to fix it, then stop. Exit 2 for usage errors, else 1.
fail() {
  local code=$1 message=$2
  shift 2
  printf 'cron_setup.sh: %s\n' "$message" >&2
  local fix
  # ${1+"$@"}: bash 3.2 under set -u calls an empty "$@" unbound.
  for fix in ${1+"$@"}; do
    printf '  fix: %s\n' "$fix" >&2
  done
  exit "$code"
}

# Quote a word for /bin/sh, which is what cron hands the command to.
sh_quote() {
  printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# cron turns an unescaped % in the command into a newline; escape every one.
cron_escape() {
  printf '%s' "$1" | sed 's/%/\\%/g'
}

check_schedule() {
  local expr=$1 field count=0
  case "$expr" in
    *%* | *"
"*) fail 2 "--schedule '$expr': a schedule cannot contain % or a newline" ;;
  esac
  # Split on blanks without letting the shell expand the asterisks.
  set -f
  # shellcheck disable=SC2086
  set -- $expr
  set +f
  for field in ${1+"$@"}; do
    count=$((count + 1))
    case "$field" in
      *[!0-9A-Za-z*/,-]*)
        fail 2 "--schedule '$expr': field '$field' is not a cron field" ;;
    esac
  done
  [ "$count" -eq 5 ] ||
    fail 2 "--schedule '$expr': expected 5 fields (minute hour day month weekday), got $count" \
      "e.g. --schedule '$DEFAULT_SCHEDULE'"
}

# Run crontab on the chosen user's table (bash 3.2 fails on an empty "${array[@]}" under
# set -u, hence a function rather than an optional argument array).
run_crontab() {
  if [ -n "$target_user" ]; then
    crontab -u "$target_user" "$@"
  else
    crontab "$@"
  fi
}

# Copy the current crontab into file $1; a user without one has an empty table.
read_crontab() {
  if run_crontab -l >"$1" 2>"$workdir/crontab.err"; then
    had_crontab=yes
  elif grep -qi 'no crontab' "$workdir/crontab.err"; then
    had_crontab=no
    : >"$1"
  else
    fail 1 "crontab -l failed: $(cat "$workdir/crontab.err")"
  fi
}

# Copy stdin to stdout without this project's line. Byte comparison (LC_ALL=C) on the
# line's end, so a line whose marker names another directory (another checkout) stays.
without_our_line() {
  MARKER="$marker" LC_ALL=C awk '
    { tail = length($0) - length(ENVIRON["MARKER"]) }
    tail >= 0 && substr($0, tail + 1) == ENVIRON["MARKER"] { next }
    { print }
  '
}

write_crontab() {
  if [ ! -s "$1" ] && [ "$had_crontab" = no ]; then
    return # nothing before, nothing now: leave the user without a crontab
  fi
  if [ ! -s "$1" ]; then
    run_crontab -r
  else
    run_crontab "$1"
  fi
}

mode=install
schedule=$DEFAULT_SCHEDULE
target_user=""
while [ $# -gt 0 ]; do
  case "$1" in
    --print) mode=print ;;
    --uninstall) mode=uninstall ;;
    --schedule)
      [ $# -ge 2 ] || fail 2 "--schedule needs an expression, e.g. --schedule '$DEFAULT_SCHEDULE'"
      schedule=$2
      shift
      ;;
    --schedule=*) schedule=${1#*=} ;;
    --user)
      [ $# -ge 2 ] || fail 2 "--user needs a user name"
      target_user=$2
      shift
      ;;
    --user=*) target_user=${1#*=} ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) fail 2 "unknown option: $1" "see $0 --help" ;;
  esac
  shift
done

check_schedule "$schedule"

project_dir=$(cd "$(dirname "$0")" && pwd -P)
# Never resolve the venv's python symlink: the link's own path is what selects the venv.
python=$project_dir/.venv/bin/python

command -v crontab >/dev/null 2>&1 ||
  fail 1 "there is no crontab command on this system" \
    "Debian/Ubuntu: sudo apt-get install cron" "Fedora/RHEL: sudo dnf install cronie"

if [ -n "$target_user" ]; then
  id "$target_user" >/dev/null 2>&1 || fail 2 "--user $target_user: no such user"
  if [ "$(id -u)" -ne 0 ] && [ "$target_user" != "$(id -un)" ]; then
    fail 1 "only root may edit another user's crontab" "sudo $0 --user $target_user"
  fi
fi
crontab_owner=${target_user:-$(id -un)}
list_cmd="crontab${target_user:+ -u $target_user} -l"

# The marker names the project directory, so two checkouts keep a line each.
marker="$MARKER_TAG $(cron_escape "$project_dir")"

workdir=$(mktemp -d "${TMPDIR:-/tmp}/cron_setup.XXXXXX")
trap 'rm -rf "$workdir"' EXIT
had_crontab=no

if [ "$mode" = uninstall ]; then
  read_crontab "$workdir/current"
  without_our_line <"$workdir/current" >"$workdir/new"
  if cmp -s "$workdir/current" "$workdir/new"; then
    echo "No analytics refresh line for $project_dir in $crontab_owner's crontab: nothing to remove."
    exit 0
  fi
  write_crontab "$workdir/new"
  echo "Removed the analytics refresh line for $project_dir from $crontab_owner's crontab."
  echo "Check: $list_cmd"
  exit 0
fi

# Refuse to install a line that cannot work: cron would fail silently every two hours.
[ -f "$project_dir/$ENTRY" ] || fail 1 "$project_dir/$ENTRY is missing" \
  "run $0 from the project's own directory (it installs the project it sits in)"
[ -x "$python" ] || fail 1 "there is no virtualenv at $project_dir/.venv" \
  "cd $(sh_quote "$project_dir") && make install" \
  "or: python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/pip install -e ."
"$python" -c 'import analytics_refresh' >/dev/null 2>&1 ||
  fail 1 "the virtualenv at $project_dir/.venv cannot import analytics_refresh" \
    "cd $(sh_quote "$project_dir") && .venv/bin/pip install -r requirements.txt && .venv/bin/pip install -e ."
[ -f "$project_dir/.env" ] || fail 1 "there is no $project_dir/.env with the settings" \
  "cd $(sh_quote "$project_dir") && cp .env.example .env, then set DATABASE_URL, API_SECRET_KEY and ANALYTICS_API_URL in it"

# The schedule's interval goes into the line: the freshness promise, the deadline and the
# change detection of the runs it starts are judged by it. The same step warns (stderr)
# when a short schedule has no change query: every run would refresh every key.
# Installing also sets it in .env, so that check and status run by hand judge the same
# schedule (--print changes nothing).
write_dotenv=--write-dotenv
if [ "$mode" = print ]; then
  write_dotenv=
fi
interval=$(cd "$project_dir" && "$python" -m analytics_refresh.config.schedule ${write_dotenv:+"$write_dotenv"} "$schedule") ||
  fail 2 "--schedule '$schedule': cannot tell how often it runs" "e.g. --schedule '*/10 * * * *'"
interval_part="export REFRESH_INTERVAL_MINUTES=$interval && "

# An outer limit on each run, for a process hung where the runner cannot bound itself: its
# deadline (REFRESH_DEADLINE as .env sets it now) plus room to record how it ended, then
# SIGTERM (the run stops and records itself, exit 6) and SIGKILL a minute after that.
limit_part=""
timeout_bin=$(command -v timeout 2>/dev/null || command -v gtimeout 2>/dev/null || true)
if [ -n "$timeout_bin" ]; then
  deadline=$(cd "$project_dir" && REFRESH_INTERVAL_MINUTES=$interval "$python" -c "$DEADLINE_PROBE" 2>/dev/null) || deadline=""
  case "$deadline" in
    "" | *[!0-9]*)
      echo "Warning: could not read REFRESH_DEADLINE from .env; the outer limit assumes ${DEFAULT_DEADLINE}s." >&2
      deadline=$DEFAULT_DEADLINE
      ;;
  esac
  limit_part="$(sh_quote "$timeout_bin") --kill-after=60 $((deadline + LIMIT_MARGIN_SECONDS)) "
fi
command_part="${interval_part}cd $(sh_quote "$project_dir") && ${limit_part}$(sh_quote "$python") $ENTRY >>logs/cron_output.log 2>&1"
line="$schedule $(cron_escape "$command_part") $marker"

if [ "$mode" = print ]; then
  printf '%s\n' "$line"
  exit 0
fi

mkdir -p "$project_dir/logs"
if [ -n "$target_user" ] && [ "$(id -u)" -eq 0 ]; then
  # The job runs as that user, who must be able to write the log.
  chown "$target_user" "$project_dir/logs"
fi

read_crontab "$workdir/current"
without_our_line <"$workdir/current" >"$workdir/new"
printf '%s\n' "$line" >>"$workdir/new"
write_crontab "$workdir/new"

echo "Installed in $crontab_owner's crontab:"
echo "  $line"
echo "It runs at '$schedule' in this machine's time zone, now $(date +%Z) (UTC is recommended)."
echo "Its runs get REFRESH_INTERVAL_MINUTES=$interval (the longest gap between two runs)."
echo "See it:        $list_cmd"
echo "Its log:       tail -f $(sh_quote "$project_dir/logs/analytics_refresh_cron.log")"
echo "Run it now:    cd $(sh_quote "$project_dir") && .venv/bin/python $ENTRY"
echo "Remove it:     $0 --uninstall${target_user:+ --user $target_user}"
if [ -n "$limit_part" ]; then
  echo "Outer limit:   $((deadline + LIMIT_MARGIN_SECONDS))s a run (REFRESH_DEADLINE + ${LIMIT_MARGIN_SECONDS}s); run $0 again after changing REFRESH_DEADLINE"
else
  echo "Warning: no timeout command, so runs get no outer limit (macOS: brew install coreutils, then run $0 again)." >&2
fi

if [ "$(uname -s)" = Linux ] && command -v pgrep >/dev/null 2>&1 &&
  ! pgrep -x cron >/dev/null 2>&1 && ! pgrep -x crond >/dev/null 2>&1; then
  echo "Warning: no cron daemon is running, so nothing will run the line." >&2
  echo "  fix: sudo systemctl enable --now cron (crond on Fedora/RHEL), or sudo service cron start" >&2
fi
