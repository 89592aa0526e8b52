#!/usr/bin/env bash
# pcap replay decode rate, picket against tshark, on the same file in the same run.
#
#   agent/netcap/bench/replay-vs-tshark.sh [PACKETS]        (default 500000)
#
# The file is synthetic but shaped like real traffic (agent/netcap/benches/support/synth.rs): Ethernet,
# ~1,000 interleaved TCP connections (handshake, data both ways, FIN), 18 % DNS query/answer pairs,
# 2 % ICMP. Each command runs three times after a page-cache warm-up; the best time counts.
# Needs tshark and GNU time (scripts/test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/../../.."
N=${1:-500000}
T=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p picket-netcap --example mkpcap --example decode_rate
cargo build -q --release -p picket
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
F=$DIR/bench.pcap
"$T/release/examples/mkpcap" "$F" "$N"
cat "$F" >/dev/null

best() { # best wall time of three runs, stdout discarded
  local b=""
  for _ in 1 2 3; do
    /usr/bin/time -f %e -o "$DIR/t" "$@" >/dev/null 2>"$DIR/err" || { cat "$DIR/err" >&2; return 1; }
    local t; t=$(cat "$DIR/t")
    if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
  done
  echo "$b"
}
row() { # name seconds
  awk -v n="$N" -v s="$2" -v name="$1" 'BEGIN{ if (s <= 0) s = 0.01; printf "| %-62s | %7.2f s | %10.0f |\n", name, s, n / s }'
}

echo "machine: $(nproc) cores, $(uname -r); tshark: $(tshark --version 2>/dev/null | head -1)"
echo "file: $N packets, $(du -m "$F" | cut -f1) MB, $(capinfos -T -r -E "$F" 2>/dev/null | cut -f2 || echo pcap)"
echo
echo "| command | time | packets/s |"
echo "|---|---|---|"
ts1=$(best tshark -n -r "$F");                                  row '`tshark -n -r FILE` (one summary line per packet)' "$ts1"
ts2=$(best tshark -n -r "$F" -q -z conv,tcp);                   row '`tshark -n -r FILE -q -z conv,tcp` (TCP conversations)' "$ts2"
p1=$(best "$T/release/examples/decode_rate" "$F");              row 'picket-netcap decode_rate FILE (flows + DNS into events)' "$p1"
p2=$(best "$T/release/picket" replay --format pcap --policies policies --emit events,decisions "$F")
row '`picket replay --format pcap --policies policies FILE` (+ JSON)' "$p2"
echo
awk -v a="$ts1" -v b="$p1" -v c="$p2" -v d="$ts2" 'BEGIN{
  printf "decoder vs tshark -r: %.1fx; vs tshark -q -z conv,tcp: %.1fx\n", a / b, d / b;
  printf "picket replay (JSON out) vs tshark -r: %.1fx; vs tshark -q -z conv,tcp: %.1fx\n", a / c, d / c }'
