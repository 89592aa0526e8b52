#!/usr/bin/env bash
# Live-capture drop rate at increasing packet rates: what the network source receives and what
# the kernel drops (libpcap ps_recv / ps_drop / ps_ifdrop, as `picket status` shows them), and the
# capture's CPU, while iperf3 sends small UDP packets between two network namespaces this script
# creates (veth pair, 10.80.0.0/24). The capture (examples/live_drop.rs: the agent's own
# run_blocking, default settings but the ring size) runs in namespace a on its veth end. At each
# rate tcpdump (same libpcap, same ring size and snaplen, writing to /dev/null) is measured too,
# as the peer.
#
#   agent/netcap/bench/live-drop.sh [SECONDS_PER_RATE] [RATES...]
#       defaults: 5 s; 10000 50000 100000 200000 400000 max   (packets per second; max: iperf3 -b 0)
#   env: PAYLOAD (UDP payload bytes, 64), BUFFER (ring bytes, 4194304 = the default
#        sources.network.buffer_bytes), SCAN=N: then also N rounds of an nmap SYN scan of all
#        65535 ports of a (a flood of new local flows, the worst case for process attribution),
#        captured with attribution on, off, and by tcpdump
#
# Needs root, ip, iperf3, tcpdump, and nmap for SCAN (scripts/test-deps.sh). Not part of `make test`: a benchmark.
# Everything it made (namespaces, processes) is removed on exit. Traffic stays inside the two
# namespaces.
set -euo pipefail
cd "$(dirname "$0")/../../.."
SECS=${1:-5}
shift || true
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(10000 50000 100000 200000 400000 max)
PAYLOAD=${PAYLOAD:-64}
BUFFER=${BUFFER:-4194304}
T=${CARGO_TARGET_DIR:-target}
[ "$(id -u)" -eq 0 ] || { echo "live-drop: needs root (namespaces, capture)" >&2; exit 1; }
for t in ip iperf3 tcpdump; do
  command -v $t >/dev/null || { echo "live-drop: needs $t (scripts/test-deps.sh)" >&2; exit 1; }
done
cargo build -q --release -p picket-netcap --example live_drop
BIN=$T/release/examples/live_drop

A=pkt-dropa-$$
B=pkt-dropb-$$
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip -n "$A" link add va type veth peer name vb netns "$B"
ip -n "$A" addr add 10.80.0.1/24 dev va
ip -n "$B" addr add 10.80.0.2/24 dev vb
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set va up
ip -n "$B" link set vb up
ip netns exec "$A" iperf3 -s -B 10.80.0.1 >/dev/null 2>&1 &
PIDS+=($!)
sleep 0.5

# send RATE: iperf3 from b for SECS; prints "packets seconds" it sent.
send() {
  local bw=0
  [ "$1" = max ] || bw=$(($1 * PAYLOAD * 8))
  ip netns exec "$B" iperf3 -u -c 10.80.0.1 -l "$PAYLOAD" -b "$bw" -t "$SECS" -J >"$DIR/iperf.json" 2>&1 || true
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["end"]["sum"]; print(s["packets"], s["seconds"])' \
    "$DIR/iperf.json" 2>/dev/null || echo "0 1"
}

echo "machine: $(nproc) cores, $(uname -r); $(iperf3 --version | head -1); $(tcpdump --version 2>&1 | head -1)"
echo "capture: examples/live_drop (release), interface va, ring $BUFFER bytes, snaplen 1600, process attribution on"
echo "traffic: iperf3 UDP, $PAYLOAD-byte payload ($((PAYLOAD + 28))-byte IP packets), ${SECS} s per rate, b -> a over a veth pair"
echo "counts cover the whole capture window (${SECS} s of traffic + ~2 s idle), iperf3's control connection included"
echo
echo "| target pkt/s | sent pkt/s | picket ps_recv | picket ps_drop | ps_ifdrop | picket drop % | picket CPU s | picket ns/pkt | tcpdump recv | tcpdump drop | tcpdump drop % |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for rate in "${RATES[@]}"; do
  ip netns exec "$A" "$BIN" va $((SECS + 2)) "$BUFFER" >"$DIR/cap" 2>"$DIR/cap.err" &
  cap=$!
  PIDS+=("$cap")
  for _ in $(seq 100); do grep -q READY "$DIR/cap" 2>/dev/null && break; sleep 0.1; done
  sent=$(send "$rate")
  wait "$cap" || { cat "$DIR/cap.err" >&2; exit 1; }
  line=$(grep '^recv=' "$DIR/cap")
  get() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$line"; }

  ip netns exec "$A" tcpdump -i va -n -s 1600 -B $((BUFFER / 1024)) -w /dev/null 2>"$DIR/td.err" &
  td=$!
  PIDS+=("$td")
  for _ in $(seq 100); do grep -q "listening on" "$DIR/td.err" 2>/dev/null && break; sleep 0.1; done
  send "$rate" >/dev/null
  sleep 1
  kill -INT "$td"; wait "$td" || true
  td_recv=$(sed -n 's/^\([0-9]*\) packets received by filter.*/\1/p' "$DIR/td.err")
  td_drop=$(sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p' "$DIR/td.err")

  awk -v r="$rate" -v sent="$sent" -v recv="$(get recv)" -v kd="$(get kernel_drop)" -v ifd="$(get if_drop)" \
      -v cpu="$(get cpu_secs)" -v tr="${td_recv:-0}" -v tdd="${td_drop:-0}" 'BEGIN{
    split(sent, s, " "); pps = s[2] > 0 ? s[1] / s[2] : 0;
    pct = recv > 0 ? 100 * (kd + ifd) / recv : 0;
    ns = recv - kd > 0 ? cpu * 1e9 / (recv - kd) : 0;
    tpct = tr > 0 ? 100 * tdd / tr : 0;
    printf "| %s | %.0f | %d | %d | %d | %.2f | %.2f | %.0f | %d | %d | %.2f |\n", r, pps, recv, kd, ifd, pct, cpu, ns, tr, tdd, tpct }'
done

[ "${SCAN:-0}" -gt 0 ] || exit 0
ip netns exec "$A" python3 -m http.server 8080 --bind 10.80.0.1 >/dev/null 2>&1 &
PIDS+=($!)
sleep 0.5
echo
echo "nmap -sS -p 1-65535 --min-rate 20000 from b against a (one port open), captured in a:"
echo
echo "| round | capture | scan s | ps_recv | ps_drop | events out | attributed / gone / late / not looked up | CPU s |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq "$SCAN"); do
  for mode in on off tcpdump; do
    if [ "$mode" = tcpdump ]; then
      ip netns exec "$A" tcpdump -i va -n -s 1600 -B $((BUFFER / 1024)) -w /dev/null 2>"$DIR/td.err" &
      c=$!
      for _ in $(seq 100); do grep -q "listening on" "$DIR/td.err" 2>/dev/null && break; sleep 0.1; done
    else
      if [ "$mode" = on ]; then unset NO_ATTRIBUTION; else export NO_ATTRIBUTION=1; fi
      ip netns exec "$A" "$BIN" va 6 "$BUFFER" >"$DIR/cap" 2>"$DIR/cap.err" &
      c=$!
      for _ in $(seq 100); do grep -q READY "$DIR/cap" 2>/dev/null && break; sleep 0.1; done
    fi
    PIDS+=("$c")
    secs=$(ip netns exec "$B" nmap -n -sS -p 1-65535 --min-rate 20000 10.80.0.1 2>&1 | sed -n 's/.*scanned in \([0-9.]*\) seconds.*/\1/p')
    if [ "$mode" = tcpdump ]; then
      sleep 1; kill -INT "$c"; wait "$c" || true
      r=$(sed -n 's/^\([0-9]*\) packets received by filter.*/\1/p' "$DIR/td.err")
      d=$(sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p' "$DIR/td.err")
      echo "| $round | tcpdump | $secs | $r | $d | - | - | - |"
    else
      wait "$c"
      line=$(grep '^recv=' "$DIR/cap")
      get() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$line"; }
      st=$(sed -n 's/^status: //p' "$DIR/cap.err")
      attr=$(sed -n 's/.*processes: \([0-9]*\) attributed, [0-9]* not found, \([0-9]*\) gone, \([0-9]*\) late\(, \([0-9]*\) not looked up\)\{0,1\}.*/\1 \/ \2 \/ \3 \/ \5/p' <<<"$st")
      echo "| $round | picket, attribution $mode | $secs | $(get recv) | $(get kernel_drop) | $(get events) | ${attr:--} | $(get cpu_secs) |"
    fi
  done
done
unset NO_ATTRIBUTION
