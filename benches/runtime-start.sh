#!/usr/bin/env bash
# Container start latency: create+start+wait+delete of the busybox fixture running /bin/true,
# `berth-runtime run` against runc and crun from Debian, in the same hyperfine run.
#
#   benches/runtime-start.sh [RUNS]          (as root; default 200 runs each)
#
# Writes target/bench/runtime-start.json (hyperfine export) and prints medians and ratios;
# benches/report.py turns them into docs/benchmarks.md and docs/bench-runtime-start.png.
#
# crun 1.8 refuses this host's hybrid cgroup layout unless /sys/fs/cgroup/unified lists no
# controllers, so the whole measurement runs in a private mount namespace where an empty file is
# bind-mounted over /sys/fs/cgroup/unified/cgroup.controllers. All three runtimes run in that
# same namespace (the host is unchanged), so they see identical conditions.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-200}
FIX=${BERTH_FIXTURES:-/var/cache/berth-fixtures}
[ -f "$FIX/fixtures.env" ] || { echo "fixtures missing in $FIX: run scripts/setup.sh" >&2; exit 1; }
command -v hyperfine >/dev/null && command -v runc >/dev/null && command -v crun >/dev/null \
  || { echo "needs hyperfine, runc and crun: run scripts/setup.sh" >&2; exit 1; }
# The release binary, statically linked (scripts/build-static.sh): what to install for speed.
BERTH=$(bash scripts/build-static.sh)
OUT=$PWD/target/bench; mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/berth-bench.XXXXXX)
# State roots on tmpfs, where each runtime's default lives on a usual host (/run/runc,
# /run/crun, /run/berth-runtime). This VM's /run is on ext4, so the measurement mounts a tmpfs
# there inside its private mount namespace (below).
STATE=$(mktemp -d /tmp/berth-bench-state.XXXXXX)
cleanup() {
  for rt in berth runc crun; do "$BERTH" --root "$STATE/root-$rt" delete -f "bench-$rt" >/dev/null 2>&1 || true; done
  rm -rf "$WORK" "$STATE"
  # An interrupted run can leave the benchmark's cgroup (no process in it): remove it.
  for d in /sys/fs/cgroup/*/berth-bench /sys/fs/cgroup/berth-bench; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done; true
}
trap cleanup EXIT
# The fixture bundle, made to run /bin/true on the fixture rootfs, in a cgroup berth owns.
jq --arg root "$FIX/busybox/bundle/rootfs" \
  '.process.args=["/bin/true"] | .process.terminal=false | .root.path=$root | .root.readonly=true
   | .linux.cgroupsPath="/berth-bench"' "$FIX/busybox/bundle/config.json" > "$WORK/config.json"
touch "$WORK/empty"
cmd() { echo "$1 --root $STATE/root-$2 run --bundle $WORK bench-$2"; }
unshare -m --propagation private sh -c "
  mount --bind $WORK/empty /sys/fs/cgroup/unified/cgroup.controllers &&
  mount -t tmpfs -o size=64m berth-bench-state $STATE &&
  hyperfine -N --warmup 10 --runs $RUNS --export-json $OUT/runtime-start.json \
    -n berth-runtime '$(cmd "$BERTH" berth)' \
    -n crun '$(cmd "$(command -v crun)" crun)' \
    -n runc '$(cmd "$(command -v runc)" runc)'"
python3 benches/report.py runtime-start "$OUT/runtime-start.json"
