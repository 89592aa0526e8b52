#!/usr/bin/env bash
# sshd-lab.sh — a real OpenSSH server logging through a real rsyslogd, attacked from a second
# network namespace. Used by agent/picket/tests/lab.rs and scripts/lab/block-latency.sh.
#
#   sshd-lab.sh up DIR                 create the lab; state, logs and config all live in DIR
#   sshd-lab.sh down DIR               stop what `up` (and `exec`) started, delete the namespaces;
#                                      idempotent, safe after a half-failed `up`
#   sshd-lab.sh attack DIR N [USER]    N failed password logins (default user root) from the attacker,
#                                      each waited for until its `Failed password` line is in auth.log
#                                      (LAB_PARALLEL=1: all N connections at once, then wait for N lines)
#   sshd-lab.sh login DIR              one successful publickey login as root from the attacker
#   sshd-lab.sh probe DIR              exit 0 if the attacker can open a TCP connection to sshd, 1 if not
#   sshd-lab.sh exec DIR CMD...        run CMD in the victim namespace, in the lab's private /dev and /run
#   sshd-lab.sh attacker DIR CMD...    run CMD in the attacker namespace
#
# Layout: two network namespaces, pkv-<id> (victim) and pka-<id> (attacker), <id> = 8 hex digits of
# a hash of DIR, joined by a veth pair created directly inside them (no interface ever appears on
# the host): victim 10.253.X.1/24 and 2001:db8:253:X::1/64, attacker .2 / ::2, X from the same hash.
# Nothing is routed to or from the host, so the addresses cannot clash with anything on it.
# DIR/lab.env holds the names and addresses (shell syntax, KEY=value).
#
# Logging without touching the host's /dev/log: sshd logs with syslog(3), i.e. to the fixed path
# /dev/log, which is shared with the host (a network namespace does not separate file systems, and
# the host may have its own syslog daemon there, or no /dev/log at all). So:
#   * rsyslogd (own config DIR/rsyslog.conf, own pid file and work dir) listens on DIR/devlog, not on
#     /dev/log, and writes auth,authpriv.* to DIR/auth.log in RSYSLOG_FileFormat (RFC 3339 with
#     microseconds and the UTC offset) — the lines picket, fail2ban and sshguard read;
#   * sshd, and everything started with `exec`, runs in `ip netns exec <victim> unshare --mount
#     --propagation private`: a private mount namespace in which /dev is a fresh tmpfs holding bind
#     mounts of the host's usual /dev entries (null, zero, urandom, tty, ptmx, pts, shm, fd, ...)
#     plus a `log` entry bind-mounted from DIR/devlog, and /run is an empty tmpfs (sshd's
#     privilege-separation dir /run/sshd is made there; PAM session modules write there, not to the
#     host's /run). None of these mounts propagates to the host. `exec` also bind-mounts the files
#     named in LAB_BIND="SRC=DST ..." (block-latency.sh gives sshguard its own config that way).
#   * rsyslogd routes the lines of sshguard (`sshg*` tags, facility auth) to DIR/blockers.log, so a
#     blocker's own messages never feed the auth.log the blockers read; other facilities go to
#     DIR/other.log.
# The host's /dev, /run, firewall, interfaces and syslog are never changed. Processes are killed only
# by the pid files in DIR, and only when they live in the lab's namespaces; `down` then kills what is
# left inside the two namespaces (everything in them was started by the lab) and deletes them.
#
# sshd: own sshd_config, ed25519 host key generated into DIR, own pid file, port 22 on the victim
# addresses, PasswordAuthentication yes, UsePAM yes (Debian's default; set LAB_USEPAM=no for a
# faster lab: PAM's ~2 s fail delay is what spaces the attempts), PermitRootLogin prohibit-password
# (so a root password guess can never succeed), AuthorizedKeysFile DIR/authorized_keys (for `login`).
# Per failed attempt on an existing user with PAM, auth.log gets: `pam_unix(sshd:auth):
# authentication failure; ...`, `Failed password for root from A port P ssh2`, and `Connection closed
# by authenticating user root A port P [preauth]` (see agent/capture/tests/data/auth/real-sshd.log).
#
# Needs root, iproute2, util-linux (unshare, mount), openssh-server, openssh-client, rsyslog, sshpass.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
PROG=${0##*/}

die() {
  echo "$PROG: $*" >&2
  exit 1
}
usage() {
  sed -n '2,17p' "$SELF" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# --- names --------------------------------------------------------------------------------------

lab_dir() {
  [ -n "${1:-}" ] || usage
  mkdir -p "$1"
  readlink -f "$1"
}

load_env() {
  [ -f "$DIR/lab.env" ] || die "$DIR/lab.env not found: is the lab up?"
  # shellcheck disable=SC1091
  . "$DIR/lab.env"
}

write_env() {
  local id x
  id=$(printf '%s' "$DIR" | sha256sum | cut -c1-8)
  x=$((0x${id:0:2}))
  cat >"$DIR/lab.env" <<EOF
LAB_DIR=$DIR
LAB_ID=$id
VICTIM_NS=pkv-$id
ATTACKER_NS=pka-$id
VICTIM_IF=pkv$id
ATTACKER_IF=pka$id
VICTIM_IP=10.253.$x.1
ATTACKER_IP=10.253.$x.2
VICTIM_IP6=2001:db8:253:$(printf %x "$x")::1
ATTACKER_IP6=2001:db8:253:$(printf %x "$x")::2
AUTH_LOG=$DIR/auth.log
EOF
}

in_victim() { ip netns exec "$VICTIM_NS" "$@"; }
in_attacker() { ip netns exec "$ATTACKER_NS" "$@"; }

# --- the private file system view (runs inside `unshare --mount`) ---------------------------------

# _private DIR CMD...: (internal) build the lab's /dev and /run in this (private) mount namespace,
# then exec CMD. LAB_BIND="SRC=DST ..." additionally bind-mounts files (e.g. a config over /etc/...).
private_fs_and_exec() {
  local hostdev e n pair
  [ -S "$DIR/devlog" ] || die "$DIR/devlog is not a socket: is rsyslogd running?"
  hostdev=$(mktemp -d "$DIR/.hostdev.XXXXXX")
  mount --rbind /dev "$hostdev"
  mount -t tmpfs -o mode=0755,nosuid picket-lab-dev /dev
  # The entries daemons and their tools use (not all of the host's /dev: one mount(8) per entry).
  for n in null zero full random urandom tty ptmx console pts shm mqueue hugepages fd stdin stdout stderr core; do
    e=$hostdev/$n
    if [ ! -e "$e" ] && [ ! -L "$e" ]; then
      continue
    elif [ -L "$e" ]; then
      cp -P "$e" "/dev/$n"
    elif [ -d "$e" ]; then
      mkdir "/dev/$n" && mount --rbind "$e" "/dev/$n"
    else
      : >"/dev/$n" && mount --bind "$e" "/dev/$n"
    fi
  done
  : >/dev/log
  mount --bind "$DIR/devlog" /dev/log
  umount -l "$hostdev"
  rmdir "$hostdev"
  mount -t tmpfs -o mode=0755,nosuid,nodev picket-lab-run /run
  mkdir -m 0755 /run/sshd
  for pair in ${LAB_BIND:-}; do
    mount --bind "${pair%%=*}" "${pair#*=}"
  done
  exec "$@"
}

# Start a daemon in the background, detached from our stdio and session; prints its pid.
spawn() {
  local out=$1
  shift
  setsid "$@" </dev/null >>"$out" 2>&1 &
  echo $!
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 20; i++)); do
    "$@" && return 0
    sleep 0.05
  done
  echo "$PROG: timed out after ${secs}s waiting for $what" >&2
  return 1
}

# --- up / down ----------------------------------------------------------------------------------

cmd_up() {
  [ "$(id -u)" -eq 0 ] || die "needs root"
  local t
  for t in ip unshare mount setsid sshpass rsyslogd ssh ssh-keygen /usr/sbin/sshd; do
    command -v "$t" >/dev/null || die "missing $t"
  done
  if [ -f "$DIR/lab.env" ]; then cmd_down >/dev/null 2>&1 || true; fi
  write_env
  load_env
  trap 'echo "$PROG: up failed; logs in $DIR (*.out); cleaning up" >&2; tail -n 20 "$DIR"/*.out >&2 || true; cmd_down >&2 || true' ERR

  # Network: two namespaces, a veth pair created straight into them, lo up.
  ip netns add "$VICTIM_NS"
  ip netns add "$ATTACKER_NS"
  ip link add "$VICTIM_IF" netns "$VICTIM_NS" type veth peer name "$ATTACKER_IF" netns "$ATTACKER_NS"
  ip -n "$VICTIM_NS" link set lo up
  ip -n "$ATTACKER_NS" link set lo up
  ip -n "$VICTIM_NS" addr add "$VICTIM_IP/24" dev "$VICTIM_IF"
  ip -n "$ATTACKER_NS" addr add "$ATTACKER_IP/24" dev "$ATTACKER_IF"
  local v6=yes
  ip -n "$VICTIM_NS" addr add "$VICTIM_IP6/64" dev "$VICTIM_IF" nodad 2>/dev/null &&
    ip -n "$ATTACKER_NS" addr add "$ATTACKER_IP6/64" dev "$ATTACKER_IF" nodad 2>/dev/null || v6=no
  echo "LAB_IPV6=$v6" >>"$DIR/lab.env"
  ip -n "$VICTIM_NS" link set "$VICTIM_IF" up
  ip -n "$ATTACKER_NS" link set "$ATTACKER_IF" up

  # rsyslogd: own socket, config, work dir and pid file.
  mkdir -p "$DIR/rsyslog-work"
  rm -f "$DIR/devlog"
  : >>"$DIR/auth.log"
  cat >"$DIR/rsyslog.conf" <<EOF
# picket sshd lab (scripts/lab/sshd-lab.sh): listens on $DIR/devlog only.
global(workDirectory="$DIR/rsyslog-work")
module(load="imuxsock" SysSock.Name="$DIR/devlog" SysSock.RateLimit.Interval="0" SysSock.Unlink="on")
# Blockers run in the lab (sshguard) log with facility auth: keep their lines out of auth.log.
if \$programname startswith "sshg" then {
  action(type="omfile" file="$DIR/blockers.log" template="RSYSLOG_FileFormat")
  stop
}
auth,authpriv.* action(type="omfile" file="$DIR/auth.log" template="RSYSLOG_FileFormat")
*.*;auth,authpriv.none action(type="omfile" file="$DIR/other.log" template="RSYSLOG_FileFormat")
EOF
  rsyslogd -N1 -f "$DIR/rsyslog.conf" >"$DIR/rsyslog.out" 2>&1
  spawn "$DIR/rsyslog.out" ip netns exec "$VICTIM_NS" \
    rsyslogd -n -f "$DIR/rsyslog.conf" -i "$DIR/rsyslog.pid" >/dev/null
  wait_for 10 "rsyslogd's socket $DIR/devlog" test -S "$DIR/devlog"

  # sshd: own host key, config and pid file, in the victim's network and private mount namespace.
  [ -f "$DIR/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C picket-lab -f "$DIR/ssh_host_ed25519_key"
  [ -f "$DIR/client_key" ] || ssh-keygen -q -t ed25519 -N '' -C picket-lab-client -f "$DIR/client_key"
  cp "$DIR/client_key.pub" "$DIR/authorized_keys"
  local listen6=""
  [ "$v6" = yes ] && listen6="ListenAddress [$VICTIM_IP6]:22"
  cat >"$DIR/sshd_config" <<EOF
# picket sshd lab (scripts/lab/sshd-lab.sh)
ListenAddress $VICTIM_IP:22
$listen6
HostKey $DIR/ssh_host_ed25519_key
PidFile $DIR/sshd.pid
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile $DIR/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
UsePAM ${LAB_USEPAM:-yes}
SyslogFacility AUTH
LogLevel INFO
UseDNS no
PrintMotd no
MaxStartups 100:30:200
LoginGraceTime 30
EOF
  ip netns exec "$VICTIM_NS" unshare --mount --propagation private -- \
    "$SELF" _private "$DIR" /usr/sbin/sshd -t -f "$DIR/sshd_config" >"$DIR/sshd.out" 2>&1
  spawn "$DIR/sshd.out" ip netns exec "$VICTIM_NS" unshare --mount --propagation private -- \
    "$SELF" _private "$DIR" /usr/sbin/sshd -D -f "$DIR/sshd_config" >/dev/null
  wait_for 15 "sshd's 'Server listening on $VICTIM_IP' in $DIR/auth.log" \
    grep -q "sshd\[[0-9]*\]: Server listening on $VICTIM_IP port 22" "$DIR/auth.log"
  wait_for 5 "sshd reachable from the attacker" cmd_probe
  trap - ERR
  echo "lab up: $DIR (victim $VICTIM_NS $VICTIM_IP, attacker $ATTACKER_NS $ATTACKER_IP, ipv6 $v6)"
}

# Is pid $1 running (a zombie is not: this machine's init may be slow to reap)?
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [ -n "$st" ] && [ "${st%% *}" != Z ]
}

# Kill the process in pid file $1 if it is alive and lives in one of the lab's namespaces.
kill_pidfile() {
  local pf=$1 pid ns i
  [ -f "$pf" ] || return 0
  pid=$(head -n1 "$pf" 2>/dev/null | tr -dc 0-9)
  if [ -n "$pid" ] && alive "$pid"; then
    ns=$(ip netns identify "$pid" 2>/dev/null || true)
    if [ "$ns" = "$VICTIM_NS" ] || [ "$ns" = "$ATTACKER_NS" ]; then
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 60; i++)); do
        alive "$pid" || break
        sleep 0.05
      done
      kill -KILL "$pid" 2>/dev/null || true
    else
      echo "$PROG: not killing pid $pid from $pf: not in the lab's namespaces (ns '${ns:-host}')" >&2
    fi
  fi
  rm -f "$pf"
}

cmd_down() {
  if [ ! -f "$DIR/lab.env" ]; then
    echo "lab down: nothing in $DIR"
    return 0
  fi
  load_env
  local pf ns pids
  # Blockers and agents that block-latency.sh started first, then sshd, then rsyslogd (last, so it
  # still records what the others say on the way out).
  for pf in "$DIR"/run/*.pid; do
    [ -e "$pf" ] && kill_pidfile "$pf"
  done
  kill_pidfile "$DIR/sshd.pid"
  kill_pidfile "$DIR/rsyslog.pid"
  # Whatever is left inside the lab's namespaces was started by the lab (sshd's per-connection
  # children, an ssh client, a blocker's helpers): end it, then delete the namespaces.
  for ns in "$VICTIM_NS" "$ATTACKER_NS"; do
    [ -e "/run/netns/$ns" ] || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null || true
      sleep 0.2
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      # shellcheck disable=SC2086
      [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -f "$DIR/devlog"
  echo "lab down: $DIR"
}

# --- traffic ------------------------------------------------------------------------------------

ssh_opts=(-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=5 -o LogLevel=QUIET)

failed_lines() { # count of `Failed password` lines from the attacker for user $1
  grep -cE "sshd\[[0-9]+\]: Failed password for (invalid user )?$1 from $ATTACKER_IP port " \
    "$DIR/auth.log" || true
}

have_failed() { [ "$(failed_lines "$1")" -ge "$2" ]; } # have_failed USER COUNT

# One password per connection, as scanners do: start_guess USER PASSWORD (pid in GUESS_PID).
start_guess() {
  ip netns exec "$ATTACKER_NS" timeout 30 sshpass -p "$2" ssh "${ssh_opts[@]}" \
    -o PreferredAuthentications=password -o PubkeyAuthentication=no -o NumberOfPasswordPrompts=1 \
    "$1@$VICTIM_IP" true </dev/null >/dev/null 2>&1 &
  GUESS_PID=$!
}

# After its line is logged a client normally ends at once (sshpass exits 5 on a refused password);
# one whose address was just blocked waits for an answer that never comes: end it after 3 s.
finish_guesses() { # finish_guesses PID...
  local i pid rc
  for ((i = 0; i < 60; i++)); do
    kill -0 "$@" 2>/dev/null || break # true while any is still running
    sleep 0.05
  done
  kill -TERM "$@" 2>/dev/null || true
  for pid in "$@"; do
    rc=0
    wait "$pid" || rc=$?
    [ "$rc" -ne 0 ] || echo "$PROG: a password guess succeeded?" >&2
  done
}

stop_guesses() { # the attack failed: end its clients, then exit 1
  kill -TERM "$@" 2>/dev/null || true
  wait "$@" 2>/dev/null || true
  exit 1
}

cmd_attack() {
  local n=${1:-5} user=${2:-root} i before pids=()
  load_env
  [[ "$user" =~ ^[A-Za-z0-9._-]+$ ]] || die "user name '$user': letters, digits, . _ - only"
  before=$(failed_lines "$user")
  if [ "${LAB_PARALLEL:-0}" = 1 ]; then
    # All N connections at once (as hydra -t N does): PAM's fail delay is paid once, not N times.
    for ((i = 1; i <= n; i++)); do
      start_guess "$user" "wrong-$RANDOM-$i"
      pids+=("$GUESS_PID")
    done
    wait_for 20 "$n failed attempts in $DIR/auth.log" have_failed "$user" $((before + n)) ||
      stop_guesses "${pids[@]}"
    finish_guesses "${pids[@]}"
  else
    for ((i = 1; i <= n; i++)); do
      start_guess "$user" "wrong-$RANDOM-$i"
      wait_for 15 "failed attempt $i of $n in $DIR/auth.log" have_failed "$user" $((before + i)) ||
        stop_guesses "$GUESS_PID"
      finish_guesses "$GUESS_PID"
    done
  fi
  echo "attack: $n failed password attempts as $user from $ATTACKER_IP"
}

cmd_login() {
  load_env
  in_attacker timeout 30 ssh "${ssh_opts[@]}" -o PreferredAuthentications=publickey -o BatchMode=yes \
    -o IdentitiesOnly=yes -i "$DIR/client_key" "root@$VICTIM_IP" true
  wait_for 10 "the Accepted line in $DIR/auth.log" \
    grep -q "Accepted publickey for root from $ATTACKER_IP port " "$DIR/auth.log"
  echo "login: root from $ATTACKER_IP accepted"
}

cmd_probe() {
  load_env
  in_attacker timeout 2 bash -c "exec 3<>/dev/tcp/$VICTIM_IP/22" 2>/dev/null
}

# --- main ---------------------------------------------------------------------------------------

cmd=${1:-}
[ $# -ge 2 ] || usage
DIR=$(lab_dir "$2")
shift 2
case "$cmd" in
  up) cmd_up ;;
  down) cmd_down ;;
  attack) cmd_attack "$@" ;;
  login) cmd_login ;;
  probe) cmd_probe ;;
  exec)
    load_env
    [ $# -ge 1 ] || usage
    exec ip netns exec "$VICTIM_NS" unshare --mount --propagation private -- "$SELF" _private "$DIR" "$@"
    ;;
  attacker)
    load_env
    [ $# -ge 1 ] || usage
    exec ip netns exec "$ATTACKER_NS" "$@"
    ;;
  _private) private_fs_and_exec "$@" ;;
  *) usage ;;
esac
