#!/usr/bin/env bash
# auth-replay.sh — auth-log parse (+ decide) throughput: picket vs sshguard's parser vs fail2ban-regex,
# on the same file, in the same run.
#
#   scripts/bench/auth-replay.sh [FILE]
#
# FILE defaults to $BENCH_DIR/auth-1m.log (BENCH_DIR default /tmp/picket-bench), generated with
# scripts/bench/gen-auth-log.py (1,000,000 lines, RSYSLOG_FileFormat, seed 1) when missing.
# The commands run in RUNS rounds (default 5), one after the other in each round, so a change in
# the machine's load hits all of them alike; for each the median and best wall time and CPU time
# (user+sys) are reported with lines/s. On a busy machine CPU time is the steadier figure.
#
#   picket (events,decisions)  picket replay --format auth-log --policies POLICIES FILE > /dev/null
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
# it with `cargo build --release -p picket`). PICKET_BEFORE: a second picket binary (e.g. built
# from the previous commit) measured in the same rounds as "before". POLICIES: the policy directory
# (default the repository's policies/). Needs GNU time (/usr/bin/time).
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
REPO=$(readlink -f "$HERE/../..")
RUNS=${RUNS:-5}
POLICIES=${POLICIES:-$REPO/policies}
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

# Commands: NAME, LINES, CMD (run through sh -c).
NAMES=()
NLINES=()
CMDS=()
add() { NAMES+=("$1"); NLINES+=("$2"); CMDS+=("$3"); }

TIMES=$(mktemp -d)
trap 'rm -rf "$TIMES"' EXIT
cd "$REPO"
q=$(printf '%q' "$FILE")
pq=$(printf '%q' "$POLICIES")
pickets=("$PICKET")
labels=("picket")
if [ -n "${PICKET_BEFORE:-}" ]; then
  pickets=("$PICKET_BEFORE" "$PICKET")
  labels=("picket before" "picket after")
fi
for i in "${!pickets[@]}"; do
  p=$(printf '%q' "${pickets[$i]}")
  add "${labels[$i]} (events,decisions)" "$LINES" "$p replay --format auth-log --policies $pq $q >/dev/null"
  add "${labels[$i]} (decisions)" "$LINES" "$p replay --format auth-log --policies $pq --emit decisions $q >/dev/null"
done
add "sshg-parser" "$LINES" "/usr/libexec/sshguard/sshg-parser <$q >/dev/null"
F2B_FILE=$FILE
F2B_N=$LINES
if [ -n "${F2B_LINES:-}" ] && [ "$F2B_LINES" -lt "$LINES" ]; then
  F2B_FILE=$BENCH_DIR/f2b-$F2B_LINES.log
  head -n "$F2B_LINES" "$FILE" >"$F2B_FILE"
  F2B_N=$F2B_LINES
fi
add "fail2ban-regex" "$F2B_N" "fail2ban-regex $(printf '%q' "$F2B_FILE") /etc/fail2ban/filter.d/sshd.conf >/dev/null"

for ((r = 1; r <= RUNS; r++)); do
  for i in "${!CMDS[@]}"; do
    /usr/bin/time -o "$TIMES/t" -f '%e %U %S' sh -c "${CMDS[$i]}" 2>/dev/null
    tail -n1 "$TIMES/t" | awk '{ printf "%s %.2f\n", $1, $2 + $3 }' >>"$TIMES/$i"
  done
  echo "round $r of $RUNS done (load $(cut -d' ' -f1 /proc/loadavg))"
done

# One line per command: median and best, wall and CPU, as seconds and lines/s.
for i in "${!CMDS[@]}"; do
  sort -n -k1,1 "$TIMES/$i" | awk '{ print $1 }' >"$TIMES/w"
  sort -n -k2,2 "$TIMES/$i" | awk '{ print $2 }' >"$TIMES/c"
  awk -v n="${NAMES[$i]}" -v l="${NLINES[$i]}" -v runs="$RUNS" '
    NR == FNR { w[FNR] = $1; next } { c[FNR] = $1 }
    END {
      m = int((runs + 1) / 2)
      mw = (runs % 2) ? w[m] : (w[m] + w[m + 1]) / 2
      mc = (runs % 2) ? c[m] : (c[m] + c[m + 1]) / 2
      printf "%-34s %8d lines  median wall %6.2f s = %8.0f/s  cpu %6.2f s = %8.0f/s   best wall %8.0f/s  cpu %8.0f/s\n",
        n, l, mw, l / mw, mc, l / mc, l / w[1], l / c[1] }' "$TIMES/w" "$TIMES/c"
done

# What each found, once (not timed).
echo "--- what each found"
"$PICKET" replay --format auth-log --policies "$POLICIES" --emit decisions "$FILE" 2>&1 >/dev/null | tail -n1
echo "picket decisions: $("$PICKET" replay --format auth-log --policies "$POLICIES" --emit decisions "$FILE" 2>/dev/null | wc -l)"
if [ -n "${PICKET_BEFORE:-}" ]; then
  a=$("$PICKET_BEFORE" replay --format auth-log --policies "$POLICIES" "$FILE" 2>/dev/null | sha256sum)
  b=$("$PICKET" replay --format auth-log --policies "$POLICIES" "$FILE" 2>/dev/null | sha256sum)
  if [ "$a" = "$b" ]; then echo "before and after: identical events and decisions"; else echo "before and after DIFFER"; fi
fi
echo "sshg-parser attacks: $(/usr/libexec/sshguard/sshg-parser <"$FILE" | wc -l)"
fail2ban-regex "$F2B_FILE" /etc/fail2ban/filter.d/sshd.conf 2>/dev/null | grep -E '^Lines:' | sed 's/^/fail2ban-regex /'
