#!/usr/bin/env bash
# Release binaries linked statically (glibc and libseccomp), what to install for speed and size:
#
#   scripts/build-static.sh            prints the path of berth-runtime
#   scripts/build-static.sh shim       prints the path of berth-shim
#
# berth-runtime: static-pie, no dynamic loader work at each start (~0.7 ms less per invocation
# on the benchmark machine).
# berth-shim: static and not position-independent (relocation-model=static). One shim stays
# resident per container; a PIE binary has its relocated data (~200 KiB of vtables and
# pointers) copied into every shim at start, a non-PIE one shares those pages with all other
# shims through the page cache. Idle shim: 268 KiB anonymous memory instead of 540 KiB. The
# cost is a fixed load address for the shim's own code (no ASLR for it; the libraries it
# links in are in the same image). Needs Debian libseccomp-dev for libseccomp.a.
#
# The target triple is explicit so that RUSTFLAGS (crt-static) apply to these binaries and
# their dependencies only, not to build scripts and proc macros, which must stay dynamic.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
export LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=${LIBSECCOMP_LIB_PATH:-/usr/lib/$(uname -m)-linux-gnu}
case "${1:-runtime}" in
  runtime)
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
      cargo build --release -q -p berth-runtime --target "$TRIPLE" >&2
    echo "$PWD/target/$TRIPLE/release/berth-runtime" ;;
  shim)
    # Its own target directory: other RUSTFLAGS would rebuild every dependency each time.
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
      cargo build --release -q -p berth-shim --target "$TRIPLE" --target-dir target/static-shim >&2
    echo "$PWD/target/static-shim/$TRIPLE/release/berth-shim" ;;
  *) echo "usage: $0 [runtime|shim]" >&2; exit 2 ;;
esac
