#!/usr/bin/env python3
"""load.py - drive the real agent under generated mixed load and report its footprint.

    scripts/bench/load.py [--rate 1000] [--secs 60] [--offline-secs 10] [--picket PATH] [--no-process] [--brute]
                          [--net [--net-rate 100]] [--policies DIR] [--json FILE]
                          [--with-fail2ban [--lab-dir DIR] [--lab-runs N]]

What runs (everything in a temp dir, removed at the end; nothing touches the host's firewall):
  * a mosquitto broker on a free loopback port (plain MQTT), started --offline-secs into the run,
    so the first part of the load is stored and forwarded when the link comes up;
  * `picket run` (release build) in monitor mode with the shipped policies (picket's own and the
    Sigma rules), the file source on <tmp>/watch, the auth source on <tmp>/auth.log, the process
    source (as root; it sees every process on the machine, not only ours), uplink to the broker;
  * a generator paced in 50 ms steps at --rate expected events/s:
      50 % auth-log lines (failed sshd passwords, each from its own address so no policy fires;
           --brute: from 250 TEST-NET addresses, so brute-force alerts fire all the time),
      30 % file churn in the watched tree (a file created and written: file.create + file.modify;
           the oldest deleted once 200 exist: file.delete),
      20 % exec storm (/bin/true: process.start + process.exit);
  * --net: packets too. The network source captures on `lo` (the broker's port filtered out), and
    the generator adds --net-rate exchanges/s on top, half of each kind, all on loopback: a TCP
    connection to a local listener, opened and closed (net.flow start + end, 5 s after the FIN),
    and a DNS lookup of a fresh name over UDP from a fresh port to a responder the generator runs
    on 127.0.83.53:53 (net.dns query + answer, net.flow start, and its end 60 s idle later). Flows
    are attributed to the generator's process like any local flow.

Latency (a separate watcher process, so the generator's pacing is not disturbed; monotonic clock):
  * event -> journal: every 20th auth line names a unique user `lat<N>`; its write time (taken just
    before the write, flushed at once) to the first poll of the journal (a read-only SQLite
    connection, new rows since the last seq, every --poll-ms) that holds it;
  * event -> action: every 0.5 s a burst from a fresh TEST-NET address (192.0.2.0/24, 203.0.113.0/24,
    then 198.18.0.0/15): four failed passwords, and 50 ms later the marked 5th, which completes the
    ssh-brute-force threshold (5 in 5 min by source.ip); to the first `action` event for that
    address in the journal (monitor mode: a `dry_run` block);
  * event -> collector: a `picket collect` on the same broker writes NDJSON, tailed every 5 ms; the
    same marked lines and actions, counted only for marks written once the backlog of the offline
    part had drained (the uplink's batching, SEAL_LINGER, is part of what this measures).
The poll interval bounds how late a sighting can be: each figure is up to one interval (journal
--poll-ms, collector 5 ms) late, half of it on average.

--with-fail2ban then runs scripts/lab/block-latency.sh (sshd lab in network namespaces; fail2ban
and picket, --lab-runs each; sshguard too with --lab-tools all) and adds its latency, CPU and RSS.

Every second it samples the agent's CPU time (/proc/PID/stat), VmRSS and VmHWM (/proc/PID/status)
and status.json (backlog, drops). At the end it prints, for the load window: journaled events/s by
kind, drops by reason, CPU % of one core, RSS steady (median of the second half) and peak, journal
growth, the backlog when the broker came up and how fast it drained.

Needs python3, mosquitto, and root for the process source (--no-process otherwise); --with-fail2ban
needs root and the lab's tools (sshd, rsyslog, fail2ban, nft: scripts/test-deps.sh).
"""

import argparse
import ipaddress
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def thread_cpu_secs(pid):
    """CPU seconds by thread name (threads of one name summed: tokio's blocking pool)."""
    out = Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[name] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def proc_mem_kib(pid):
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def rss_by_mapping(pid):
    """RSS in KiB by kind of mapping (/proc/PID/smaps): where the agent's resident memory is."""
    out = Counter()
    name = ""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    parts = line.split(None, 5)
                    path = parts[5].strip() if len(parts) > 5 else ""
                    if path == "[heap]":
                        name = "heap (main malloc arena)"
                    elif path.startswith("anon_inode:bpf"):
                        name = "eBPF maps"
                    elif path.endswith("/picket") or path.endswith("/picket (deleted)"):
                        name = "picket binary"
                    elif re.search(r"/(libc|ld-linux[^/]*|libm|libgcc_s)\.so", path):
                        name = "libc, libm, ld.so, libgcc_s"
                    elif ".so" in path:
                        name = "other libraries"
                    elif path in ("", "[stack]"):
                        name = "anonymous (thread stacks, other malloc arenas)"
                    else:
                        name = "other"
                elif line.startswith("Rss:"):
                    out[name] += int(line.split()[1])
    except OSError:
        pass
    return out


MARK_EVERY = 20  # every 20th auth line is a marked one
BURST_EVERY = 10  # steps (of 50 ms) between two brute-force bursts from fresh addresses
COLLECT_POLL = 0.005


def fresh_ip(i):
    """The i-th fresh attacker address: TEST-NET-1 and -3, then the benchmark range 198.18.0.0/15."""
    if i < 254:
        return f"192.0.2.{i + 1}"
    if i < 508:
        return f"203.0.113.{i - 253}"
    return str(ipaddress.ip_address("198.18.0.1") + (i - 508))


def is_fresh(ip):
    return ip.startswith(("192.0.2.", "203.0.113.", "198.18.", "198.19."))


def sightings(ev, seen, now):
    """Record the first sighting of a marked auth line (user lat<N>) or of an action on a fresh address."""
    if ev.get("kind") == "action":
        ip = (ev.get("source") or {}).get("ip") or ""
        if is_fresh(ip):
            seen.setdefault(("action", ip), now)
    else:
        name = (ev.get("user") or {}).get("name") or ""
        if name.startswith("lat"):
            seen.setdefault(("mark", name), now)


def watcher(db, ndjson, poll, stop, out):
    """Poll the journal (every `poll` s) and the collector's NDJSON (every COLLECT_POLL s); send back
    {key: monotonic time first seen} for each, and this process's CPU seconds."""
    jseen, cseen = {}, {}
    conn, last_seq, polls = None, 0, 0
    buf, fh, next_coll = b"", None, 0.0
    # Only rows that may matter are parsed: marks and actions; the rest only advance the cursor.
    q = ("SELECT seq, CASE WHEN kind = 'action' OR instr(json, '\"name\":\"lat') > 0 THEN json END "
         "FROM events WHERE seq > ? ORDER BY seq")
    while not stop.is_set():
        t = time.monotonic()
        if conn is None and os.path.exists(db):
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        if conn is not None:
            try:
                rows = conn.execute(q, (last_seq,)).fetchall()
            except sqlite3.Error:
                rows = []
            now = time.monotonic()
            polls += 1
            for seq, js in rows:
                last_seq = seq
                if js:
                    sightings(json.loads(js), jseen, now)
        if t >= next_coll:
            next_coll = t + COLLECT_POLL
            if fh is None and os.path.exists(ndjson):
                fh = open(ndjson, "rb")
            if fh is not None:
                chunk = fh.read()
                if chunk:
                    now = time.monotonic()
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        if b'"name":"lat' in line or b'"action"' in line:
                            sightings(json.loads(line), cseen, now)
        left = poll - (time.monotonic() - t)
        if left > 0:
            time.sleep(left)
    u = os.times()
    out.put({"journal": jseen, "collector": cseen, "polls": polls, "cpu": u.user + u.system})


DNS_ADDR = ("127.0.83.53", 53)


def dns_query(qid, name):
    """A DNS query for the A record of `name`."""
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + q + b"\x00\x01\x00\x01"


def dns_answer(query, addr):
    """The answer to `query` (one question, as dns_query makes it): one A record, `addr`."""
    return (query[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + query[12:]
            + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(addr))


class NetLoad:
    """--net: loopback traffic for the network source. A TCP listener and a DNS responder on their
    own threads; `step` opens and closes connections and makes lookups, each from a fresh port."""

    def __init__(self):
        import threading
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(128)
        self.tcp_addr = self.tcp.getsockname()
        self.dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.dns.bind(DNS_ADDR)
        except OSError as e:
            sys.exit(f"load.py: --net: cannot bind the DNS responder to {DNS_ADDR[0]}:{DNS_ADDR[1]}: {e} (needs root)")
        self.done = False
        self.due = 0.0
        self.n = 0
        for target in (self._accept, self._answer):
            threading.Thread(target=target, daemon=True).start()

    def _accept(self):
        while not self.done:
            try:
                c, _ = self.tcp.accept()
                c.close()
            except OSError:
                return

    def _answer(self):
        while not self.done:
            try:
                q, peer = self.dns.recvfrom(512)
                self.dns.sendto(dns_answer(q, f"10.83.{len(q) % 256}.1"), peer)
            except OSError:
                return

    def step(self, n, ops):
        self.due += n
        k = int(self.due)
        self.due -= k
        for _ in range(k):
            self.n += 1
            if self.n % 2:
                with socket.create_connection(self.tcp_addr, timeout=1):
                    pass
                ops["tcp connection"] += 1
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.settimeout(0.2)
                    u.sendto(dns_query(self.n & 0xFFFF, f"h{self.n}.load.test"), DNS_ADDR)
                    try:
                        u.recv(512)
                    except OSError:
                        pass
                ops["dns lookup"] += 1

    def close(self):
        self.done = True
        self.tcp.close()
        self.dns.close()


def pct(values):
    """p50/p95/p99/max (nearest rank) in ms of a list of seconds, and the count."""
    if not values:
        return None
    v = sorted(values)
    rank = lambda p: v[min(len(v) - 1, max(0, -(-len(v) * p // 100) - 1))]
    return {"n": len(v), "p50_ms": rank(50) * 1e3, "p95_ms": rank(95) * 1e3, "p99_ms": rank(99) * 1e3,
            "max_ms": v[-1] * 1e3, "min_ms": v[0] * 1e3}


def fmt_pct(d):
    if not d:
        return "no samples"
    return (f"p50 {d['p50_ms']:.1f} ms, p95 {d['p95_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms, max {d['max_ms']:.1f} ms "
            f"(min {d['min_ms']:.1f}, n={d['n']})")


def read_status(data):
    try:
        with open(os.path.join(data, "status.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=1000, help="target events/s")
    ap.add_argument("--secs", type=int, default=60, help="load duration")
    ap.add_argument("--offline-secs", type=int, default=10, help="broker starts this long into the load")
    ap.add_argument("--picket", default=None, help="agent binary (default: <target>/release/picket)")
    ap.add_argument("--no-process", action="store_true", help="leave the process source off")
    ap.add_argument("--policies", default=os.path.join(REPO, "policies"),
                    help="policy directory (default: the repo's; an older binary may need the policies of its time)")
    ap.add_argument("--brute", action="store_true", help="auth lines from 250 addresses: constant brute-force alerts")
    ap.add_argument("--net", action="store_true", help="network source on lo, with loopback TCP and DNS traffic")
    ap.add_argument("--net-rate", type=int, default=100, help="--net: TCP connections + DNS lookups per second")
    ap.add_argument("--health-secs", type=int, default=5, help="agent.health_interval_secs of the agent under test")
    ap.add_argument("--poll-ms", type=float, default=2.0, help="journal poll interval of the latency watcher")
    ap.add_argument("--no-collector", action="store_true", help="no `picket collect` (no event -> collector figures)")
    ap.add_argument("--no-uplink", action="store_true",
                    help="the uplink off, as in the default config: no broker, no collector")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    ap.add_argument("--with-fail2ban", action="store_true",
                    help="then run scripts/lab/block-latency.sh (fail2ban and picket) and add its figures")
    ap.add_argument("--lab-dir", default=None, help="lab directory for --with-fail2ban (default: a temp dir)")
    ap.add_argument("--lab-runs", type=int, default=5, help="runs per blocker for --with-fail2ban")
    ap.add_argument("--lab-tools", default="fail2ban,picket", help="blockers for --with-fail2ban: a list, or all")
    a = ap.parse_args()
    if a.no_uplink:
        a.no_collector = True

    picket = a.picket or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release", "picket")
    if not os.access(picket, os.X_OK):
        sys.exit(f"load.py: no agent binary at {picket}: cargo build --release -p picket")
    if not shutil.which("mosquitto"):
        sys.exit("load.py: mosquitto is not installed (scripts/test-deps.sh installs it)")
    process = not a.no_process and os.geteuid() == 0
    if not a.no_process and not process:
        print("load.py: not root: the process source stays off (exec load still runs)", file=sys.stderr)

    tmp = tempfile.mkdtemp(prefix="picket-load-")
    data, watch, auth = (os.path.join(tmp, n) for n in ("data", "watch", "auth.log"))
    keys, cstate = os.path.join(tmp, "keys"), os.path.join(tmp, "collect")
    ndjson = os.path.join(cstate, "events.ndjson")
    for d in (watch, keys, cstate):
        os.makedirs(d)
    open(auth, "w").close()
    port = free_port()
    with open(os.path.join(tmp, "mosquitto.conf"), "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n")
    with open(os.path.join(tmp, "picket.toml"), "w") as f:
        f.write(f"""[agent]
data_dir = "{data}"
device_id = "load-bench"
mode = "monitor"
health_interval_secs = {a.health_secs}
status_interval_secs = 1
[policies]
paths = ["{a.policies}"]
[sources.process]
enabled = {"true" if process else "false"}
[sources.file]
paths = ["{watch}"]
[sources.auth]
enabled = true
files = ["{auth}"]
[sources.network]
enabled = {"true" if a.net else "false"}
interface = "lo"
filter = "not port {port}"
[uplink]
enabled = {"false" if a.no_uplink else "true"}
broker = "mqtt://127.0.0.1:{port}"
topic_prefix = "picket/v1/load"
""")
    collect_conf = os.path.join(tmp, "collect.toml")
    with open(collect_conf, "w") as f:
        f.write(f"""[collect]
broker = "mqtt://127.0.0.1:{port}"
topic_prefix = "picket/v1/load"
device_keys_dir = "{keys}"
state_dir = "{cstate}"
output = "{ndjson}"
client_id = "load-collector"
gap_timeout_secs = 2
""")
    if not a.no_collector:
        # Enrol the device with the collector: its key, created here, is the one the agent signs with.
        out = subprocess.run([picket, "identity", "--config", os.path.join(tmp, "picket.toml"), "--export"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"load.py: picket identity --export failed: {out.stderr.strip()}")
        with open(os.path.join(keys, "load-bench.pub"), "w") as f:
            f.write(out.stdout)
    net = NetLoad() if a.net else None
    agent = subprocess.Popen([picket, "run", "--config", os.path.join(tmp, "picket.toml")],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "agent.err"), "w"))
    broker = collector = None
    stop, results = multiprocessing.Event(), multiprocessing.Queue()
    watch_proc = multiprocessing.Process(
        target=watcher, args=(os.path.join(data, "journal.db"), ndjson, a.poll_ms / 1e3, stop, results), daemon=True)
    marks, bursts = {}, {}  # key -> monotonic time just before the write
    loadavg0 = open("/proc/loadavg").read().split()[:3]
    collector_cpu, collector_rss = 0.0, (0, 0)
    try:
        deadline = time.time() + 20
        while not read_status(data).get("health") and time.time() < deadline:
            time.sleep(0.1)
        watch_proc.start()
        time.sleep(1)
        cpu0, t0 = proc_cpu_secs(agent.pid), time.time()
        threads0 = thread_cpu_secs(agent.pid)
        seq0 = read_status(data).get("health", {}).get("journal_last_seq", 0)
        bytes0 = read_status(data).get("health", {}).get("journal_bytes", 0)
        samples, backlogs = [], []
        peak_map = (0, 0.0, Counter())
        files, nfile, ops, slot = [], 0, Counter(), 0
        authf = open(auth, "a")
        step, due = 0.05, 0.0
        backlog_at_link = None
        link_up = drained_at = None
        nburst, pending_fifth, nstep = 0, None, 0
        while time.time() - t0 < a.secs:
            tick = time.time()
            if broker is None and not a.no_uplink and tick - t0 >= a.offline_secs:
                backlog_at_link = read_status(data).get("health", {}).get("backlog", 0)
                broker = subprocess.Popen(["mosquitto", "-c", os.path.join(tmp, "mosquitto.conf")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                link_up = time.monotonic()
                if not a.no_collector:
                    # Right after the broker: the agent's reconnect backoff (from 0.5 s, doubling) is
                    # then well behind, so the collector's session is in place before the first batch.
                    time.sleep(0.05)
                    collector = subprocess.Popen([picket, "collect", "--config", collect_conf],
                                                 stdout=subprocess.DEVNULL,
                                                 stderr=open(os.path.join(tmp, "collect.err"), "w"))
            # Brute-force bursts from fresh addresses: 4 failures now, the 5th (marked) next step.
            if pending_fifth:
                authf.flush()
                line, ip = pending_fifth
                bursts[ip] = time.monotonic()
                authf.write(line)
                authf.flush()
                pending_fifth = None
            if a.brute and nstep % BURST_EVERY == 0:
                ip = fresh_ip(nburst)
                nburst += 1
                for i in range(5):
                    line = (f"2026-11-24T02:00:00+00:00 host sshd[{60000 + i}]: Failed password for invalid user b{i} "
                            f"from {ip} port {30000 + i} ssh2\n")
                    if i < 4:
                        authf.write(line)
                    else:
                        pending_fifth = (line, ip)
                ops["burst"] += 1
            nstep += 1
            if net:
                net.step(a.net_rate * step, ops)
            due += a.rate * step
            n = int(due)
            due -= n
            for _ in range(n):
                # Ten slots, one expected event each: 5 auth lines; a write (create + modify) and a
                # delete of the oldest file once 200 exist; an exec (start + exit).
                r = slot % 10
                slot += 1
                if r < 5:
                    k = ops["auth line"]
                    # Routine: every line from its own address, so no policy fires. --brute: 250
                    # addresses over and over, so the brute-force policies alert (and, in monitor
                    # mode, journal the blocks they would make) all the time.
                    ip = f"198.51.100.{k % 250 + 1}" if a.brute else f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}"
                    marked = k % MARK_EVERY == 0
                    user = f"lat{k}" if marked else f"u{k % 97}"
                    line = (f"2026-11-24T02:00:00+00:00 host sshd[{1000 + k % 30000}]: Failed password for invalid user {user} "
                            f"from {ip} port {40000 + k % 20000} ssh2\n")
                    if marked:
                        # Its own write, timed just before it, nothing buffered in front of it.
                        authf.flush()
                        marks[user] = time.monotonic()
                        authf.write(line)
                        authf.flush()
                    else:
                        authf.write(line)
                    ops["auth line"] += 1
                elif r == 5:
                    p = os.path.join(watch, f"f{nfile}")
                    with open(p, "w") as f:
                        f.write("x" * 64)
                    files.append(p)
                    nfile += 1
                    ops["file write"] += 1
                elif r == 7 and len(files) > 200:
                    os.unlink(files.pop(0))
                    ops["file delete"] += 1
                elif r == 8:
                    subprocess.Popen(["/bin/true"]).wait()
                    ops["exec"] += 1
            authf.flush()
            if not samples or tick - samples[-1][0] >= 1.0:
                rss, hwm = proc_mem_kib(agent.pid)
                samples.append((tick, proc_cpu_secs(agent.pid), rss, hwm))
                if rss >= peak_map[0]:
                    peak_map = (rss, tick - t0, rss_by_mapping(agent.pid))
                backlog = read_status(data).get("health", {}).get("backlog")
                backlogs.append((round(tick - t0, 1), backlog))
                # The offline part's backlog is gone: from here on, collector latency is the live path.
                if link_up is not None and drained_at is None and backlog is not None and backlog < a.rate:
                    drained_at = time.monotonic()
            left = step - (time.time() - tick)
            if left > 0:
                time.sleep(left)
        t1 = time.time()
        end_map = rss_by_mapping(agent.pid)
        cpu1 = proc_cpu_secs(agent.pid)
        threads1 = thread_cpu_secs(agent.pid)
        st = read_status(data).get("health", {})
        seq1, bytes1 = st.get("journal_last_seq", 0), st.get("journal_bytes", 0)
        # Drain: wait for the backlog to empty.
        drain_t0, drain_backlog = time.time(), st.get("backlog", 0)
        while not a.no_uplink and read_status(data).get("health", {}).get("backlog", 1) > 0 \
                and time.time() - drain_t0 < 60:
            time.sleep(0.2)
        drained_in = time.time() - drain_t0
        final_status = read_status(data)
        final = final_status.get("health", {})
        time.sleep(1.0)  # the last marks reach the collector (uplink batches linger)
        if collector:
            collector_cpu = proc_cpu_secs(collector.pid)
            collector_rss = proc_mem_kib(collector.pid)
        stop.set()
        seen = results.get(timeout=30)
        watch_proc.join(timeout=10)
    finally:
        stop.set()
        if watch_proc.is_alive():
            watch_proc.terminate()
        if collector:
            collector.send_signal(signal.SIGTERM)
            try:
                collector.wait(timeout=10)
            except subprocess.TimeoutExpired:
                collector.kill()
                collector.wait()
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=15)
        if net:
            net.close()
        if broker:
            broker.terminate()
            broker.wait()

    kinds = Counter()
    out = subprocess.run([picket, "journal", "export", "--data-dir", data], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        kinds[json.loads(line)["kind"]] += 1
    loadavg1 = open("/proc/loadavg").read().split()[:3]
    secs = t1 - t0
    steady = [s[2] for s in samples[len(samples) // 2:]] or [0]
    by_thread = Counter({k: threads1[k] - threads0.get(k, 0) for k in threads1})
    report = {
        "rate": a.rate, "secs": a.secs, "brute": a.brute, "uplink_enabled": not a.no_uplink, "offline_secs": a.offline_secs, "process_source": process,
        "binary": picket, "loadavg_before": loadavg0, "loadavg_after": loadavg1,
        "generated": dict(ops), "journaled_during_load": seq1 - seq0, "journaled_per_sec": (seq1 - seq0) / secs,
        "journaled_by_kind": dict(kinds), "drops": final.get("drops") or {},
        "cpu_pct_one_core": 100 * (cpu1 - cpu0) / secs,
        "cpu_pct_by_thread": {k: 100 * v / secs for k, v in by_thread.most_common() if v > 0},
        "rss_steady_mib": statistics.median(steady) / 1024, "rss_peak_hwm_mib": max(s[3] for s in samples) / 1024,
        "rss_by_mapping_kib": {"at_peak": dict(peak_map[2]), "peak_at_s": peak_map[1], "at_end": dict(end_map)},
        "journal_growth_mb": (bytes1 - bytes0) / 1e6,
        "uplink": {"backlog_at_link": backlog_at_link, "backlog_at_end": drain_backlog, "drained_in_s": drained_in,
                   "final_backlog": final.get("backlog")},
        "detections": final.get("detections") or {},
    }
    link = "uplink off (default config)" if a.no_uplink else f"broker up after {a.offline_secs} s"
    print(f"picket load: target {a.rate} ev/s for {a.secs} s{' (--brute)' if a.brute else ''}, {link}, "
          f"process source {'on' if process else 'off'}; binary {picket}")
    print(f"  machine: {os.cpu_count()} CPUs, load average {' '.join(loadavg0)} before, {' '.join(loadavg1)} after")
    print("  generated: " + ", ".join(f"{k} {n}" for k, n in ops.items()))
    print(f"  journaled during the load: {seq1 - seq0} events = {(seq1 - seq0) / secs:.0f} ev/s")
    print("  journaled by kind (whole run): " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    print(f"  drops: {final.get('drops') or 'none'}")
    print(f"  CPU: {100 * (cpu1 - cpu0) / secs:.1f} % of one core (agent process, user+sys)")
    # Threads that ended during the load (tokio's idle blocking threads) are missing here.
    print("  CPU by thread: " + ", ".join(f"{k} {100 * v / secs:.1f} %" for k, v in by_thread.most_common() if v > 0))
    print(f"  RSS: steady {statistics.median(steady) / 1024:.1f} MiB (median of the second half), "
          f"peak {max(s[3] for s in samples) / 1024:.1f} MiB (VmHWM; VmRSS highest {max(s[2] for s in samples) / 1024:.1f} MiB "
          f"at {max(samples, key=lambda s: s[2])[0] - t0:.0f} s into the load)")
    for label, m in ((f"at the highest VmRSS ({peak_map[1]:.0f} s)", peak_map[2]), ("at the end", end_map)):
        print(f"  RSS by mapping {label}: " + ", ".join(f"{k} {v / 1024:.1f}" for k, v in m.most_common()) + " MiB")
    print(f"  journal: +{(bytes1 - bytes0) / 1e6:.1f} MB during the load")
    if a.no_uplink:
        print("  uplink: off")
    else:
        print(f"  uplink: backlog {backlog_at_link} events when the broker came up; {drain_backlog} left at the end of "
              f"the load, drained in {drained_in:.1f} s; final backlog {final.get('backlog')}")
    print(f"  detections: {final.get('detections') or 'none'}")
    print(f"  budgets (cap / use at the end): {final_status.get('budgets') or 'not reported'}")
    if a.net:
        netst = (final.get("sources") or {}).get("network")
        report["network_status"] = netst
        print(f"  network source: {netst}")

    # --- latency
    js, cs = seen["journal"], seen["collector"]
    lat = {"journal_poll_ms": a.poll_ms, "collector_poll_ms": COLLECT_POLL * 1e3,
           "watcher_cpu_pct_one_core": 100 * seen["cpu"] / secs}

    mono0 = t0 - time.time() + time.monotonic()  # the load's start on the monotonic clock
    raw = {}

    def deltas(written, seen_at, key, since=None):
        got = [seen_at[(key, k)] - t for k, t in written.items()
               if (key, k) in seen_at and (since is None or t >= since)]
        # For the JSON: [seconds into the load, latency ms] of every sample, to see patterns over time.
        raw.setdefault(f"{key}:{'collector' if since is not None else 'journal'}", [
            [round(t - mono0, 3), round((seen_at[(key, k)] - t) * 1e3, 2)] for k, t in written.items()
            if (key, k) in seen_at and (since is None or t >= since)])
        missing = sum(1 for k, t in written.items() if (key, k) not in seen_at and (since is None or t >= since))
        return got, missing

    rows = []
    d, miss = deltas(marks, js, "mark")
    rows.append(("event -> journal", "marked auth line written -> in the journal", d, miss))
    if a.brute:
        d, miss = deltas(bursts, js, "action")
        rows.append(("event -> action", "5th failure from a fresh address written -> action (block_ip dry run) journaled",
                     d, miss))
    if not a.no_collector:
        since = drained_at if drained_at is not None else float("inf")
        d, miss = deltas(marks, cs, "mark", since)
        rows.append(("event -> collector", "marked auth line written -> in the collector's NDJSON", d, miss))
        if a.brute:
            d, miss = deltas(bursts, cs, "action", since)
            rows.append(("event -> action at collector", "5th failure written -> action in the collector's NDJSON",
                         d, miss))
        lat["collector_counted_from_s"] = None if drained_at is None else drained_at - mono0
        if collector:
            lat["collector_cpu_pct_one_core"] = 100 * collector_cpu / secs
            lat["collector_rss_mib"] = collector_rss[0] / 1024
    print(f"  latency (watcher polls the journal every {a.poll_ms:g} ms over a read-only SQLite connection and the "
          f"collector's NDJSON every {COLLECT_POLL * 1e3:g} ms: each figure is up to one poll late; "
          f"watcher CPU {lat['watcher_cpu_pct_one_core']:.1f} % of one core):")
    for name, what, d, miss in rows:
        p = pct(d)
        negative = sum(1 for x in d if x < 0)
        lat[name] = dict(p or {}, what=what, missing=miss, negative=negative)
        print(f"    {name}: {fmt_pct(p)}; not seen: {miss}{f'; NEGATIVE: {negative}' if negative else ''}  [{what}]")
    if not a.no_collector:
        if drained_at is None:
            print("    (collector: the offline backlog never drained during the load: nothing counted)")
        else:
            print(f"    (collector: counted from {lat['collector_counted_from_s']:.1f} s into the load, once the offline "
                  f"backlog had drained; collector CPU {lat.get('collector_cpu_pct_one_core', 0):.1f} % of one core "
                  f"over the load, RSS {lat.get('collector_rss_mib', 0):.1f} MiB)")
    report["latency"] = lat
    report["latency_samples"] = raw
    report["backlog_per_second"] = backlogs
    shutil.rmtree(tmp, ignore_errors=True)

    if a.with_fail2ban:
        report["block_latency"] = block_latency(picket, a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"  figures written to {a.json}")


def block_latency(picket, a):
    """Run scripts/lab/block-latency.sh for --lab-tools; return {tool: figures} from its `json` lines."""
    script = os.path.join(REPO, "scripts", "lab", "block-latency.sh")
    if os.geteuid() != 0:
        print("  block latency: *** SKIPPED (needs root) ***")
        return {}
    lab = a.lab_dir or tempfile.mkdtemp(prefix="picket-lab-")
    cmd = [script, lab, "all" if a.lab_tools == "all" else a.lab_tools, str(a.lab_runs)]
    print(f"  block latency: PICKET={picket} {' '.join(cmd)}", flush=True)
    p = subprocess.run(cmd, env=dict(os.environ, PICKET=picket), capture_output=True, text=True)
    out, summary = {}, False
    for line in p.stdout.splitlines():
        m = re.match(r"^(\w+): json (\{.*\})$", line)
        summary = summary or line.startswith("--- summary")
        if m:
            out[m.group(1)] = json.loads(m.group(2))
        elif not summary:  # the summary repeats what was printed
            print("    " + line)
    if p.returncode != 0:
        print(f"    block-latency.sh exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    print("  side by side, auth-log line -> IP in nftables (medians over the runs; CPU and RSS of the blocker's "
          "processes, from ready to the block):")
    for tool, r in out.items():
        v = sorted(r["latency_ms"])
        med = statistics.median(v) if v else float("nan")
        print(f"    {tool:9} {r['blocked']}/{r['runs']} blocked, latency min {min(v, default=0):.2f} / median {med:.2f} / "
              f"max {max(v, default=0):.2f} ms; startup CPU {r['startup_cpu_s']:.2f} s; CPU {r['window_cpu_pct']:.2f} % of "
              f"one core over {r['window_s']:.1f} s; RSS {r['rss_mib']:.1f} MiB (VmHWM {r['hwm_mib']:.1f} MiB)")
    if not a.lab_dir:
        shutil.rmtree(lab, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
