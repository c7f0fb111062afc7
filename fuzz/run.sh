#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s each) with a seed corpus made from
# the fixture images. Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
#   fuzz/run.sh [SECONDS] [TARGET...]        targets: manifest unpack
# Not part of CI: building with sanitizer coverage takes minutes. Crashes are saved under
# fuzz/artifacts/<target>/ and reproduced with: cargo +nightly fuzz run <target> <file>
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-60}; shift || true
TARGETS=("$@"); [ ${#TARGETS[@]} -gt 0 ] || TARGETS=(manifest unpack)
FX=${BERTH_FIXTURES:-/var/cache/berth-fixtures}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

seed() { # TARGET: copy fixture blobs that suit it into corpus/TARGET
  local dir=corpus/$1; mkdir -p "$dir"
  [ -d "$FX/oci" ] || return 0
  for layout in "$FX"/oci/*/; do
    cp -n "$layout/index.json" "$dir/$(basename "$layout")-index.json" 2>/dev/null || true
    for b in "$layout"/blobs/sha256/*; do
      local size; size=$(stat -c %s "$b")
      case $1 in
        manifest) [ "$size" -lt 65536 ] && head -c1 "$b" | grep -q '{' && cp -n "$b" "$dir/" ;;
        unpack) [ "$size" -lt 262144 ] && ! head -c1 "$b" | grep -q '{' && cp -n "$b" "$dir/" ;;
      esac || true
    done
  done
}

for t in "${TARGETS[@]}"; do
  seed "$t"
  echo "== fuzz $t for ${SECS}s"
  # -s none: no sanitizer, so a stable-like build works; libFuzzer still finds panics.
  cargo +nightly fuzz run -s none "$t" "corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048
done
