#!/usr/bin/env bash
# Build picket's packages from the release binary:
#   packaging/build.sh deb   ->  $CARGO_TARGET_DIR/debian/picket_<ver>_amd64.deb        (cargo-deb)
#   packaging/build.sh rpm   ->  $CARGO_TARGET_DIR/generate-rpm/picket-<ver>.x86_64.rpm (cargo-generate-rpm)
# ARCH=arm64 (`make deb ARCH=arm64`) builds picket_<ver>_arm64.deb / picket-<ver>.aarch64.rpm from
# the static aarch64-unknown-linux-musl cross build (cross/README.md): Sigma in, no libpcap (no
# live network capture; there is no musl libpcap). amd64 is the full build (Sigma, live capture
# through libpcap, loaded when the network source starts: the deb recommends libpcap0.8).
# Builds the release binary first through cross/build.sh (a no-op when it is up to date; the same
# size flags as the edge builds) into $CARGO_TARGET_DIR/<triple>/release/. cargo-deb and
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
arch="${ARCH:-amd64}"
case "$arch" in
  amd64) triple=x86_64-unknown-linux-gnu rpm_arch=x86_64 features="" deb_variant=(--variant amd64) ;;
  arm64) triple=aarch64-unknown-linux-musl rpm_arch=aarch64 features="--no-default-features --features sigma,ebpf,collect" deb_variant=() ;;
  *) echo "packaging: ARCH=$arch: only amd64 and arm64" >&2; exit 2 ;;
esac

need_tool() { # cargo subcommand binary, crate
  if ! command -v "$1" >/dev/null; then
    echo "packaging: $1 missing, installing it into $tools (cargo install --locked $2)" >&2
    "$CARGO" install --locked --quiet --root "$tools" "$2" >&2
  fi
}

build_binary() {
  local out
  out="$(PROFILE=release FEATURES="$features" ./cross/build.sh "$triple")"
  grep -q "^size $triple " <<<"$out" || { echo "packaging: no $triple build (see above)" >&2; exit 1; }
  # The man page, gzipped reproducibly beside the binary ("target/release/..." in the metadata,
  # which both tools read as target/<triple>/release/... with --target).
  gzip -9nc packaging/man/picket.8 > "$target_dir/$triple/release/picket.8.gz"
}

case "${1:-}" in
  deb)
    need_tool cargo-deb cargo-deb
    build_binary
    out="$target_dir/debian/picket_${version}_${arch}.deb"
    mkdir -p "$target_dir/debian"
    # the release profile strips
    "$CARGO" deb -p picket "${deb_variant[@]}" --no-build --no-strip --target "$triple" --output "$out" >&2
    echo "$out"
    ;;
  rpm)
    need_tool cargo-generate-rpm cargo-generate-rpm
    build_binary
    out="$target_dir/generate-rpm/picket-${version}.${rpm_arch}.rpm"
    mkdir -p "$target_dir/generate-rpm"
    "$CARGO" generate-rpm -p agent/picket --target "$triple" --target-dir "$target_dir" -o "$out" >&2
    echo "$out"
    ;;
  *)
    echo "usage: [ARCH=amd64|arm64] $0 deb|rpm" >&2
    exit 2
    ;;
esac
