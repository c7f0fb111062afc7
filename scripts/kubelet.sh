#!/usr/bin/env bash
# Builds the kubelet that cri/tests/kubelet.rs runs on berthd, once (scripts/setup.sh calls it):
#
#   scripts/kubelet.sh          (as root; Debian bookworm; ~6 min on 2 cores, then cached)
#
# Debian 12 packages no kubelet, but its `kubernetes` source package (which builds only
# kubectl there) is the whole of Kubernetes 1.20 with its Go dependencies vendored. This
# fetches it with apt (deb-src lines in a private apt directory: the machine's own sources and
# lists are not touched; apt checks the files against Debian's signed index), unpacks it with
# Debian's patches, and builds cmd/kubelet with Debian's Go, offline, as Debian's packaging
# builds kubectl. Kubelet 1.20 speaks CRI v1alpha2 and sends the socket's path as the HTTP/2
# authority: both are what berthd must accept from the kubelets of that time.
#
# Output: $BERTH_KUBELET (default /var/cache/berth-k8s/kubelet). The sources and the Go build
# cache are removed afterwards.
set -euo pipefail
shopt -s inherit_errexit

OUT=${BERTH_KUBELET:-/var/cache/berth-k8s/kubelet}
T0=$(date +%s)
log() { printf '[kubelet +%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { printf '[kubelet] ERROR: %s\n' "$*" >&2; exit 1; }

if [ -x "$OUT" ] && "$OUT" --version 2>/dev/null | grep -q '^Kubernetes v1\.'; then
  log "present: $OUT ($("$OUT" --version))"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root (apt)"
for c in apt-get dpkg-source go make rsync; do
  command -v "$c" >/dev/null || die "$c not found (scripts/setup.sh installs what this needs)"
done

WORK=$(dirname "$OUT")/build.$$
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/sources.list.d"
cat > "$WORK/apt/sources.list.d/debian-src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
APT=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$WORK/apt/sources.list.d"
     -o "Dir::State::Lists=$WORK/apt/lists" -o APT::Sandbox::User=root)
log "apt-get source kubernetes (Debian 12)"
apt-get "${APT[@]}" update -qq </dev/null
(cd "$WORK" && apt-get "${APT[@]}" source --download-only -qq kubernetes </dev/null)
# (dpkg-source warns that it cannot check the .dsc's signature without Debian's developer
# keyring: apt checked the files against the signed index already.)
(cd "$WORK" && dpkg-source -x ./kubernetes_*.dsc src >"$WORK/dpkg-source.log" 2>&1) \
  || { cat "$WORK/dpkg-source.log" >&2; die "dpkg-source -x failed"; }
# "1.20.5+really1.20.2-1.1+deb12u1" is 1.20.2.
VERSION=v$(sed -n 's/^Version: \([0-9.]*+really\)\{0,1\}\([0-9.]*\).*/\2/p' "$WORK"/kubernetes_*.dsc)

log "make WHAT=cmd/kubelet ($VERSION; several minutes)"
(cd "$WORK/src" && env HOME="$WORK/home" GOCACHE="$WORK/gocache" GOFLAGS= CGO_ENABLED=0 \
   KUBE_GIT_VERSION="$VERSION" KUBE_GIT_TREE_STATE=clean \
   make WHAT=cmd/kubelet </dev/null >"$WORK/build.log" 2>&1) \
  || { tail -30 "$WORK/build.log" >&2; die "kubelet build failed"; }
mkdir -p "$(dirname "$OUT")"
install -m 755 "$WORK/src/_output/bin/kubelet" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "built $OUT ($("$OUT" --version))"
