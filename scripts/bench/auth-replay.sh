#!/usr/bin/env bash
# auth-replay.sh — auth-log parse (+ decide) throughput: picket vs sshguard's parser vs fail2ban-regex,
# on the same file, in the same run.
#
#   scripts/bench/auth-replay.sh [FILE]
#
# FILE defaults to $BENCH_DIR/auth-1m.log (BENCH_DIR default /tmp/picket-bench), generated with
# scripts/bench/gen-auth-log.py (1,000,000 lines, RSYSLOG_FileFormat, seed 1) when missing.
# Each command runs RUNS times (default 3); the best wall time and the best CPU time (user+sys) are
# reported with lines/s for each. On a busy machine CPU time is the steadier figure.
#
#   picket (events,decisions)  picket replay --format auth-log --policies policies FILE > /dev/null
#                              every line parsed, every event through the policy engine, every
#                              event and decision printed as NDJSON (the default --emit)
#   picket (decisions)         the same with --emit decisions: parse + decide, only decisions printed
#   sshg-parser                /usr/libexec/sshguard/sshg-parser < FILE > /dev/null
#                              parse only (one line per attack; the blocker decides, not measured)
#   fail2ban-regex             fail2ban-regex FILE /etc/fail2ban/filter.d/sshd.conf > /dev/null
#                              parse + match with the stock sshd filter (no ban decisions);
#                              F2B_LINES=N runs it on the first N lines only (it is ~50x slower)
#
# PICKET: the binary (default $CARGO_TARGET_DIR/release/picket, else target/release/picket; build
# it with `cargo build --release -p picket`). Needs GNU time (/usr/bin/time).
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
REPO=$(readlink -f "$HERE/../..")
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/picket-bench}
FILE=${1:-$BENCH_DIR/auth-1m.log}

if [ ! -f "$FILE" ]; then
  mkdir -p "$(dirname "$FILE")"
  echo "generating $FILE ..."
  python3 "$HERE/gen-auth-log.py" --lines 1000000 --seed 1 "$FILE"
fi
PICKET=${PICKET:-}
if [ -z "$PICKET" ]; then
  for PICKET in "${CARGO_TARGET_DIR:-$REPO/target}/release/picket" "$REPO/target/release/picket"; do
    [ -x "$PICKET" ] && break
  done
fi
[ -x "$PICKET" ] || { echo "no picket release binary; cargo build --release -p picket, or set PICKET" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time, Debian package time)" >&2; exit 1; }

LINES=$(wc -l <"$FILE")
echo "file: $FILE ($LINES lines, $(du -h "$FILE" | cut -f1)); runs: $RUNS; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "picket: $PICKET"

# bench NAME LINES CMD... (stdin/stdout of CMD as given by the caller through sh -c)
bench() {
  local name=$1 lines=$2 cmd=$3 i t best_wall="" best_cpu="" wall cpu
  for ((i = 1; i <= RUNS; i++)); do
    /usr/bin/time -o "$TIMES" -f '%e %U %S' sh -c "$cmd" 2>/dev/null
    t=$(tail -n1 "$TIMES")
    wall=$(echo "$t" | awk '{ print $1 }')
    cpu=$(echo "$t" | awk '{ printf "%.2f", $2 + $3 }')
    best_wall=$(awk -v a="$wall" -v b="${best_wall:-1e99}" 'BEGIN { print (a < b) ? a : b }')
    best_cpu=$(awk -v a="$cpu" -v b="${best_cpu:-1e99}" 'BEGIN { print (a < b) ? a : b }')
  done
  awk -v n="$name" -v l="$lines" -v w="$best_wall" -v c="$best_cpu" 'BEGIN {
    printf "%-28s %9d lines  best wall %7.2f s = %9.0f lines/s   best cpu %7.2f s = %9.0f lines/s\n",
      n, l, w, l / w, c, l / c }'
}

TIMES=$(mktemp)
trap 'rm -f "$TIMES"' EXIT
cd "$REPO"
q=$(printf '%q' "$FILE")
bench "picket (events,decisions)" "$LINES" "$(printf '%q' "$PICKET") replay --format auth-log --policies policies $q >/dev/null"
bench "picket (decisions)" "$LINES" "$(printf '%q' "$PICKET") replay --format auth-log --policies policies --emit decisions $q >/dev/null"
bench "sshg-parser" "$LINES" "/usr/libexec/sshguard/sshg-parser <$q >/dev/null"
F2B_FILE=$FILE
F2B_N=$LINES
if [ -n "${F2B_LINES:-}" ] && [ "$F2B_LINES" -lt "$LINES" ]; then
  F2B_FILE=$BENCH_DIR/f2b-$F2B_LINES.log
  head -n "$F2B_LINES" "$FILE" >"$F2B_FILE"
  F2B_N=$F2B_LINES
fi
bench "fail2ban-regex" "$F2B_N" "fail2ban-regex $(printf '%q' "$F2B_FILE") /etc/fail2ban/filter.d/sshd.conf >/dev/null"

# What each found, once (not timed).
echo "--- what each found"
"$PICKET" replay --format auth-log --policies policies --emit decisions "$FILE" 2>&1 >/dev/null | tail -n1
echo "picket decisions: $("$PICKET" replay --format auth-log --policies policies --emit decisions "$FILE" 2>/dev/null | wc -l)"
echo "sshg-parser attacks: $(/usr/libexec/sshguard/sshg-parser <"$FILE" | wc -l)"
fail2ban-regex "$F2B_FILE" /etc/fail2ban/filter.d/sshd.conf 2>/dev/null | grep -E '^Lines:' | sed 's/^/fail2ban-regex /'
