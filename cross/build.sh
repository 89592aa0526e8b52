#!/usr/bin/env bash
# Cross builds of picket for edge devices (cross/README.md).
#
#   cross/build.sh [TARGET...]     default: the four targets below
#
#   aarch64-unknown-linux-musl      static
#   armv7-unknown-linux-musleabihf  static
#   aarch64-unknown-linux-gnu       dynamic (glibc)
#   armv7-unknown-linux-gnueabihf   dynamic (glibc)
#
# Each target is built with the `edge` profile (root Cargo.toml: release with opt-level "z", fat LTO,
# panic abort, strip) and `--no-default-features`: no Sigma, no live network source (full builds
# load libpcap with dlopen when it starts; static musl binaries cannot; `replay --format pcap` works).
# x86_64-unknown-linux-gnu and x86_64-unknown-linux-musl (static, non-PIE; C by the host gcc) are
# accepted too (host, for the size table and x86 devices without glibc).
#
# Needs rustup (rust-std for the target: `rustup target add`, tried here) and Debian's cross gcc
# for the C parts (bundled SQLite, ring) and the link: gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf
# (scripts/test-deps.sh installs them); armv7 musl needs arm-linux-musleabihf-gcc. A target whose
# rust-std or cross gcc cannot be had is skipped with a loud SKIP line and the script still exits 0,
# so the rest of `make test` runs; a build that fails exits 1.
#
# Environment: CARGO_TARGET_DIR (default ./target), PROFILE (edge), FEATURES (cargo flags; "" for
# the default features; unset: --no-default-features), SIZE_FLAGS=0 leaves out the size flags below
# (for measuring), BUILD_STD=0 leaves out -Zbuild-std (below), EXTRA_RUSTFLAGS are added to the
# target's rustflags (for measuring), INLINE_THRESHOLD (10) is LLVM's inline threshold for x86_64
# package builds (PROFILE=release; below), empty for LLVM's default. packaging/build.sh uses
# PROFILE=release and its own FEATURES.
#
# -Zbuild-std: std is rebuilt from rust-src (`rustup component add rust-src`, tried here) with the
# profile's settings, fat LTO together with picket, and std's `optimize_for_size` feature; panics
# lose their location (PROFILE=release) or their message too (edge; see below). It is an
# unstable cargo flag, enabled on the stable toolchain with RUSTC_BOOTSTRAP=1 (as Rust-for-Linux
# does), so a new toolchain may change or break it: then BUILD_STD=0. Without rust-src the build
# goes on without it, with a loud "***" line, and the binaries are ~0.3-0.5 MB larger.
# Binaries: $CARGO_TARGET_DIR/<target>/<profile>/picket. Prints one "size <target> <bytes> <path>"
# line per built target.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
CARGO="${CARGO:-cargo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
PROFILE="${PROFILE:-edge}"
read -r -a FEATURES <<<"${FEATURES---no-default-features}"
SIZE_FLAGS="${SIZE_FLAGS:-1}"
INLINE_THRESHOLD="${INLINE_THRESHOLD-10}"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
  aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

# SQLite features picket never uses (full-text search, R-tree, dbstat, stat4, soundex, extension
# loading; not measured on their own). `-U` comes after libsqlite3-sys's own `-D`.
sqlite_small="-USQLITE_ENABLE_FTS3 -USQLITE_ENABLE_FTS3_PARENTHESIS -USQLITE_ENABLE_FTS5 \
-USQLITE_ENABLE_RTREE -USQLITE_ENABLE_DBSTAT_VTAB -USQLITE_ENABLE_STAT4 -USQLITE_SOUNDEX \
-USQLITE_ENABLE_LOAD_EXTENSION -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_DEPRECATED \
-DSQLITE_OMIT_SHARED_CACHE -DSQLITE_DEFAULT_PCACHE_INITSZ=0"

BUILD_STD="${BUILD_STD:-1}"
std_env=()
if [ "$BUILD_STD" = 1 ] && [ "$SIZE_FLAGS" = 1 ]; then
  src="$(rustc --print sysroot 2>/dev/null)/lib/rustlib/src/rust/library"
  if [ ! -f "$src/std/Cargo.toml" ]; then
    echo "cross: rustup component add rust-src" >&2
    out="$(rustup component add rust-src 2>&1)" || true
  fi
  if [ -f "$src/std/Cargo.toml" ]; then
    std_env=(RUSTC_BOOTSTRAP=1 CARGO_UNSTABLE_BUILD_STD=std,panic_abort
      CARGO_UNSTABLE_BUILD_STD_FEATURES=optimize_for_size)
  else
    echo "*** cross: building without -Zbuild-std: rust-src could not be installed (binaries ~0.3-0.5 MB larger; x86_64 misses the size bars):" >&2
    printf '%s\n' "${out:-no $src}" | grep -iE 'error|caused|status|no ' | head -3 | sed 's/^/***   /' >&2
  fi
fi

skipped=()
failed=()
for t in "${targets[@]}"; do
  case "$t" in
    aarch64-*) gcc=aarch64-linux-gnu-gcc ;;
    # 32-bit glibc and musl headers disagree (time_t, off_t): armv7 musl needs a musl cross gcc
    # (musl-cross-make's; Debian has none).
    armv7-*-musl*) gcc=arm-linux-musleabihf-gcc ;;
    armv7-*) gcc=arm-linux-gnueabihf-gcc ;;
    x86_64-unknown-linux-gnu | x86_64-unknown-linux-musl) gcc=gcc ;;
    *) echo "cross: unknown target $t" >&2; exit 2 ;;
  esac
  if ! rustup target list --installed 2>/dev/null | grep -qx "$t"; then
    echo "cross: rustup target add $t" >&2
    if ! out="$(rustup target add "$t" 2>&1)"; then
      echo "*** SKIP: $t: rustup could not install rust-std for it:" >&2
      printf '%s\n' "$out" | grep -iE 'error|caused|status' | head -3 | sed 's/^/***   /' >&2
      skipped+=("$t")
      continue
    fi
  fi
  if ! command -v "$gcc" >/dev/null; then
    echo "*** SKIP: $t: $gcc missing (scripts/test-deps.sh installs the Debian ones)" >&2
    skipped+=("$t")
    continue
  fi
  u="$(echo "$t" | tr 'a-z-' 'A-Z_')"
  l="${t//-/_}"
  envs=()
  # (Not for the host: its linker setting also applies to build scripts, which would then be
  # rebuilt each time the host and a cross target alternate.)
  case "$t" in
    x86_64-unknown-linux-gnu) ;;
    x86_64-unknown-linux-musl) envs+=("CC_$l=gcc" "AR_$l=ar") ;;
    *) envs+=("CC_$l=$gcc" "AR_$l=${gcc%-gcc}-ar") ;;
  esac
  rf=""
  sqlite=""
  case "$t" in
    *-musl*)
      # rust-lld links a static, non-PIE executable against rust-std's own musl (1.2.5): no
      # dynamic relocations at all (gcc would make a static-pie with ~300 KB of them, and
      # Debian's ld ignores -z pack-relative-relocs there). The C parts are compiled by Debian's
      # glibc cross gcc (same kernel ABI on aarch64), so SQLite must not use glibc's *64
      # aliases (open64...), which musl 1.2.4+ no longer exports.
      rf="-C linker=rust-lld -C linker-flavor=ld.lld"
      # x86_64 musl defaults to a static-pie (relocated at start, ~0.4 MB of relocations).
      [ "$t" != x86_64-unknown-linux-musl ] || rf="$rf -C relocation-model=static"
      sqlite="-DSQLITE_DISABLE_LFS"
      ;;
    x86_64-unknown-linux-gnu) ;;
    *) envs+=("CARGO_TARGET_${u}_LINKER=$gcc") ;;
  esac
  if [ "$SIZE_FLAGS" = 1 ]; then
    # No .eh_frame: a linker script discards it (panic = "abort" never unwinds; a panic still
    # prints its message, RUST_BACKTRACE just gets no frames). -C force-unwind-tables=no does not
    # do it: with LTO, std's module flag keeps an entry for every function.
    # musl (rust-lld): also identical code folding. x86_64 glibc edge builds: RELR packs the
    # PIE's relative relocations (~300 KB; the binary then needs glibc >= 2.36; Debian's ld
    # ignores it for aarch64). Not for PROFILE=release, the packages: they must install on
    # glibc 2.34/2.35 hosts (RHEL 9, Ubuntu 22.04).
    relr=""
    [ "$PROFILE" = release ] || relr=" -C link-arg=-Wl,-z,pack-relative-relocs"
    case "$t" in
      *-musl*) rf="$rf -C link-arg=--icf=all -C link-arg=$repo/cross/no-eh-frame.ld" ;;
      x86_64-*) rf="$rf -C link-arg=-Wl,--icf=all -C link-arg=-Wl,-T,$repo/cross/no-eh-frame.ld$relr" ;;
      *) rf="$rf -C link-arg=-Wl,-T,$repo/cross/no-eh-frame.ld" ;;
    esac
    envs+=("CFLAGS_$l=-fno-asynchronous-unwind-tables -fno-unwind-tables")
    sqlite="$sqlite $sqlite_small"
    # x86_64 packages: LLVM inlines only the smallest calls (its inline threshold at 10; opt-level
    # "s" alone inlines more). x86 code is ~27 % larger than AArch64's for the same source (no
    # machine outliner, 4-byte frame displacements), and this is what brings the amd64 package
    # under the 6 MB bar (-0.42 MB) at a measured ~12 % more CPU in `picket replay` (opt-level
    # "z" doubles it) and within noise under the load harness (docs/BENCHMARKS.md, Size). The
    # aarch64 package is under the bar without it. INLINE_THRESHOLD= (empty) leaves LLVM's default.
    if [ "$PROFILE" = release ] && [[ "$t" == x86_64-* ]] && [ -n "$INLINE_THRESHOLD" ]; then
      rf="$rf -C llvm-args=-inline-threshold=$INLINE_THRESHOLD"
    fi
  fi
  if [ ${#std_env[@]} -gt 0 ]; then
    envs+=("${std_env[@]}")
    if [ "$PROFILE" = edge ]; then
      # Edge builds: a panic aborts at once on a trap instruction, without its message: no panic
      # formatting code (x86_64 -0.27 MB, needed for the 4 MB bar).
      rf="$rf -Zunstable-options -Cpanic=immediate-abort"
    else
      # The message is still printed, without its location (file:line:column): -0.17 MB.
      rf="$rf -Zlocation-detail=none"
    fi
  fi
  rf="$rf ${EXTRA_RUSTFLAGS:-}"
  rf="${rf% }"
  [ -z "$rf" ] || envs+=("CARGO_TARGET_${u}_RUSTFLAGS=${rf# }")
  [ -z "$sqlite" ] || envs+=("LIBSQLITE3_FLAGS=${sqlite# }")
  echo "cross: building $t (profile $PROFILE, ${FEATURES[*]}${std_env:+, -Zbuild-std})" >&2
  start=$(date +%s)
  if ! env "${envs[@]}" "$CARGO" build --locked --profile "$PROFILE" -p picket "${FEATURES[@]}" \
    --target "$t" >&2; then
    echo "cross: BUILD FAILED for $t" >&2
    failed+=("$t")
    continue
  fi
  bin="$CARGO_TARGET_DIR/$t/$PROFILE/picket"
  echo "cross: $t built in $(($(date +%s) - start)) s: $(file -b "$bin" | cut -d, -f1-2,5-)" >&2
  echo "size $t $(stat -c %s "$bin") $bin"
done

[ ${#skipped[@]} -eq 0 ] || echo "*** cross: SKIPPED ${skipped[*]} (see above)" >&2
if [ ${#failed[@]} -gt 0 ]; then
  echo "cross: FAILED ${failed[*]}" >&2
  exit 1
fi
