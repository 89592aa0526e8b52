#!/usr/bin/env bash
# block-latency.sh — time from the 5th failed SSH login's syslog line to the attacker's address in
# nftables, for fail2ban, sshguard or picket, in the sshd lab (scripts/lab/sshd-lab.sh).
#
#   block-latency.sh DIR fail2ban|sshguard|picket [RUNS]      (RUNS default 5)
#   block-latency.sh DIR all [RUNS]                           the three, one after the other, one lab
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
# Prints each run and min/median/max in ms; the raw logs stay in DIR/bl/<tool>-<run>.*.
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
[ $# -ge 2 ] || die "usage: $PROG DIR fail2ban|sshguard|picket|all [RUNS]"
mkdir -p "$1"
DIR=$(readlink -f "$1")
TOOL=$2
RUNS=${3:-5}
case "$TOOL" in fail2ban | sshguard | picket | all) ;; *) die "unknown blocker '$TOOL'" ;; esac
[ "$(id -u)" -eq 0 ] || die "needs root"

if [ "$TOOL" = all ]; then
  # All three in one lab (same namespaces, same sshd and rsyslogd), one after the other.
  own=no
  if [ ! -f "$DIR/lab.env" ] || ! "$LAB" probe "$DIR" 2>/dev/null; then
    "$LAB" up "$DIR"
    own=yes
  fi
  trap '[ "$own" = yes ] && "$LAB" down "$DIR" >/dev/null' EXIT
  rc=0
  for t in fail2ban sshguard picket; do
    "${BASH_SOURCE[0]}" "$DIR" "$t" "$RUNS" | tee "$DIR/block-latency-$t.txt" || rc=1
  done
  echo "--- summary"
  grep -h 'log line -> nftables' "$DIR"/block-latency-*.txt || true
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
for ((run = 1; run <= RUNS; run++)); do
  mon=$BL/$TOOL-$run.nft
  : >"$mon"
  in_lab nft flush ruleset
  # shellcheck disable=SC2016
  start_bg nftmon "$mon" "$LAB" exec "$DIR" bash -c \
    'nft monitor | while IFS= read -r l; do printf "%s %s\n" "$EPOCHREALTIME" "$l"; done'
  sleep 0.3
  start_blocker "$run"
  "$LAB" probe "$DIR" || die "run $run: the attacker cannot reach sshd before the attack"

  from=$(($(wc -l <"$DIR/auth.log") + 1))
  "$LAB" attack "$DIR" 5 root >/dev/null
  fifth=$(tail -n +"$from" "$DIR/auth.log" |
    grep -E "sshd\[[0-9]+\]: Failed password for root from $ATTACKER_IP port " | sed -n 5p)
  [ -n "$fifth" ] || die "run $run: no 5th failure line"
  t5=$(epoch_of "${fifth%% *}")

  pat="add element .*[{ ,]$(printf '%s' "$ATTACKER_IP" | sed 's/\./\\./g')([/ ,}]|$)"
  if wait_for 15 "the block of $ATTACKER_IP in nft monitor" grep -qE "$pat" "$mon"; then
    tb=$(grep -E "$pat" "$mon" | head -n1 | cut -d' ' -f1)
    ms=$(awk -v a="$t5" -v b="$tb" 'BEGIN { printf "%.2f", (b - a) * 1000 }')
    if "$LAB" probe "$DIR"; then refused="NO, still reachable"; else refused=yes; fi
    echo "$TOOL run $run: 5th failure ${fifth:11:15}, in nftables +$ms ms; attacker blocked: $refused"
    echo "  $(grep -E "$pat" "$mon" | head -n1 | cut -d' ' -f2-)"
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
else
  echo "$TOOL: log line -> nftables: no run blocked the attacker"
fi
[ ${#results[@]} -eq "$RUNS" ]
