#!/usr/bin/env bash
# Install, on Debian/Ubuntu, the system packages picket's build and tests need, when missing.
# Idempotent and quick when everything is there. Needs root (or sudo) only when something is missing.
#
# What needs what:
#   gcc, libc6-dev, pkg-config   rusqlite's bundled SQLite is C
#   procps                        `ps`/`kill` used by the end-to-end tests
#   iproute2                      `ip netns` for the test network namespaces
#   openssl                       test CA, broker and client certificates
#   mosquitto                     the real MQTT broker the uplink and collector tests start on a free port
#   nftables                      block_ip / isolate_host, only inside test network namespaces
#   openssh-server, rsyslog,      the real sshd + syslog + brute-force lab (inside namespaces)
#   sshpass
#   fail2ban, sshguard            peers measured side by side in the benchmarks
#   systemd, systemd-journal-remote  journalctl, and real journal files for the auth source's journal
#                                 input tests (journal-remote writes them; systemd need not be PID 1)
#   passwd, login                 useradd/usermod for lock_account tests (a user the test adds)
#   time                          GNU time for scripts/bench/auth-replay.sh
#   libpcap0.8, tcpdump, tshark,  live capture (libpcap, loaded at run time) and the network tests: pcaps made between test
#   dnsmasq, bind9-dnsutils,      namespaces by curl/python3 http.server, dig against dnsmasq and nmap,
#   nmap, curl, python3,          checked against tshark (and ping for ICMP flows);
#   iputils-ping                  tshark is also the peer in docs/BENCHMARKS.md
#   iperf3                        the UDP packet generator of agent/netcap/bench/live-drop.sh
#   gcc-aarch64-linux-gnu,        cross/: C parts (SQLite, ring) and link of the aarch64/armv7 builds
#   gcc-arm-linux-gnueabihf,      (host-architecture packages only: no dpkg --add-architecture), and
#   libc6-dev-*-cross,            qemu-aarch64-static/qemu-arm-static for `make cross-test`
#   qemu-user-static
#   clang, llvm                   agent/ebpf's BPF object (clang -target bpf; llvm-strip drops its DWARF)
set -euo pipefail

PACKAGES=(gcc libc6-dev pkg-config procps iproute2 openssl mosquitto nftables openssh-server rsyslog sshpass
  fail2ban sshguard systemd systemd-journal-remote passwd login time
  libpcap0.8 tcpdump tshark dnsmasq bind9-dnsutils nmap curl python3 iputils-ping
  iperf3 clang llvm
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "test-deps: all present (${PACKAGES[*]})"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "test-deps: missing ${missing[*]} and no apt-get here: install them by hand" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packages such as fail2ban, sshguard, sshd and mosquitto must not start as host services: the tests
# start their own copies inside namespaces or on free ports. policy-rc.d 101 = "do not start".
guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d
  guard=/usr/sbin/policy-rc.d
fi
trap '[ -n "$guard" ] && $SUDO rm -f "$guard"' EXIT
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
