#!/usr/bin/env python3
"""Generate a large, realistic auth.log for the auth-log throughput benchmark.

    gen-auth-log.py [--lines N] [--format iso|classic] [--seed S] OUT

Writes N lines (default 1,000,000) as rsyslog writes them (`iso`: RSYSLOG_FileFormat, RFC 3339 with
microseconds, the form of the lab's auth.log; `classic`: `Nov 23 19:37:00 host prog[pid]: ...`).
The lines are the shapes OpenSSH 9.2 with PAM, sudo, su and cron write on Debian 12 (taken from
agent/capture/tests/data/auth/real-sshd.log, captured from a real sshd, and corpus.log), grouped
by connection as sshd writes them:

  * password guessing on an existing account (pam_unix failure, `Failed password`, preauth close),
  * on unknown accounts (`Invalid user`, pam_unix check pass / failure, `Failed password for
    invalid user`, preauth close),
  * several guesses on one connection ending in `maximum authentication attempts exceeded`,
  * scanners that never try a password (kex errors, `Connection closed by A port P [preauth]`),
  * successful logins (password or publickey) with their session lines,
  * noise: cron sessions, sudo commands and failures, su, systemd-logind.

About 1 in 6 connections comes over IPv6. Addresses are literal IPs (never host names: sshguard's
parser would try to resolve them). Attackers come from a pool of a few thousand addresses, so
the brute-force policies fire and keep window state for many sources. Deterministic for a seed.
"""

import argparse
import random
import sys
from datetime import datetime, timedelta, timezone

MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
USERS_BAD = ["admin", "test", "oracle", "ubuntu", "user", "guest", "pi", "ftpuser", "postgres", "git",
             "support", "deploy", "hadoop", "nagios", "minecraft", "jenkins", "ansible", "tomcat", "www"]
USERS_GOOD = ["alice", "bob", "carol", "deploy", "backup"]
KEYS = ["ED25519 SHA256:eVFolFp/3FLpVrrbXxCuE16U0/aslTFSZlWKqjc4cUI",
        "RSA SHA256:3xQp0Ln1NzE4uB3aBpYqkq0fXb3fG5s2L7lK1m9h0aA",
        "ECDSA SHA256:Zk3kq0fXb3fG5s2L7lK1m9h0aA3xQp0Ln1NzE4uB3aB"]


class Gen:
    def __init__(self, args):
        self.r = random.Random(args.seed)
        self.fmt = args.format
        self.host = "vm"
        self.t = datetime(2026, 11, 23, 0, 0, 0, tzinfo=timezone.utc)
        self.pid = 10000
        self.attackers = [self.rand_ip(v6=(i % 6 == 0)) for i in range(4000)]
        self.users_ok = [self.rand_ip(v6=(i % 6 == 0)) for i in range(50)]
        self.out = []

    def rand_ip(self, v6):
        r = self.r
        if v6:
            return "2001:db8:%x:%x::%x" % (r.randrange(1, 0xffff), r.randrange(0, 0xffff), r.randrange(1, 0xffff))
        while True:
            a = r.randrange(1, 224)
            if a not in (10, 127, 169, 172, 192):
                return "%d.%d.%d.%d" % (a, r.randrange(256), r.randrange(256), r.randrange(1, 255))

    def tick(self, ms_max=120):
        self.t += timedelta(microseconds=self.r.randrange(1, ms_max * 1000))

    def stamp(self):
        if self.fmt == "iso":
            return self.t.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        return "%s %2d %s" % (MONTHS[self.t.month - 1], self.t.day, self.t.strftime("%H:%M:%S"))

    def line(self, prog, msg, pid=True, ms=120):
        self.tick(ms)
        tag = "%s[%d]" % (prog, self.pid) if pid is True else (prog if pid is False else "%s[%d]" % (prog, pid))
        self.out.append("%s %s %s: %s\n" % (self.stamp(), self.host, tag, msg))

    def new_pid(self):
        self.pid += self.r.randrange(1, 40)
        if self.pid > 4000000:
            self.pid = 1000
        return self.pid

    def port(self):
        return self.r.randrange(1024, 65535)

    # --- sessions (each ends with sshd's lines for one connection) -------------------------------

    def guess_root(self, ip):
        self.new_pid()
        p = self.port()
        self.line("sshd", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=%s  user=root" % ip)
        self.line("sshd", "Failed password for root from %s port %d ssh2" % (ip, p))
        self.line("sshd", "Connection closed by authenticating user root %s port %d [preauth]" % (ip, p))

    def guess_invalid(self, ip):
        self.new_pid()
        p = self.port()
        u = self.r.choice(USERS_BAD)
        self.line("sshd", "Invalid user %s from %s port %d" % (u, ip, p))
        self.line("sshd", "pam_unix(sshd:auth): check pass; user unknown")
        self.line("sshd", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=%s " % ip)
        self.line("sshd", "Failed password for invalid user %s from %s port %d ssh2" % (u, ip, p))
        self.line("sshd", "Connection closed by invalid user %s %s port %d [preauth]" % (u, ip, p))

    def guess_many(self, ip):
        self.new_pid()
        p = self.port()
        u = self.r.choice(["root", "root", "admin"])
        inv = "invalid user " if u != "root" else ""
        if inv:
            self.line("sshd", "Invalid user %s from %s port %d" % (u, ip, p))
        self.line("sshd", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=%s %s"
                  % (ip, "" if inv else " user=root"))
        for _ in range(6):
            self.line("sshd", "Failed password for %s%s from %s port %d ssh2" % (inv, u, ip, p))
        self.line("sshd", "error: maximum authentication attempts exceeded for %s%s from %s port %d ssh2 [preauth]" % (inv, u, ip, p))
        self.line("sshd", "Disconnecting %s %s %s port %d: Too many authentication failures [preauth]"
                  % ("invalid user" if inv else "authenticating user", u, ip, p))
        self.line("sshd", "PAM 5 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=%s %s"
                  % (ip, "" if inv else " user=root"))

    def scanner(self, ip):
        self.new_pid()
        p = self.port()
        k = self.r.randrange(5)
        if k == 0:
            self.line("sshd", "error: kex_exchange_identification: Connection closed by remote host")
            self.line("sshd", "Connection closed by %s port %d" % (ip, p))
        elif k == 1:
            self.line("sshd", "Connection closed by %s port %d [preauth]" % (ip, p))
        elif k == 2:
            self.line("sshd", "Received disconnect from %s port %d:11: Bye Bye [preauth]" % (ip, p))
            self.line("sshd", "Disconnected from authenticating user root %s port %d [preauth]" % (ip, p))
        elif k == 3:
            self.line("sshd", "banner exchange: Connection from %s port %d: invalid format" % (ip, p))
        else:
            self.line("sshd", "error: kex_exchange_identification: read: Connection reset by peer")
            self.line("sshd", "Connection reset by %s port %d" % (ip, p))

    def login(self):
        self.new_pid()
        ip = self.r.choice(self.users_ok)
        p = self.port()
        u = self.r.choice(USERS_GOOD)
        uid = 1000 + USERS_GOOD.index(u)
        if self.r.random() < 0.7:
            self.line("sshd", "Accepted publickey for %s from %s port %d ssh2: %s" % (u, ip, p, self.r.choice(KEYS)))
        else:
            self.line("sshd", "Accepted password for %s from %s port %d ssh2" % (u, ip, p))
        self.line("sshd", "pam_unix(sshd:session): session opened for user %s(uid=%d) by (uid=0)" % (u, uid))
        self.line("systemd-logind", "New session %d of user %s." % (self.r.randrange(1, 99999), u), pid=311)
        if self.r.random() < 0.3:
            self.sudo(u)
        self.line("sshd", "Received disconnect from %s port %d:11: disconnected by user" % (ip, p))
        self.line("sshd", "Disconnected from user %s %s port %d" % (u, ip, p))
        self.line("sshd", "pam_unix(sshd:session): session closed for user %s" % u)

    def sudo(self, u):
        if self.r.random() < 0.15:
            self.line("sudo", "pam_unix(sudo:auth): authentication failure; logname=%s uid=1000 euid=0 tty=/dev/pts/0 ruser=%s rhost=  user=%s"
                      % (u, u, u), pid=False)
            self.line("sudo", "%8s : 1 incorrect password attempt ; TTY=pts/0 ; PWD=/home/%s ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx"
                      % (u, u), pid=False)
        else:
            self.line("sudo", "%8s : TTY=pts/0 ; PWD=/home/%s ; USER=root ; COMMAND=/usr/bin/apt update" % (u, u), pid=False)
            self.line("sudo", "pam_unix(sudo:session): session opened for user root(uid=0) by %s(uid=1000)" % u, pid=False)
            self.line("sudo", "pam_unix(sudo:session): session closed for user root", pid=False)

    def cron(self):
        pid = self.new_pid()
        self.line("CRON", "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)", pid=pid)
        self.line("CRON", "pam_unix(cron:session): session closed for user root", pid=pid)

    def su(self):
        pid = self.new_pid()
        if self.r.random() < 0.3:
            self.line("su", "pam_unix(su:auth): authentication failure; logname=alice uid=1000 euid=0 tty=/dev/pts/1 ruser=alice rhost=  user=root", pid=pid)
            self.line("su", "FAILED SU (to root) alice on pts/1", pid=pid)
        else:
            self.line("su", "(to root) alice on pts/1", pid=pid)
            self.line("su", "pam_unix(su:session): session opened for user root(uid=0) by alice(uid=1000)", pid=pid)

    def run(self, n, out):
        r = self.r
        kinds = [(self.guess_root, 30), (self.guess_invalid, 30), (self.guess_many, 6), (self.scanner, 20),
                 (lambda _ip: self.login(), 6), (lambda _ip: self.cron(), 6), (lambda _ip: self.su(), 2)]
        funcs = [k for k, _ in kinds]
        weights = [w for _, w in kinds]
        written = 0
        # A few attackers at a time, each sending a burst of connections.
        while written < n:
            ip = r.choice(self.attackers)
            for f in r.choices(funcs, weights, k=r.randrange(1, 12)):
                f(ip)
            if len(self.out) >= 10000 or written + len(self.out) >= n:
                take = self.out[: n - written]
                out.writelines(take)
                written += len(take)
                self.out.clear()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--format", choices=["iso", "classic"], default="iso")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("out")
    args = ap.parse_args()
    out = sys.stdout if args.out == "-" else open(args.out, "w")
    Gen(args).run(args.lines, out)
    out.close()


if __name__ == "__main__":
    main()
