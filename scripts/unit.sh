#!/usr/bin/env bash
# `make unit`: every test of the workspace, then every skip in one place.
#
# A test that cannot run here (no root, a missing tool, no eBPF) prints a loud SKIPPED line and
# passes; cargo test keeps a passing test's output to itself, so the lines are shown with
# --show-output and collected at the end, where they cannot scroll by unseen.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO="${CARGO:-cargo}"
log="${CARGO_TARGET_DIR:-target}/unit.log"
mkdir -p "$(dirname "$log")"
status=0
"$CARGO" test "${@:---workspace}" --locked -- --show-output 2>&1 | tee "$log" || status=$?
skips="$(grep -E 'SKIPPED|\*\*\* SKIP' "$log" | sed 's/^[[:space:]!*]*//' | sort | uniq -c || true)"
if [ -n "$skips" ]; then
  echo "*************************************************************************************"
  echo "*** unit: tests that skipped part or all of their work (see each line's reason):"
  printf '%s\n' "$skips" | sed 's/^/***   /'
  echo "*************************************************************************************"
else
  echo "unit: no test skipped"
fi
exit "$status"
