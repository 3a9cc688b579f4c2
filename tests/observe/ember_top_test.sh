#!/usr/bin/env bash
# ember-top against a live node: --once prints the header, the schedulers
# and the fixture's named processes, sorted as asked; a node that is not
# there is one clear line on stderr and exit status 1.
#   ember_top_test.sh FIXTURE EMBER_TOP
set -u -o pipefail
fixture=${1:?fixture binary}
top=${2:?ember-top binary}
out=$(mktemp -d)
trap 'kill "$fixture_pid" 2>/dev/null; wait "$fixture_pid" 2>/dev/null; rm -rf "$out"' EXIT

fail() { echo "ember_top_test: $*" >&2; exit 1; }

# The fixture flushes its url line (no stdbuf: its LD_PRELOAD would come
# before a sanitizer's runtime, which then refuses to start).
"$fixture" --seconds 120 >"$out/fixture.out" 2>"$out/fixture.err" &
fixture_pid=$!
url=
for _ in $(seq 1 300); do
  url=$(awk '/^url /{print $2; exit}' "$out/fixture.out")
  [[ -n $url ]] && break
  kill -0 "$fixture_pid" 2>/dev/null || fail "the fixture exited: $(cat "$out/fixture.err")"
  sleep 0.1
done
[[ -n $url ]] || fail "the fixture printed no url within 30 s"

"$top" --once --sort memory -n 50 "$url" >"$out/once.txt" 2>"$out/once.err" || fail "--once failed: $(cat "$out/once.err")"
cat "$out/once.txt"
grep -q '^node ' "$out/once.txt" || fail "no node line"
grep -Eq '^ +0 \[' "$out/once.txt" || fail "no line for scheduler 0"
grep -q 'worker_a' "$out/once.txt" || fail "worker_a is not in the table"
grep -q 'worker_b' "$out/once.txt" || fail "worker_b is not in the table"
grep -q 'by memory' "$out/once.txt" || fail "the table does not say it is sorted by memory"

# worker_a keeps more than worker_b (64 strings against 8): listed first.
a=$(grep -n 'worker_a' "$out/once.txt" | head -1 | cut -d: -f1)
b=$(grep -n 'worker_b' "$out/once.txt" | head -1 | cut -d: -f1)
((a < b)) || fail "sorted by memory, worker_a (line $a) should come before worker_b (line $b)"

# A port where nothing listens (1: privileged, unused): exit 1 and one
# line that says so.
"$top" --once "http://127.0.0.1:1/" >"$out/down.txt" 2>"$out/down.err"
status=$?
((status == 1)) || fail "a node that is not there: exit $status, expected 1"
grep -q 'cannot reach' "$out/down.err" || fail "a node that is not there: stderr says '$(cat "$out/down.err")'"
echo "ember_top_test: ok"
