#!/usr/bin/env bash
# Smoke test of the cross-built edge binaries under qemu-user (cross/README.md). `make cross-test`.
#
# aarch64 (aarch64-unknown-linux-musl, or the -gnu build when musl is skipped):
#   1. `picket --version`
#   2. `picket replay --format auth-log` of a recorded sshd log with the shipped policies: the
#      ssh-brute-force decision must come out
#   3. `picket run` on the device side, under qemu, publishing signed batches over TLS with a client
#      certificate to a mosquitto this script starts on a free loopback port; `picket collect` of the
#      x86_64 host build must verify them: events from the device in its output, nothing rejected.
# armv7 (armv7-unknown-linux-musleabihf, or -gnueabihf when musl is skipped): `picket --version`.
#
# Builds what it needs first (cross/build.sh, and `cargo build -p picket` for the host collector).
# Needs qemu-user-static, mosquitto, openssl, python3 (scripts/test-deps.sh). A missing tool or
# target is a loud SKIP and exit 0; a failed check exits 1.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
CARGO="${CARGO:-cargo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
PROFILE="${PROFILE:-edge}"
t0=$(date +%s)

skip() { echo "*** SKIP: cross-test: $*" >&2; exit 0; }
fail() { echo "cross-test: FAIL: $*" >&2; exit 1; }
ok() { echo "cross-test: ok: $*" >&2; }

for tool in qemu-aarch64-static qemu-arm-static mosquitto openssl python3; do
  command -v "$tool" >/dev/null || skip "$tool missing (run scripts/test-deps.sh)"
done

# Build (or find up to date) one target per architecture: musl, or gnu when musl is skipped.
# cross/build.sh prints "size <target> <bytes> <path>" for what it built.
build_one() {
  local out
  out="$(PROFILE="$PROFILE" ./cross/build.sh "$1")" || return 1
  if ! grep -q '^size ' <<<"$out"; then
    out="$(PROFILE="$PROFILE" ./cross/build.sh "$2")" || return 1
  fi
  awk '$1 == "size" { print $4 }' <<<"$out"
}
a64="$(build_one aarch64-unknown-linux-musl aarch64-unknown-linux-gnu)" || fail "aarch64 build failed (above)"
[ -n "$a64" ] || skip "no aarch64 build (see the SKIP lines above)"
# Dynamic (glibc) builds find their loader and libc in Debian's cross sysroots.
qa64=(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$a64")
echo "cross-test: aarch64 binary $a64" >&2

# The collector: the host's debug build (HOST_PICKET=path to use another x86_64 build).
host="${HOST_PICKET:-}"
if [ -z "$host" ]; then
  "$CARGO" build --locked -p picket >&2
  host="$CARGO_TARGET_DIR/debug/picket"
fi

# 1. --version
want="picket $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
v="$("${qa64[@]}" --version)"
[ "$v" = "$want" ] || fail "aarch64 --version printed '$v', want '$want'"
ok "aarch64 --version: $v"

# 2. replay with the shipped policies.
out="$("${qa64[@]}" replay --format auth-log --policies policies agent/capture/tests/data/auth/real-sshd.log)"
n=$(grep -c '"kind":"decision".*"id":"ssh-brute-force"' <<<"$out" || true)
[ "$n" -ge 1 ] || fail "replay under qemu: no ssh-brute-force decision in: $(head -c 2000 <<<"$out")"
ok "aarch64 replay: $(wc -l <<<"$out") lines, $n ssh-brute-force decision(s)"

# 3. Signed publish from the device (qemu) to a TLS mosquitto, verified by the host collector.
dir="$(mktemp -d /tmp/picket-cross-smoke.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
cd "$dir"
mkdir -p data keys collect mq watch
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
ossl() { openssl "$@" >/dev/null 2>&1 || fail "openssl $*"; }
ossl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 2 -subj /CN=picket-cross-ca
leaf() {
  printf '%s\n' "$2" >"$1.ext"
  ossl req "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "/CN=$1"
  ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 -extfile "$1.ext"
}
leaf server $'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth'
leaf agent extendedKeyUsage=clientAuth
leaf collector extendedKeyUsage=clientAuth
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >mosquitto.conf <<EOF
user root
allow_anonymous true
persistence false
log_dest file $dir/mq/mosquitto.log
listener $port 127.0.0.1
cafile $dir/ca.crt
certfile $dir/server.crt
keyfile $dir/server.key
require_certificate true
EOF
mosquitto -c mosquitto.conf >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || fail "mosquitto did not listen on $port"

device=edge-aarch64
prefix=picket/v1/cross
cat >agent.toml <<EOF
[agent]
data_dir = "$dir/data"
device_id = "$device"
[policies]
paths = []
[sources.process]
enabled = false
[sources.file]
enabled = true
paths = ["$dir/watch"]
[sources.auth]
enabled = false
[uplink]
enabled = true
broker = "mqtts://127.0.0.1:$port"
ca_file = "$dir/ca.crt"
cert_file = "$dir/agent.crt"
key_file = "$dir/agent.key"
topic_prefix = "$prefix"
EOF
cat >collect.toml <<EOF
[collect]
broker = "mqtts://127.0.0.1:$port"
ca_file = "$dir/ca.crt"
cert_file = "$dir/collector.crt"
key_file = "$dir/collector.key"
topic_prefix = "$prefix"
device_keys_dir = "$dir/keys"
state_dir = "$dir/collect"
output = "$dir/collect/events.ndjson"
EOF
# Enrol: the device key is made by the aarch64 binary, the collector trusts its public half.
"${qa64[@]}" identity --config agent.toml --export >keys/device.pub || fail "identity --export under qemu"
"$host" collect --config collect.toml 2>collect.log &
cpid=$!
pids+=($cpid)
"${qa64[@]}" run --config agent.toml >agent.log 2>&1 &
pids+=($!)
sleep 2
echo "written under qemu" >watch/evidence.txt
events=0
for _ in $(seq 300); do
  events=$(grep -c "\"id\":\"$device\"" collect/events.ndjson 2>/dev/null || true)
  grep -q 'evidence.txt' collect/events.ndjson 2>/dev/null && break
  sleep 0.1
done
grep -q 'evidence.txt' collect/events.ndjson 2>/dev/null ||
  fail "the collector wrote no verified file event from $device in 30 s
--- agent log:
$(tail -20 agent.log)
--- collector log:
$(tail -20 collect.log)
--- mosquitto log:
$(tail -20 mq/mosquitto.log)"
kill -TERM "$cpid"
wait "$cpid" || true
stats="$(grep 'picket collect: stopped' collect.log || true)"
[ -n "$stats" ] || fail "collector printed no final stats: $(tail -5 collect.log)"
grep -q 'rejected {}' <<<"$stats" || fail "collector rejected batches: $stats"
ok "signed publish aarch64 -> mosquitto (TLS, client certs, port $port) -> host collector: $events verified events from $device; $stats"
cleanup
trap - EXIT
cd "$repo"

# 4. armv7: --version.
arm="$(build_one armv7-unknown-linux-musleabihf armv7-unknown-linux-gnueabihf)" || fail "armv7 build failed (above)"
if [ -n "$arm" ]; then
  v="$(qemu-arm-static -L /usr/arm-linux-gnueabihf "$arm" --version)"
  [ "$v" = "$want" ] || fail "armv7 --version printed '$v', want '$want'"
  ok "armv7 --version ($arm): $v"
else
  echo "*** SKIP: cross-test: no armv7 build (see the SKIP lines above)" >&2
fi
echo "cross-test: passed in $(($(date +%s) - t0)) s" >&2
