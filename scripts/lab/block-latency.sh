#!/usr/bin/env bash
# block-latency.sh — time from the 5th failed SSH login's syslog line to the attacker's address in
# nftables, for fail2ban, sshguard or picket, in the sshd lab (scripts/lab/sshd-lab.sh).
#
#   block-latency.sh DIR fail2ban|sshguard|picket [RUNS]      (RUNS default 5)
#   block-latency.sh DIR all [RUNS]                           the three, one after the other, one lab
#   block-latency.sh DIR fail2ban,picket [RUNS]               a list, one after the other, one lab
#
# Brings the lab up in DIR if it is not up (and then takes it down at the end); a lab that was up
# is left up. Per run:
#   1. `nft monitor` starts in the victim namespace, every line stamped on arrival with bash's
#      $EPOCHREALTIME (no fork per line; nft flushes each event);
#   2. the blocker starts in the victim namespace with fresh state, reading DIR/auth.log from its end:
#      fail2ban  fail2ban-server -xf with its own config dir (a copy of /etc/fail2ban without
#                jail.d/, plus fail2ban.local: socket, pid, db and log in DIR/bl/fail2ban; jail.local:
#                jail sshd on `DIR/auth.log tail`, maxretry 5, findtime 600, bantime 300,
#                banaction nftables-multiport, backend auto (pyinotify if installed, else polling));
#      sshguard  the real /usr/sbin/sshguard with its own config file bind-mounted over
#                /etc/sshguard/sshguard.conf in the lab's private mount namespace: BACKEND
#                sshg-fw-nft-sets, FILES=DIR/auth.log (sshg-logtail), THRESHOLD=50 (sshguard scores
#                10 per `Failed password` and 2 per preauth disconnect: 5 attempts on root = 58,
#                4 = 48), BLOCK_TIME 120, DETECTION_TIME 1800, whitelist loopback only;
#      picket    `picket run` (PICKET, default target/release/picket) with mode = "enforce", the
#                repo's policies/ and DIR/auth.log, other sources off, a fresh data dir;
#   3. `sshd-lab.sh attack DIR 5 root`: five wrong passwords for root, one connection each, one
#      after the other (PAM spaces them ~2 s apart);
#   4. the latency is the first monitor line that adds the attacker's address to a set (`add element
#      ... { A ... }`) minus the RFC 3339 µs timestamp rsyslogd gave the 5th `Failed password for root
#      from A` line of the run. That line is the 5th failure for all three: picket's ssh-brute-force
#      counts `Failed <method>` lines only; fail2ban's sshd filter counts `Failed password` (the
#      pam_unix and `Connection closed ... [preauth]` lines are no-fail helper matches for it); sshguard
#      reaches 50 on it (see above). For root there is no `Invalid user` line (which fail2ban and
#      sshguard would count as a failure of its own);
#   5. whether the attacker still reaches port 22 (`sshd-lab.sh probe`), then the blocker and the
#      monitor are stopped and the victim namespace's ruleset is flushed (it holds only the lab's).
# Footprint, per run, of every process in the blocker's session (the daemon, its helpers such as
# sshguard's sshg-* pipeline, and, through cutime/cstime, the commands it ran and waited for, such as
# fail2ban's `nft`): CPU from start to ready (startup), CPU from ready to the block seen in nft monitor
# (the attack window, ~10 s: idle time between attempts plus the detection), and the summed VmRSS
# at the end of that window (VmHWM: the highest of one process).
# Prints each run and min/median/max in ms, the footprint's medians, and one `TOOL: json {...}` line
# with all of it; the raw logs stay in DIR/bl/<tool>-<run>.*.
# Everything runs inside the lab's namespaces: the host's firewall is never touched. Needs root.
set -euo pipefail

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
REPO=$(readlink -f "$HERE/../..")
LAB=$HERE/sshd-lab.sh
PROG=${0##*/}

die() {
  echo "$PROG: $*" >&2
  exit 1
}
[ $# -ge 2 ] || die "usage: $PROG DIR fail2ban|sshguard|picket|all|TOOL,TOOL.. [RUNS]"
mkdir -p "$1"
DIR=$(readlink -f "$1")
TOOL=$2
RUNS=${3:-5}
TOOLS=${TOOL//,/ }
[ "$TOOL" = all ] && TOOLS="fail2ban sshguard picket"
for t in $TOOLS; do
  case "$t" in fail2ban | sshguard | picket) ;; *) die "unknown blocker '$t'" ;; esac
done
[ "$(id -u)" -eq 0 ] || die "needs root"

if [ "$TOOLS" != "$TOOL" ]; then
  # Several in one lab (same namespaces, same sshd and rsyslogd), one after the other.
  own=no
  if [ ! -f "$DIR/lab.env" ] || ! "$LAB" probe "$DIR" 2>/dev/null; then
    "$LAB" up "$DIR"
    own=yes
  fi
  trap '[ "$own" = yes ] && "$LAB" down "$DIR" >/dev/null' EXIT
  rc=0
  for t in $TOOLS; do
    "${BASH_SOURCE[0]}" "$DIR" "$t" "$RUNS" | tee "$DIR/block-latency-$t.txt" || rc=1
  done
  echo "--- summary"
  for t in $TOOLS; do
    grep -hE '^[a-z0-9]+: (log line -> nftables|footprint):' "$DIR/block-latency-$t.txt" || true
  done
  exit $rc
fi

OWN_LAB=no
if [ ! -f "$DIR/lab.env" ] || ! "$LAB" probe "$DIR" 2>/dev/null; then
  "$LAB" up "$DIR"
  OWN_LAB=yes
fi
# shellcheck disable=SC1091
. "$DIR/lab.env"
BL=$DIR/bl
RUNDIR=$DIR/run # pid files here are killed by `sshd-lab.sh down` too
mkdir -p "$BL" "$RUNDIR"

in_lab() { "$LAB" exec "$DIR" "$@"; }

# Start "$@" in its own session (so the whole group can be ended), pid into $RUNDIR/$1.pid.
start_bg() {
  local name=$1 out=$2
  shift 2
  setsid "$@" </dev/null >>"$out" 2>&1 &
  echo $! >"$RUNDIR/$name.pid"
}

stop_bg() {
  local name=$1 pid i
  [ -f "$RUNDIR/$name.pid" ] || return 0
  pid=$(cat "$RUNDIR/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.05
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$RUNDIR/$name.pid"
}

# "CPU-seconds RSS-KiB HWM-KiB" of the session SID: CPU (utime+stime+cutime+cstime) and VmRSS summed
# over its processes, VmHWM the highest of one.
session_usage() {
  local sid=$1 pid st
  for pid in $(ps -s "$sid" -o pid= 2>/dev/null); do
    st=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    printf '%s ' "$(printf '%s' "${st##*) }" | awk '{ print $12 + $13 + $14 + $15 }')"
    awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { print r + 0, h + 0 }' "/proc/$pid/status" 2>/dev/null ||
      echo "0 0"
  done | awk -v tck="$(getconf CLK_TCK)" '{ c += $1; r += $2; if ($3 > h) h = $3 }
    END { printf "%.2f %d %d\n", c / tck, r, h }'
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 20; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "$PROG: timed out after ${secs}s waiting for $what" >&2
  return 1
}

cleanup() {
  stop_bg blocker
  stop_bg nftmon
  in_lab nft flush ruleset 2>/dev/null || true
  [ "$OWN_LAB" = yes ] && "$LAB" down "$DIR" >/dev/null
  return 0
}
trap cleanup EXIT

# --- the blockers ----------------------------------------------------------------------------------

setup_fail2ban() {
  local f=$BL/fail2ban
  rm -rf "$f"
  mkdir -p "$f"
  cp -a /etc/fail2ban "$f/etc"
  # Debian's jail.d/defaults-debian.conf enables sshd with the systemd backend: not ours.
  rm -rf "$f/etc/jail.d" "$f/etc/fail2ban.d"
  mkdir -p "$f/etc/jail.d" "$f/etc/fail2ban.d"
  cat >"$f/etc/fail2ban.local" <<EOF
[Definition]
loglevel = INFO
logtarget = $f/fail2ban.log
socket = $f/fail2ban.sock
pidfile = $f/fail2ban.pid
dbfile = $f/fail2ban.sqlite3
EOF
  cat >"$f/etc/jail.local" <<EOF
[DEFAULT]
banaction = nftables-multiport
banaction_allports = nftables-allports
backend = auto
ignoreip = 127.0.0.1/8 ::1

[sshd]
enabled = true
backend = auto
port = 22
logpath = $DIR/auth.log tail
maxretry = 5
findtime = 600
bantime = 300
EOF
}

start_blocker() { # start_blocker RUN
  local out=$BL/$TOOL-$1.out
  case "$TOOL" in
    fail2ban)
      setup_fail2ban
      start_bg blocker "$out" "$LAB" exec "$DIR" fail2ban-server -xf -c "$BL/fail2ban/etc" start
      wait_for 30 "fail2ban's sshd jail" in_lab fail2ban-client -c "$BL/fail2ban/etc" status sshd
      ;;
    sshguard)
      printf '127.0.0.0/8\n::1/128\n' >"$BL/sshguard.whitelist"
      cat >"$BL/sshguard.conf" <<EOF
# picket lab (scripts/lab/block-latency.sh); bind-mounted over /etc/sshguard/sshguard.conf
BACKEND="/usr/libexec/sshguard/sshg-fw-nft-sets"
FILES="$DIR/auth.log"
THRESHOLD=50
BLOCK_TIME=120
DETECTION_TIME=1800
WHITELIST_FILE=$BL/sshguard.whitelist
EOF
      LAB_BIND="$BL/sshguard.conf=/etc/sshguard/sshguard.conf" \
        start_bg blocker "$out" "$LAB" exec "$DIR" /usr/sbin/sshguard
      wait_for 15 "sshguard's nft table" in_lab nft list set ip sshguard attackers
      sleep 0.5 # sshg-logtail's `tail -F -n 0` opens the file at about the same time
      ;;
    picket)
      local p=${PICKET:-}
      if [ -z "$p" ]; then
        for p in "${CARGO_TARGET_DIR:-$REPO/target}/release/picket" "$REPO/target/release/picket"; do
          [ -x "$p" ] && break
        done
      fi
      [ -x "$p" ] || die "no picket binary (build with cargo build --release -p picket, or set PICKET)"
      rm -rf "$BL/picket"
      mkdir -p "$BL/picket"
      cat >"$BL/picket/picket.toml" <<EOF
[agent]
data_dir = "$BL/picket/data"
mode = "enforce"
[policies]
paths = ["$REPO/policies"]
[sources.process]
enabled = false
[sources.file]
enabled = false
[sources.network]
enabled = false
[sources.auth]
enabled = true
files = ["$DIR/auth.log"]
EOF
      start_bg blocker "$out" "$LAB" exec "$DIR" "$p" run --config "$BL/picket/picket.toml"
      wait_for 20 "picket's auth source" grep -q "source auth: running" "$out"
      ;;
  esac
}

stop_blocker() {
  if [ "$TOOL" = fail2ban ]; then
    in_lab fail2ban-client -c "$BL/fail2ban/etc" stop >/dev/null 2>&1 || true
  fi
  stop_bg blocker
}

# --- runs ---------------------------------------------------------------------------------------

epoch_of() { date -d "$1" +%s.%6N; } # RFC 3339 -> seconds.micro

results=()
usage=() # per run: "startup-CPU-s window-CPU-s window-s RSS-KiB HWM-KiB"
for ((run = 1; run <= RUNS; run++)); do
  mon=$BL/$TOOL-$run.nft
  : >"$mon"
  in_lab nft flush ruleset
  # shellcheck disable=SC2016
  start_bg nftmon "$mon" "$LAB" exec "$DIR" bash -c \
    'nft monitor | while IFS= read -r l; do printf "%s %s\n" "$EPOCHREALTIME" "$l"; done'
  sleep 0.3
  t_start=$EPOCHREALTIME
  start_blocker "$run"
  sid=$(cat "$RUNDIR/blocker.pid")
  read -r cpu_ready _ _ < <(session_usage "$sid")
  t_ready=$EPOCHREALTIME
  "$LAB" probe "$DIR" || die "run $run: the attacker cannot reach sshd before the attack"

  from=$(($(wc -l <"$DIR/auth.log") + 1))
  "$LAB" attack "$DIR" 5 root >/dev/null
  fifth=$(tail -n +"$from" "$DIR/auth.log" |
    grep -E "sshd\[[0-9]+\]: Failed password for root from $ATTACKER_IP port " | sed -n 5p)
  [ -n "$fifth" ] || die "run $run: no 5th failure line"
  t5=$(epoch_of "${fifth%% *}")

  pat="add element .*[{ ,]$(printf '%s' "$ATTACKER_IP" | sed 's/\./\\./g')([/ ,}]|$)"
  if wait_for 15 "the block of $ATTACKER_IP in nft monitor" grep -qE "$pat" "$mon"; then
    read -r cpu_end rss hwm < <(session_usage "$sid")
    t_end=$EPOCHREALTIME
    usage+=("$cpu_ready $(awk -v a="$cpu_ready" -v b="$cpu_end" 'BEGIN { printf "%.2f", b - a }') \
$(awk -v a="$t_ready" -v b="$t_end" 'BEGIN { printf "%.2f", b - a }') $rss $hwm")
    tb=$(grep -E "$pat" "$mon" | head -n1 | cut -d' ' -f1)
    ms=$(awk -v a="$t5" -v b="$tb" 'BEGIN { printf "%.2f", (b - a) * 1000 }')
    if "$LAB" probe "$DIR"; then refused="NO, still reachable"; else refused=yes; fi
    echo "$TOOL run $run: 5th failure ${fifth:11:15}, in nftables +$ms ms; attacker blocked: $refused"
    echo "  $(grep -E "$pat" "$mon" | head -n1 | cut -d' ' -f2-)"
    read -r _ wcpu wsecs rss hwm <<<"${usage[-1]}"
    echo "  footprint: startup CPU $cpu_ready s in $(awk -v a="$t_start" -v b="$t_ready" 'BEGIN { printf "%.1f", b - a }') s; \
then $wcpu s CPU in $wsecs s to the block; RSS $((rss / 1024)) MiB, VmHWM $((hwm / 1024)) MiB"
    results+=("$ms")
  else
    echo "$TOOL run $run: 5th failure ${fifth:11:15}, NO block of $ATTACKER_IP within 15 s (see $mon, $BL/$TOOL-$run.out)"
    if [ "$TOOL" = picket ]; then grep -m1 'ALERT' "$BL/$TOOL-$run.out" | sed 's/^/  picket: /' || true; fi
    failed=yes
  fi
  stop_blocker
  stop_bg nftmon
  in_lab nft flush ruleset
  if [ "${failed:-no}" = yes ]; then
    echo "$TOOL: run $run did not block; not repeating"
    break
  fi
done

if [ ${#results[@]} -gt 0 ]; then
  printf '%s\n' "${results[@]}" | sort -g | awk -v tool="$TOOL" -v runs="$RUNS" '
    { v[NR] = $1 }
    END {
      med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%s: log line -> nftables, %d of %d runs blocked: min %.2f ms, median %.2f ms, max %.2f ms\n", tool, NR, runs, v[1], med, v[NR]
    }'
  # Medians of the footprint; and all of it as one JSON line for scripts/bench/load.py.
  printf '%s\n' "${usage[@]}" | awk -v tool="$TOOL" -v runs="$RUNS" -v lat="${results[*]}" '
    function median(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { s[NR] = $1; c[NR] = $2; w[NR] = $3; p[NR] = 100 * $2 / $3; r[NR] = $4; h[NR] = $5 }
    END {
      n = split(lat, l, " ")
      ms = median(s, NR); mc = median(c, NR); mw = median(w, NR); mp = median(p, NR); mr = median(r, NR); mh = median(h, NR)
      printf "%s: footprint: startup CPU %.2f s; attack window %.1f s: CPU %.2f s = %.1f %% of one core; RSS %.1f MiB (VmHWM %.1f MiB); medians of %d runs\n", tool, ms, mw, mc, mp, mr / 1024, mh / 1024, NR
      printf "%s: json {\"runs\": %d, \"blocked\": %d, \"latency_ms\": [", tool, runs, n
      for (i = 1; i <= n; i++) printf "%s%s", (i > 1 ? ", " : ""), l[i]
      printf "], \"startup_cpu_s\": %.2f, \"window_s\": %.2f, \"window_cpu_s\": %.2f, \"window_cpu_pct\": %.2f, \"rss_mib\": %.2f, \"hwm_mib\": %.2f}\n", ms, mw, mc, mp, mr / 1024, mh / 1024
    }'
else
  echo "$TOOL: log line -> nftables: no run blocked the attacker"
fi
[ ${#results[@]} -eq "$RUNS" ]
