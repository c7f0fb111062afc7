#!/usr/bin/env bash
# Image pull: pull + unpack of the nginx fixture from the local registry into a ready-to-mount
# snapshot, cold (empty store) and warm (everything present), in one hyperfine run:
#   berth          imagestore's pull (examples/pull.rs, or the `berth` CLI once it exists)
#   ctr            Debian containerd's `ctr image pull --plain-http` (unpacks into its
#                  overlayfs snapshotter), against a private containerd started here
#   skopeo+umoci   `skopeo copy` into an OCI layout + `umoci unpack` into a bundle
#
#   benches/pull.sh [RUNS]          (as root; default 10 runs each)
#
# Needs the fixture registry (BERTH_TEST_REGISTRY, default 127.0.0.1:5000; see
# ../shared/fixtures/registry.sh) and hyperfine, containerd, skopeo, umoci. Writes
# target/bench/pull.json (hyperfine export) and the "Image pull" section of
# docs/benchmarks.md (between the image-pull markers; the rest of the file is left alone).
#
# Cold means: berth's store root removed; containerd's image removed with `--sync` (its GC
# then drops content and snapshots: checked before measuring); skopeo's layout and umoci's
# bundle removed. Warm keeps stores; umoci has no snapshot cache, so its warm run unpacks
# again (into a removed bundle dir). All stores live on the same filesystem.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
REG=${BERTH_TEST_REGISTRY:-127.0.0.1:5000}
IMAGE=$REG/library/nginx:latest
for c in hyperfine containerd ctr skopeo umoci jq curl; do
  command -v "$c" >/dev/null || { echo "needs $c (scripts/setup.sh)" >&2; exit 1; }
done
curl -fsS -o /dev/null "http://$REG/v2/" || { echo "no fixture registry at $REG" >&2; exit 1; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
# The imagestore example pulls into a given root; switch to the `berth` CLI once it has a
# root flag (the timings would then include its start-up too).
cargo build --release -q -p berth-imagestore --example pull
BERTH=$CARGO_TARGET_DIR/release/examples/pull
OUT=$PWD/target/bench; mkdir -p "$OUT"

WORK=$(mktemp -d /var/tmp/berth-pull-bench.XXXXXX)
CTRD_PID=
cleanup() {
  if [ -n "$CTRD_PID" ]; then
    kill "$CTRD_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$CTRD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$CTRD_PID" 2>/dev/null || true
  fi
  # containerd leaves nothing mounted for pulls, but be safe before removing its root.
  grep -o " $WORK[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A private containerd: own root, state, socket; no CRI.
mkdir -p "$WORK/ctrd"
cat > "$WORK/ctrd/config.toml" <<EOF
version = 2
root = "$WORK/ctrd/root"
state = "$WORK/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/ctrd/containerd.sock"
[ttrpc]
  address = "$WORK/ctrd/containerd.sock.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/ctrd/opt"
EOF
containerd --config "$WORK/ctrd/config.toml" > "$WORK/ctrd/log" 2>&1 &
CTRD_PID=$!
CTR="ctr -a $WORK/ctrd/containerd.sock -n bench"
for _ in $(seq 100); do $CTR version >/dev/null 2>&1 && break; sleep 0.1; done
$CTR version >/dev/null || { tail "$WORK/ctrd/log" >&2; exit 1; }

# Check once that the cold preparation really empties containerd.
$CTR image pull --plain-http "$IMAGE" >/dev/null
$CTR image rm --sync "$IMAGE" >/dev/null
left=$($CTR content ls -q | wc -l)$($CTR snapshots ls | tail -n +2 | wc -l)
[ "$left" = "00" ] || { echo "containerd kept content/snapshots after rm --sync: $left" >&2; exit 1; }

B=$WORK/berth L=$WORK/layout U=$WORK/bundle
SKOPEO="skopeo --insecure-policy copy -q --src-tls-verify=false docker://$IMAGE oci:$L:latest"
UMOCI="umoci unpack --image $L:latest $U"
hyperfine --warmup 1 --runs "$RUNS" --export-json "$OUT/pull.json" \
  -n berth-cold --prepare "rm -rf $B" "$BERTH $B $IMAGE" \
  -n ctr-cold --prepare "$CTR image rm --sync $IMAGE >/dev/null 2>&1 || true" \
    "$CTR image pull --plain-http $IMAGE" \
  -n skopeo-umoci-cold --prepare "rm -rf $L $U" "sh -c '$SKOPEO && $UMOCI'" \
  -n berth-warm --prepare "$BERTH $B $IMAGE >/dev/null" "$BERTH $B $IMAGE" \
  -n ctr-warm --prepare "$CTR image pull --plain-http $IMAGE >/dev/null" \
    "$CTR image pull --plain-http $IMAGE" \
  -n skopeo-umoci-warm --prepare "rm -rf $U; $SKOPEO" "sh -c '$SKOPEO && $UMOCI'"

# Results: medians, ratios, and the docs section.
python3 - "$OUT/pull.json" docs/benchmarks.md "$IMAGE" <<'PY'
import json, os, platform, statistics, sys, time
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
med = {k: statistics.median(v["times"]) * 1000 for k, v in res.items()}
rows = []
for kind in ("cold", "warm"):
    for tool in ("berth", "ctr", "skopeo-umoci"):
        k = f"{tool}-{kind}"
        r = res[k]
        t = sorted(x * 1000 for x in r["times"])
        rows.append(f"| {k} | {med[k]:.1f} | {t[0]:.1f} | {t[-1]:.1f} | {len(t)} "
                    f"| {med[k] / med['ctr-' + kind]:.2f} |")
ratio = med["berth-cold"] / med["ctr-cold"]
print("\n".join(rows))
print(f"berth cold / ctr cold = {ratio:.2f} (target <= 0.50)")
section = f"""<!-- image-pull:begin -->
## Image pull

Pull + unpack of the nginx fixture ({sys.argv[3]}, 3 layers) from the local registry into a
ready-to-mount snapshot. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on
{platform.node()} ({os.cpu_count()} cores, kernel {platform.release()}), command:
`benches/pull.sh` (hyperfine, same run for all tools; containerd
{os.popen('containerd --version').read().split()[2]}, skopeo + umoci from Debian).

| command | median (ms) | min (ms) | max (ms) | runs | ratio to ctr |
|---|---:|---:|---:|---:|---:|
""" + "\n".join(rows) + f"""

berth cold is **{ratio:.2f}x** containerd's time (target: at most 0.5x). Warm, berth fetches
only the manifest and reads its database: no blob is downloaded or opened.
<!-- image-pull:end -->
"""
path = sys.argv[2]
text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
b, e = "<!-- image-pull:begin -->", "<!-- image-pull:end -->"
if b in text and e in text:
    text = text[:text.index(b)] + section.rstrip("\n") + text[text.index(e) + len(e):]
else:
    text = text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
PY
