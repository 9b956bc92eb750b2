#!/usr/bin/env bash
# The UE, the P-CSCF and the demo must work with no privilege at all (netstack
# mode): run them as nobody with every capability dropped and no way to gain
# one. Called by .ci/run; usable by hand as root.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d /tmp/imsec-unpriv.XXXXXX)
trap 'kill "${pcscf_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
chmod 755 "$work"
go build -o "$work/imsec" ./cmd/imsec
mkdir "$work/run" && chmod 777 "$work/run"

np() {
  setpriv --reuid=65534 --regid=65534 --clear-groups \
    --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
}

np sh -c 'grep -q "^CapEff:[[:space:]]*0000000000000000$" /proc/self/status' ||
  { echo "unprivileged: capabilities were not dropped"; exit 1; }

echo "unprivileged: imsec demo as nobody, no capabilities"
np "$work/imsec" demo > "$work/run/demo.out" 2>&1 || { cat "$work/run/demo.out"; exit 1; }
tail -1 "$work/run/demo.out"

echo "unprivileged: imsec pcscf + imsec ue --once as nobody, no capabilities"
K=465b5ce8b199b49faa5f0a2ee238a6bc OP=cdc202d5123e20f62b6d676ac72cb318
np "$work/imsec" sub add --db "$work/run/hss.db" --impi alice@a.example --impu sip:alice@a.example --k $K --op $OP >/dev/null
# Not through np(): a backgrounded shell function is a subshell, and its PID
# is not the server's.
setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- \
  "$work/imsec" pcscf --domain a.example --db "$work/run/hss.db" --sip 127.0.0.1:0 --esp 127.0.0.1:0 \
  > "$work/run/pcscf.out" 2>&1 &
pcscf_pid=$!
# Its start line names the ports it bound:
# "P-CSCF a.example: SIP ADDR:PORT (UDP+TCP), ESP-in-UDP ADDR:PORT, ..."
line=
for _ in $(seq 100); do
  line=$(grep -m1 "ESP-in-UDP" "$work/run/pcscf.out" 2>/dev/null) && break
  kill -0 "$pcscf_pid" 2>/dev/null || { cat "$work/run/pcscf.out"; echo "unprivileged: pcscf exited"; exit 1; }
  sleep 0.1
done
[ -n "$line" ] || { cat "$work/run/pcscf.out"; echo "unprivileged: pcscf did not start in 10 s"; exit 1; }
sip_addr=$(sed -E 's/.* SIP ([^ ]+) .*/\1/' <<<"$line")
esp_addr=$(sed -E 's/.* ESP-in-UDP ([^ ,]+),.*/\1/' <<<"$line")
np "$work/imsec" ue --pcscf "$sip_addr" --pcscf-esp "$esp_addr" --impi alice@a.example \
  --impu sip:alice@a.example --k $K --op $OP --once > "$work/run/ue.out" 2>&1 ||
  { cat "$work/run/ue.out" "$work/run/pcscf.out"; exit 1; }
grep "registered as" "$work/run/ue.out"
kill -TERM "$pcscf_pid"; wait "$pcscf_pid" || true
echo "unprivileged: ok"
