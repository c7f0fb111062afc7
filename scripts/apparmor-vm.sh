#!/usr/bin/env bash
# berth's AppArmor support, tested on a kernel that has AppArmor.
#
#   scripts/apparmor-vm.sh        (as root, after `cargo build --workspace --bins`)
#
# This machine's kernel has no AppArmor, so here berth-runtime and berthd can only refuse a
# profile. This script boots Debian's kernel (linux-image-amd64, AppArmor on) under QEMU with
# software emulation (no KVM needed), sharing this machine's root filesystem read-only through
# virtme-ng (from PyPI). Inside the VM it starts a registry on the VM's own loopback with the
# fixture busybox, and runs `critest_apparmor` (cri/tests/critest/): critest's AppArmor specs
# (an unloaded profile is refused; a profile denying writes stops `touch`; an auditing one lets
# it through) and berth's default profile, against a real berthd and berth-runtime, on pure
# cgroup v2; then `security_opt_like_docker` (cli/tests/containers.rs): `berth run`'s
# `--security-opt` and its default profile. scripts/test.sh runs it after the main suite. It
# takes about two minutes.
#
# Environment: BERTH_FIXTURES (default /var/cache/berth-fixtures), BERTH_SHARED.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FIXTURES=${BERTH_FIXTURES:-/var/cache/berth-fixtures}
T0=$(date +%s)
log() { printf '[apparmor-vm +%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { printf '[apparmor-vm] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
[ -d "$FIXTURES/oci/busybox" ] || die "no fixtures in $FIXTURES: run scripts/setup.sh"

# shellcheck source=scripts/apt.sh
. "$ROOT/scripts/apt.sh"
apt_install qemu-system-x86 linux-image-amd64 apparmor busybox-static docker-registry skopeo jq iproute2
VNG_VERSION=1.42
if ! python3 -c "import importlib.metadata as m; assert m.version('virtme-ng') == '$VNG_VERSION'" 2>/dev/null; then
  log "pip install virtme-ng==$VNG_VERSION"
  python3 -m pip install -q --disable-pip-version-check "virtme-ng==$VNG_VERSION" </dev/null >&2
fi
VNG=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/vng
[ -x "$VNG" ] || die "virtme-ng's vng is not at $VNG"
KERNEL=$(ls -v /boot/vmlinuz-*-amd64 2>/dev/null | tail -n 1)
[ -n "$KERNEL" ] || die "no Debian kernel in /boot (apt-get install linux-image-amd64)"

log "building the test binaries (nothing to do after the main build)"
test_binary() { # PACKAGE NAME: the path of PACKAGE's test binary NAME
  (cd "$ROOT" && cargo test -p "$1" --test "$2" --no-run --message-format=json </dev/null 2>/dev/null |
    jq -r --arg n "$2" 'select(.executable != null and .target.name == $n) | .executable' | tail -n 1)
}
CRITEST=$(test_binary berth-cri critest)
CONTAINERS=$(test_binary berth-cli containers)
[ -x "$CRITEST" ] && [ -x "$CONTAINERS" ] || die "no test binaries"

# The VM sees this machine's files read-only (with /var/cache hidden), but for this directory.
W=$(mktemp -d /tmp/berth-apparmor-vm.XXXXXX)
trap 'rm -rf "$W"' EXIT
cp -a "$FIXTURES/oci/busybox" "$W/busybox"
cat > "$W/inside.sh" <<EOF
#!/bin/bash
# In the VM: its own loopback, a registry on it, the test on a tmpfs (overlayfs cannot have its
# upper layer on the shared root).
exec > "$W/out.txt" 2>&1
echo 1 > "$W/rc"
set -x
ip link set lo up
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security
cat /sys/module/apparmor/parameters/enabled
mkdir -p /run/t && mount -t tmpfs tmpfs /run/t
mkdir -p /run/t/reg
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /run/t/reg\nhttp:\n  addr: 127.0.0.1:5000\n' > /run/t/reg.yml
setsid docker-registry serve /run/t/reg.yml > /run/t/reg.log 2>&1 < /dev/null &
for _ in \$(seq 1 100); do curl -fsS -o /dev/null http://127.0.0.1:5000/v2/ && break; sleep 0.3; done
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$W/busybox:latest" docker://127.0.0.1:5000/library/busybox:latest
set +x
export TMPDIR=/run/t BERTH_TEST_REGISTRY=127.0.0.1:5000
# Each in its package's directory, as cargo runs them.
(cd "$ROOT/cri" && "$CRITEST" critest_apparmor --exact --nocapture) &&
  (cd "$ROOT/cli" && "$CONTAINERS" security_opt_like_docker --exact)
echo \$? > "$W/rc"
EOF
chmod +x "$W/inside.sh"

log "booting $(basename "$KERNEL") under QEMU (emulated) for critest_apparmor, security_opt_like_docker"
"$VNG" --run "$KERNEL" --user root --disable-kvm --disable-microvm --memory 4G --cpus 2 \
  --rwdir "$W" -- "$W/inside.sh" </dev/null > "$W/console.log" 2>&1 || true
cat "$W/out.txt" 2>/dev/null || { tail -n 30 "$W/console.log" | strings; die "the VM did not run the test"; }
rc=$(cat "$W/rc")
[ "$rc" = 0 ] && log "passed" || log "failed (exit $rc)"
exit "$rc"
