#!/usr/bin/env bash
# A release berth-runtime linked statically (glibc and libseccomp): no dynamic loader work at
# each start, ~0.7 ms less per `berth-runtime` invocation on the benchmark machine. Prints the
# path of the binary.
#
#   scripts/build-static.sh            (needs Debian libseccomp-dev for libseccomp.a)
#
# The target triple is explicit so that RUSTFLAGS (crt-static) apply to the runtime and its
# dependencies only, not to build scripts and proc macros, which must stay dynamic.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
export LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=${LIBSECCOMP_LIB_PATH:-/usr/lib/$(uname -m)-linux-gnu}
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release -q -p berth-runtime --target "$TRIPLE" >&2
echo "$PWD/target/$TRIPLE/release/berth-runtime"
