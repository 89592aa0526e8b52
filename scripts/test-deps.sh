#!/usr/bin/env bash
# Install, on Debian/Ubuntu, the system packages picket's build and tests need, when missing.
# Idempotent and quick when everything is there. Needs root (or sudo) only when something is missing.
#
# What needs what:
#   gcc, libc6-dev, pkg-config   rusqlite's bundled SQLite is C
#   procps                        `ps`/`kill` used by the end-to-end tests
# Later capabilities add theirs here (libpcap-dev, mosquitto, nftables, openssh-server, rsyslog, ...).
set -euo pipefail

PACKAGES=(gcc libc6-dev pkg-config procps)

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
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
