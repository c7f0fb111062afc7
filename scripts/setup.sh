#!/usr/bin/env bash
# Make this machine ready to build and test berth. Idempotent, and fast when all is present.
#
#   scripts/setup.sh            (as root; Debian bookworm)
#
# 1. Debian packages: the peers the tests compare with (runc, crun, podman, containerd, skopeo,
#    umoci, CNI plugins, iptables), build needs (libseccomp-dev, pkg-config, protobuf-compiler),
#    tools (hyperfine, jq, busybox-static, docker-registry, curl) and the clients of the CRI
#    streaming tests (Go with spdystream, Python with websocket). apt runs only when something
#    is missing.
# 2. cargo-nextest (installed with `cargo install --locked` only when missing).
# 3. The offline fixtures (busybox bundle, busybox/nginx/pause OCI layouts), built with
#    ../shared/fixtures/build.sh into $BERTH_FIXTURES (default /var/cache/berth-fixtures),
#    only when $BERTH_FIXTURES/fixtures.env is missing.
# 4. A kubelet (Kubernetes 1.20 from Debian 12's source package) for cri/tests/kubelet.rs:
#    scripts/kubelet.sh, into /var/cache/berth-k8s/kubelet, only when it is missing; skipped
#    with BERTH_SETUP_KUBELET=0 (scripts/demo.sh does not need it).
#
# ../shared is found beside the repository's root (CI clones the repo next to shared/);
# BERTH_SHARED overrides it.
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${BERTH_SHARED:-$(realpath -m "$ROOT/../shared")}
FIXTURES=${BERTH_FIXTURES:-/var/cache/berth-fixtures}
T0=$(date +%s)
log() { printf '[setup +%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (containers, cgroups, apt)"

PKGS=(
  runc crun podman containerd skopeo umoci          # peers the runtime is compared with / driven by
  containernetworking-plugins iptables uidmap       # pod networking, user namespaces
  libseccomp-dev pkg-config protobuf-compiler gcc   # build needs (libseccomp crate, CRI protos)
  hyperfine jq busybox-static docker-registry curl  # benchmarks, scripts, fixtures
  procps util-linux iproute2                        # pgrep, unshare/nsenter, ip
  golang-go golang-github-docker-spdystream-dev     # the CRI streaming tests' SPDY client
  python3 python3-websocket                         # and their WebSocket client
  make rsync dpkg-dev                               # building the kubelet (scripts/kubelet.sh)
  apparmor                                          # apparmor_parser: the CRI's default profile
)
# shellcheck source=scripts/apt.sh
. "$ROOT/scripts/apt.sh"
apt_install "${PKGS[@]}"

export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || die "cargo not found (install the Rust toolchain)"
if ! cargo nextest --version >/dev/null 2>&1; then
  log "cargo install --locked cargo-nextest"
  cargo install --locked cargo-nextest </dev/null
else
  log "cargo-nextest present"
fi

if [ -f "$FIXTURES/fixtures.env" ] && [ -f "$FIXTURES/busybox/bundle/config.json" ]; then
  log "fixtures present in $FIXTURES"
else
  [ -x "$SHARED/fixtures/build.sh" ] || [ -f "$SHARED/fixtures/build.sh" ] \
    || die "fixtures missing in $FIXTURES and no $SHARED/fixtures/build.sh (set BERTH_SHARED)"
  log "building fixtures into $FIXTURES"
  bash "$SHARED/fixtures/build.sh" "$FIXTURES" </dev/null
fi
# 4. A kubelet for cri/tests/kubelet.rs, built from Debian's Kubernetes source (~5 min, once);
#    not for the demo (BERTH_SETUP_KUBELET=0).
if [ "${BERTH_SETUP_KUBELET:-1}" != 0 ]; then
  bash "$ROOT/scripts/kubelet.sh" </dev/null \
    || log "WARNING: no kubelet was built; cri/tests/kubelet.rs will fail (see above)"
fi

log "ready (fixtures: $FIXTURES)"
