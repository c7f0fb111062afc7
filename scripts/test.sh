#!/usr/bin/env bash
# The project's test command (what CI runs, via .ci/run):
#
#   scripts/test.sh [extra cargo-nextest args…]        (as root)
#
# 1. scripts/setup.sh: Debian packages, cargo-nextest, fixtures (fast when present).
# 2. The fixture registry on 127.0.0.1 (for imagestore's pull tests), started and filled if
#    nothing listens on $BERTH_TEST_REGISTRY (default 127.0.0.1:5000), stopped at the end if
#    this script started it.
# 3. `cargo fmt --check` and `cargo clippy -- -D warnings` (a style or lint slip fails the run),
#    then one debug build of every binary and test (`cargo build` in the dev profile, which is what
#    nextest's test binaries use anyway; a release build would add ~2 min on 2 cores for a few ms
#    per container start). BERTH_PROFILE=release builds and tests the release binary instead.
# 4. `cargo nextest run --workspace --profile ci` (summary line at the end); then runc's own
#    integration suite against berth-runtime (scripts/runc-suite.sh: fails on a test that passes
#    with runc, fails with berth-runtime and is not in scripts/runc-suite.known; ~5 min); then,
#    on a host without AppArmor, critest's AppArmor specs in a VM (scripts/apparmor-vm.sh), and
#    the runtime's tests as on pure cgroup v2 and pure v1 hosts.
# 5. Leftovers: fails if the run left a mount, cgroup or process of berth's behind that was not
#    there before it.
#
# Environment: BERTH_FIXTURES (default /var/cache/berth-fixtures), BERTH_TEST_REGISTRY,
# BERTH_RUNTIME (test another runtime, e.g. /usr/sbin/runc), BERTH_PROFILE (debug|release),
# BERTH_SKIP_VM (skip the AppArmor VM), BERTH_SKIP_RUNC_SUITE (skip runc's suite),
# BERTH_RUNC_SUITE_REFERENCE=1 (run runc's suite with runc too, not only with berth-runtime).
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SHARED=${BERTH_SHARED:-$(realpath -m "$ROOT/../shared")}
export BERTH_FIXTURES=${BERTH_FIXTURES:-/var/cache/berth-fixtures}
export BERTH_FIXTURES_ENV=${BERTH_FIXTURES_ENV:-$BERTH_FIXTURES/fixtures.env}
export BERTH_TEST_REGISTRY=${BERTH_TEST_REGISTRY:-127.0.0.1:5000}
export BERTH_PROFILE=${BERTH_PROFILE:-debug}
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
T0=$(date +%s)
log() { printf '[test +%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }

bash scripts/setup.sh </dev/null

# ---------------------------------------------------------------- leftovers
# What berth (or a test of it) might leave: mounts naming berth, cgroup directories below a
# berth cgroup, processes of berth binaries or in a berth cgroup.
leftovers() {
  grep -h 'berth' /proc/mounts | grep -v -e ' /work' | sed 's/^/mount: /' || true
  find /sys/fs/cgroup -mindepth 2 -type d \( -path '*/berth-test/*' -o -path '*/berth-shim-test/*' -o -path '*/berth/*' -o -path '*/berth-bench*' \) \
    2>/dev/null | sed 's/^/cgroup: /' || true
  pgrep -a '^berth' | sed 's/^/process: /' || true
  # Bridges of berthd's tests (bt<n>, see tests-support/src/lib.rs) and of the network tests, with
  # the veths on them.
  ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^(bt[0-9]+|bk[0-9]+|berth[0-9]+|btn[0-9a-z]*)(@|$)' \
    | sed 's/^/link: /' || true
  # The CNI networks of the CRI tests (berth-test-<n>): the bridge plugin's masquerade rules
  # and portmap's per-pod chains name them.
  iptables-save -t nat 2>/dev/null | grep -e 'berth-test-' | sed 's/^/iptables: /' || true
  find /sys/fs/cgroup -maxdepth 2 -type d -name 'berthtest*' 2>/dev/null | sed 's/^/cgroup: /' || true
  # The kubelet of cri/tests/kubelet.rs, its pod cgroups and its pod's logs.
  find /sys/fs/cgroup -maxdepth 2 -type d -name kubepods 2>/dev/null | sed 's/^/kubelet cgroup: /' || true
  pgrep -a -f '^/var/cache/berth-k8s/kubelet ' | sed 's/^/process: /' || true
  ls -d /var/log/pods/*berth-kubelet-test* /var/log/containers/*berth-kubelet-test* 2>/dev/null \
    | sed 's/^/kubelet log: /' || true
  grep -l -e '/berth-test/' -e '/berth-shim-test/' -e ':/berth/' /proc/[0-9]*/cgroup 2>/dev/null \
    | sed 's|/proc/\([0-9]*\)/cgroup|process in a berth cgroup: \1|' || true
}
BEFORE=$(mktemp); AFTER=$(mktemp)
leftovers | sort > "$BEFORE"
[ -s "$BEFORE" ] && { log "already on this machine before the run (ignored):"; sed 's/^/  /' "$BEFORE" >&2; }

# ---------------------------------------------------------------- registry
REG_STARTED=
REG_PORT=${BERTH_TEST_REGISTRY##*:}
cleanup() {
  if [ -n "$REG_STARTED" ]; then
    FIXTURES_REGISTRY_PORT=$REG_PORT bash "$SHARED/fixtures/registry.sh" stop "$REG_STARTED" >/dev/null 2>&1 || true
  fi
  rm -f "$BEFORE" "$AFTER"
}
trap cleanup EXIT
if (exec 3<>"/dev/tcp/127.0.0.1/$REG_PORT") 2>/dev/null; then
  log "fixture registry already on 127.0.0.1:$REG_PORT"
else
  dir=/tmp/berth-reg-$REG_PORT
  log "starting the fixture registry on 127.0.0.1:$REG_PORT ($dir)"
  FIXTURES_REGISTRY_PORT=$REG_PORT bash "$SHARED/fixtures/registry.sh" start "$dir" </dev/null >&2
  REG_STARTED=$dir
  FIXTURES_REGISTRY_PORT=$REG_PORT bash "$SHARED/fixtures/registry.sh" push "$BERTH_FIXTURES" </dev/null >&2
fi

# ---------------------------------------------------------------- build + test
BUILD=()
[ "$BERTH_PROFILE" = release ] && BUILD=(--release)
log "cargo fmt --check; cargo clippy --workspace --all-targets -- -D warnings"
cargo fmt --all --check </dev/null
cargo clippy "${BUILD[@]}" --workspace --all-targets --quiet -- -D warnings </dev/null
log "cargo build ${BUILD[*]} --workspace --bins"
cargo build "${BUILD[@]}" --workspace --bins </dev/null
log "cargo nextest run --workspace --profile ci"
# The kernel settings the kubelet test's kubelet changes (it puts them back itself, unless it
# is killed): saved here and restored after the run whatever happened.
KSYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
          kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
KSAVED=()
for k in "${KSYSCTLS[@]}"; do KSAVED+=("$(cat "/proc/sys/$k")"); done
rc=0
cargo nextest run --workspace --profile ci --no-tests=fail "$@" </dev/null || rc=$?
for i in "${!KSYSCTLS[@]}"; do
  [ "$(cat "/proc/sys/${KSYSCTLS[$i]}")" = "${KSAVED[$i]}" ] && continue
  log "restoring ${KSYSCTLS[$i]} (left changed by a killed kubelet test)"
  echo "${KSAVED[$i]}" > "/proc/sys/${KSYSCTLS[$i]}"
done

# runc's integration suite with berth-runtime (runc's own pass only when asked: its results
# here are in scripts/runc-suite.known; see the script's header).
if [ $# -eq 0 ] && [ -z "${BERTH_SKIP_RUNC_SUITE:-}" ]; then
  log "runc's integration suite (scripts/runc-suite.sh)"
  BERTH_RUNC_SUITE_REFERENCE=${BERTH_RUNC_SUITE_REFERENCE:-0} bash "$ROOT/scripts/runc-suite.sh" \
    "${BERTH_RUNTIME:-${CARGO_TARGET_DIR:-$ROOT/target}/$BERTH_PROFILE/berth-runtime}" </dev/null || rc=$?
fi

# AppArmor on a kernel that has it, which this one has not: critest's AppArmor specs and
# berth's default profile in a VM with Debian's kernel (about two minutes).
if [ $# -eq 0 ] && [ -z "${BERTH_SKIP_VM:-}" ] && [ ! -d /sys/kernel/security/apparmor ]; then
  log "critest's AppArmor specs in a VM whose kernel has AppArmor (scripts/apparmor-vm.sh)"
  bash "$ROOT/scripts/apparmor-vm.sh" </dev/null || rc=$?
fi

# The runtime again as on a pure cgroup v2 host (what most users have): in a private mount
# namespace, this machine's cgroup2 mount (/sys/fs/cgroup/unified) covers /sys/fs/cgroup, so
# layout detection, CLONE_INTO_CGROUP, the eBPF device filter, cgroup.freeze and v2 cleanup all
# run for real. The v1 controllers stay bound to v1 here, so tests of resource limits (the
# `cgroups` file, and the one that reads the memory v1 line) cannot run in this mode; nor do
# the podman and containerd tests, which the v1 pass covers.
if [ $# -eq 0 ] && [ -z "${BERTH_SKIP_V2:-}" ] && [ ! -e /sys/fs/cgroup/cgroup.controllers ] \
   && [ -e /sys/fs/cgroup/unified/cgroup.controllers ]; then
  log "cargo nextest run -p berth-tests as on a pure cgroup v2 host (emulated)"
  unshare -m sh -c 'mount --make-rprivate / && mount --bind /sys/fs/cgroup/unified /sys/fs/cgroup &&
    exec cargo nextest run -p berth-tests --profile ci --no-tests=fail \
      -E "not (binary(/^(cgroups|podman|containerd)$/) | test(without_cgroup_namespace_the_path_is_cgroups_path))"' \
    </dev/null || rc=$?
  # And as on a pure cgroup v1 host: the unified mount detached in a private mount namespace.
  log "cargo nextest run -p berth-tests as on a pure cgroup v1 host (emulated)"
  unshare -m sh -c 'mount --make-rprivate / && umount -l /sys/fs/cgroup/unified &&
    exec cargo nextest run -p berth-tests --profile ci --no-tests=fail \
      -E "binary(/^(cgroups|lifecycle|exec|process)$/)"' \
    </dev/null || rc=$?
fi

# Parents the tests share (/berth-test, and berth-shim's /berth-shim-test, in each hierarchy)
# are removed when empty.
for d in /sys/fs/cgroup/*/berth-test /sys/fs/cgroup/berth-test \
         /sys/fs/cgroup/*/berth-shim-test /sys/fs/cgroup/berth-shim-test; do
  [ -d "$d" ] && rmdir "$d" 2>/dev/null || true
done

# Only what is still there two seconds later counts (a process may be exiting right now).
leftovers | sort > "$AFTER"
NEW=$(comm -13 "$BEFORE" "$AFTER" | grep -v 'registry' || true)
if [ -n "$NEW" ]; then
  sleep 2
  leftovers | sort > "$AFTER"
  NEW=$(comm -12 <(printf '%s\n' "$NEW" | sort) "$AFTER" || true)
fi
if [ -n "$NEW" ]; then
  echo "LEFTOVERS after the test run:" >&2
  printf '%s\n' "$NEW" | sed 's/^/  /' >&2
  [ "$rc" = 0 ] && rc=1
else
  log "no leftovers"
fi
log "done (exit $rc)"
exit "$rc"
