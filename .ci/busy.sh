#!/usr/bin/env bash
# Runs the README's test command ROUNDS times (default 3) on a busy host:
# ~9,000 loopback TCP connections hold ephemeral ports, and another
# `go test ./...` of the module runs beside each round. Not part of CI's
# every run (it takes a while); issue #12 asks for it once per change of
# the test harness. Usage: bash .ci/busy.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
ulimit -n 65536 2>/dev/null || true
go build -o /tmp/imsec-portholder ./.ci/portholder
/tmp/imsec-portholder -n 9000 > /tmp/imsec-portholder.out 2>&1 &
holder=$!
trap 'kill $holder 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q holding /tmp/imsec-portholder.out && break; sleep 0.1; done
cat /tmp/imsec-portholder.out
ok=0
for r in $(seq "$rounds"); do
  go test -count=1 ./... > "/tmp/imsec-busy-beside-$r.log" 2>&1 &
  beside=$!
  start=$(date +%s)
  if make test > "/tmp/imsec-busy-round-$r.log" 2>&1; then
    ok=$((ok + 1)); echo "round $r: passed in $(( $(date +%s) - start ))s"
  else
    echo "round $r: FAILED in $(( $(date +%s) - start ))s (/tmp/imsec-busy-round-$r.log)"
    grep -E '^(--- FAIL|FAIL)' "/tmp/imsec-busy-round-$r.log" || true
  fi
  wait $beside || echo "round $r: the go test beside it failed (/tmp/imsec-busy-beside-$r.log)"
done
echo "$ok of $rounds rounds passed"
[ "$ok" -eq "$rounds" ]
