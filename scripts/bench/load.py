#!/usr/bin/env python3
"""load.py - drive the real agent under generated mixed load and report its footprint.

    scripts/bench/load.py [--rate 1000] [--secs 60] [--offline-secs 10] [--picket PATH] [--no-process] [--brute]
                          [--policies DIR] [--json FILE] [--with-fail2ban [--lab-dir DIR] [--lab-runs N]]

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
      20 % exec storm (/bin/true: process.start + process.exit).

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
    a = ap.parse_args()

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
    os.makedirs(watch)
    open(auth, "w").close()
    port = free_port()
    with open(os.path.join(tmp, "mosquitto.conf"), "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n")
    with open(os.path.join(tmp, "picket.toml"), "w") as f:
        f.write(f"""[agent]
data_dir = "{data}"
mode = "monitor"
health_interval_secs = 5
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
[uplink]
enabled = true
broker = "mqtt://127.0.0.1:{port}"
topic_prefix = "picket/v1/load"
""")
    agent = subprocess.Popen([picket, "run", "--config", os.path.join(tmp, "picket.toml")],
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "agent.err"), "w"))
    broker = None
    try:
        deadline = time.time() + 20
        while not read_status(data).get("health") and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        cpu0, t0 = proc_cpu_secs(agent.pid), time.time()
        threads0 = thread_cpu_secs(agent.pid)
        seq0 = read_status(data).get("health", {}).get("journal_last_seq", 0)
        bytes0 = read_status(data).get("health", {}).get("journal_bytes", 0)
        samples = []
        files, nfile, ops, slot = [], 0, Counter(), 0
        authf = open(auth, "a")
        step, due = 0.05, 0.0
        backlog_at_link = None
        while time.time() - t0 < a.secs:
            tick = time.time()
            if broker is None and tick - t0 >= a.offline_secs:
                backlog_at_link = read_status(data).get("health", {}).get("backlog", 0)
                broker = subprocess.Popen(["mosquitto", "-c", os.path.join(tmp, "mosquitto.conf")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                link_up = tick
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
                    authf.write(f"2026-11-24T02:00:00+00:00 host sshd[{1000 + k % 30000}]: Failed password for invalid user u{k % 97} "
                                f"from {ip} port {40000 + k % 20000} ssh2\n")
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
            left = step - (time.time() - tick)
            if left > 0:
                time.sleep(left)
        t1 = time.time()
        cpu1 = proc_cpu_secs(agent.pid)
        threads1 = thread_cpu_secs(agent.pid)
        st = read_status(data).get("health", {})
        seq1, bytes1 = st.get("journal_last_seq", 0), st.get("journal_bytes", 0)
        # Drain: wait for the backlog to empty.
        drain_t0, drain_backlog = time.time(), st.get("backlog", 0)
        while read_status(data).get("health", {}).get("backlog", 1) > 0 and time.time() - drain_t0 < 60:
            time.sleep(0.2)
        drained_in = time.time() - drain_t0
        final_status = read_status(data)
        final = final_status.get("health", {})
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=15)
        if broker:
            broker.terminate()
            broker.wait()

    kinds = Counter()
    out = subprocess.run([picket, "journal", "export", "--data-dir", data], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        kinds[json.loads(line)["kind"]] += 1
    secs = t1 - t0
    steady = [s[2] for s in samples[len(samples) // 2:]] or [0]
    print(f"picket load: target {a.rate} ev/s for {a.secs} s{' (--brute)' if a.brute else ''}, broker up after "
          f"{a.offline_secs} s, process source {'on' if process else 'off'}; binary {picket}")
    print("  generated: " + ", ".join(f"{k} {n}" for k, n in ops.items()))
    print(f"  journaled during the load: {seq1 - seq0} events = {(seq1 - seq0) / secs:.0f} ev/s")
    print("  journaled by kind (whole run): " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    print(f"  drops: {final.get('drops') or 'none'}")
    print(f"  CPU: {100 * (cpu1 - cpu0) / secs:.1f} % of one core (agent process, user+sys)")
    # Threads that ended during the load (tokio's idle blocking threads) are missing here.
    by_thread = Counter({k: threads1[k] - threads0.get(k, 0) for k in threads1})
    print("  CPU by thread: " + ", ".join(f"{k} {100 * v / secs:.1f} %" for k, v in by_thread.most_common() if v > 0))
    print(f"  RSS: steady {statistics.median(steady) / 1024:.1f} MiB (median of the second half), "
          f"peak {max(s[3] for s in samples) / 1024:.1f} MiB (VmHWM; VmRSS highest {max(s[2] for s in samples) / 1024:.1f} MiB "
          f"at {max(samples, key=lambda s: s[2])[0] - t0:.0f} s into the load)")
    print(f"  journal: +{(bytes1 - bytes0) / 1e6:.1f} MB during the load")
    print(f"  uplink: backlog {backlog_at_link} events when the broker came up; {drain_backlog} left at the end of the load, "
          f"drained in {drained_in:.1f} s; final backlog {final.get('backlog')}")
    print(f"  detections: {final.get('detections') or 'none'}")
    print(f"  budgets (cap / use at the end): {final_status.get('budgets') or 'not reported'}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
