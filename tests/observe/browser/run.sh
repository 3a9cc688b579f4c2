#!/usr/bin/env bash
# The dashboard page in a real browser: starts NODE_BINARY (a program that
# serves the dashboard and prints "url http://127.0.0.1:PORT/" or
# "dashboard: http://..." once it is ready: the fixture, or the demo),
# runs dashboard.test.mjs against it in Debian's Chromium, stops it.
#
#   run.sh NODE_BINARY OUTPUT_DIR [NODE_ARGUMENTS...]
#   EMBER_DASHBOARD_TARGET=NAME: the registered name of the supervised
#   process to open, kill and see restarted (default worker_a)
#
# OUTPUT_DIR gets dashboard.png and fixture.log. Needs node, npm and
# /usr/bin/chromium (EMBER_CHROMIUM to use another); installs playwright-core
# into node_modules here from package-lock.json (npm ci) the first time.
# Exits with the test's status, or 1 if something it needs is missing.
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 NODE_BINARY OUTPUT_DIR [NODE_ARGUMENTS...]" >&2
  exit 2
fi
fixture=$1
out=$2
shift 2
fixture_args=("$@")
here=$(cd "$(dirname "$0")" && pwd)
chromium=${EMBER_CHROMIUM:-/usr/bin/chromium}

fail() { echo "run.sh: $*" >&2; exit 1; }

[ -x "$fixture" ] || fail "fixture $fixture is not an executable (build it first)"
command -v node >/dev/null || fail "node is not installed: apt-get install nodejs npm"
command -v npm >/dev/null || fail "npm is not installed: apt-get install npm"
[ -x "$chromium" ] || fail "no browser at $chromium: apt-get install chromium"
mkdir -p "$out" || fail "cannot create $out"
out=$(cd "$out" && pwd)

if [ ! -d "$here/node_modules/playwright-core" ]; then
  echo "run.sh: installing playwright-core (npm ci) in $here"
  (cd "$here" && npm ci --no-audit --no-fund) || fail "npm ci failed in $here"
fi

log="$out/fixture.log"
fixture_pid=
stop_fixture() {
  if [ -n "$fixture_pid" ] && kill -0 "$fixture_pid" 2>/dev/null; then
    kill -TERM "$fixture_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$fixture_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$fixture_pid" 2>/dev/null
    wait "$fixture_pid" 2>/dev/null
  fi
}
trap stop_fixture EXIT
trap 'exit 130' INT TERM

# The node flushes its url line itself. (Not stdbuf: its LD_PRELOAD comes
# before the sanitizers' runtimes, which then refuse to start.)
"$fixture" "${fixture_args[@]}" >"$log" 2>&1 &
fixture_pid=$!

url=
for _ in $(seq 300); do   # 30 s
  url=$(sed -n 's/^\(url\|dashboard:\) \(http[^ ]*\).*/\2/p' "$log" | head -n 1)
  [ -n "$url" ] && break
  kill -0 "$fixture_pid" 2>/dev/null || { cat "$log" >&2; fail "$fixture exited before printing its url"; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$log" >&2; fail "$fixture printed no 'url http://...' line in 30 s"; }
echo "run.sh: dashboard at $url (fixture pid $fixture_pid, log $log)"

cd "$here"
EMBER_DASHBOARD_URL=$url EMBER_TEST_OUTPUT=$out EMBER_CHROMIUM=$chromium node --test dashboard.test.mjs
rc=$?
[ $rc -eq 0 ] || { echo "run.sh: the browser test failed (exit $rc); fixture log:" >&2; tail -n 40 "$log" >&2; }
exit $rc
