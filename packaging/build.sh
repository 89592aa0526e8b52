#!/usr/bin/env bash
# Build picket's packages from the release binary:
#   packaging/build.sh deb   ->  $CARGO_TARGET_DIR/debian/picket_<ver>_amd64.deb        (cargo-deb)
#   packaging/build.sh rpm   ->  $CARGO_TARGET_DIR/generate-rpm/picket-<ver>.x86_64.rpm (cargo-generate-rpm)
# Builds the release binary first (a no-op when it is up to date). cargo-deb and
# cargo-generate-rpm are installed with `cargo install --locked` into $CARGO_TOOLS_ROOT
# (default: $CARGO_HOME, i.e. where `cargo install` puts tools) when missing; 1-3 minutes each, once.
# Prints the path of the package it built on the last line of stdout.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
CARGO="${CARGO:-cargo}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
export CARGO_TARGET_DIR="$target_dir"
tools="${CARGO_TOOLS_ROOT:-${CARGO_HOME:-$HOME/.cargo}}"
export PATH="$tools/bin:$PATH"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"

need_tool() { # cargo subcommand binary, crate
  if ! command -v "$1" >/dev/null; then
    echo "packaging: $1 missing, installing it into $tools (cargo install --locked $2)" >&2
    "$CARGO" install --locked --quiet --root "$tools" "$2" >&2
  fi
}

build_binary() {
  "$CARGO" build --release --locked -p picket >&2
  # The man page, gzipped reproducibly beside the binary ("target/release/..." in the metadata).
  gzip -9nc packaging/man/picket.8 > "$target_dir/release/picket.8.gz"
}

case "${1:-}" in
  deb)
    need_tool cargo-deb cargo-deb
    build_binary
    out="$target_dir/debian/picket_${version}_amd64.deb"
    mkdir -p "$target_dir/debian"
    "$CARGO" deb -p picket --no-build --no-strip --output "$out" >&2   # the release profile strips
    echo "$out"
    ;;
  rpm)
    need_tool cargo-generate-rpm cargo-generate-rpm
    build_binary
    out="$target_dir/generate-rpm/picket-${version}.x86_64.rpm"
    mkdir -p "$target_dir/generate-rpm"
    "$CARGO" generate-rpm -p agent/picket --target-dir "$target_dir" -o "$out" >&2
    echo "$out"
    ;;
  *)
    echo "usage: $0 deb|rpm" >&2
    exit 2
    ;;
esac
