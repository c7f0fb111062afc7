#!/usr/bin/env bash
# End to end `run --rm busybox true`, and memory per idle container, in one run each:
#   berth        berth run --rm (berthd + berth-shim + the runtime library), default bridge
#                network (CNI bridge + portmap) and --network none
#   podman       Debian podman 4.3 `podman run --rm` (conmon + runc, CNI bridge network; runc
#                because crun 1.8 refuses this host's hybrid cgroups; nofile/nproc ulimits
#                within the host's hard limits, as podman's defaults are above them here)
#   ctr          Debian containerd 1.6 `ctr run --rm` (containerd-shim-runc-v2 + runc; ctr
#                sets up no network: a new netns with lo only — compare it with --network none)
#
#   benches/container-run.sh [RUNS] [IDLE]     (as root; default 20 runs, 50 idle containers)
#
# Needs the fixture registry (BERTH_TEST_REGISTRY, default 127.0.0.1:5000), hyperfine, podman,
# containerd. Everything runs against private roots under /var/tmp (berthd, containerd and
# podman each get their own store, state and socket), removed at the end.
# Writes target/bench/container-run.json (hyperfine export) and target/bench/memory.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
IDLE=${2:-50}
REG=${BERTH_TEST_REGISTRY:-127.0.0.1:5000}
IMAGE=$REG/library/busybox:latest
for c in hyperfine containerd ctr podman jq curl; do
  command -v "$c" >/dev/null || { echo "needs $c (scripts/setup.sh)" >&2; exit 1; }
done
curl -fsS -o /dev/null "http://$REG/v2/" || { echo "no fixture registry at $REG" >&2; exit 1; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p berth-cri -p berth-cli -p berth-shim
BIN=$CARGO_TARGET_DIR/release
# The shim as installed for production: static, not position-independent (see
# scripts/build-static.sh). BERTH_SHIM=path measures another one (e.g. $BIN/berth-shim).
SHIM=${BERTH_SHIM:-$(bash scripts/build-static.sh shim)}
OUT=$PWD/target/bench; mkdir -p "$OUT"

WORK=$(mktemp -d /var/tmp/berth-run-bench.XXXXXX)
BERTHD_PID= CTRD_PID=
B="$BIN/berth -H unix://$WORK/berthd.sock"
CTR="ctr -a $WORK/ctrd/containerd.sock -n bench"
PODMAN="podman --root $WORK/podman/root --runroot $WORK/podman/run --cgroup-manager cgroupfs --events-backend none --runtime runc"
PODMAN_ULIMITS="--ulimit nofile=$(ulimit -Hn):$(ulimit -Hn) --ulimit nproc=32768:32768"
cleanup() {
  set +e
  if [ -n "$BERTHD_PID" ]; then
    $B ps -aq --no-trunc 2>/dev/null | xargs -r $B rm -f >/dev/null 2>&1
    kill "$BERTHD_PID"; wait "$BERTHD_PID" 2>/dev/null
  fi
  $PODMAN rm -af -t 0 >/dev/null 2>&1
  if [ -n "$CTRD_PID" ]; then
    for c in $($CTR containers ls -q 2>/dev/null); do
      $CTR tasks kill -s KILL "$c" >/dev/null 2>&1; sleep 0.05
      $CTR tasks rm -f "$c" >/dev/null 2>&1; $CTR containers rm "$c" >/dev/null 2>&1
    done
    kill "$CTRD_PID"; wait "$CTRD_PID" 2>/dev/null
  fi
  grep -o " $WORK[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# berthd, private, with its own bridge and subnet.
cat > "$WORK/berth.toml" <<EOF
[daemon]
log_dir = "$WORK/berth-logs"
shim = "$SHIM"
[network]
bridge = "bbench0"
subnet = "10.211.0.0/24"
EOF
BERTH_CONFIG=$WORK/berth.toml "$BIN/berthd" --address "$WORK/berthd.sock" --root "$WORK/berth-root" \
  --state "$WORK/berth-state" --log warn 2> "$WORK/berthd.log" &
BERTHD_PID=$!
for _ in $(seq 100); do [ -S "$WORK/berthd.sock" ] && break; sleep 0.05; done
$B pull -q "$IMAGE" >/dev/null

# containerd, private, no CRI.
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
for _ in $(seq 100); do $CTR version >/dev/null 2>&1 && break; sleep 0.1; done
$CTR image pull --plain-http "$IMAGE" >/dev/null

# podman, private store.
$PODMAN pull -q --tls-verify=false "$IMAGE" >/dev/null

# Sanity: each prints what the container printed.
[ "$($B run --rm "$IMAGE" echo ok)" = ok ]
[ "$($PODMAN run $PODMAN_ULIMITS --rm "$IMAGE" echo ok)" = ok ]
[ "$($CTR run --rm "$IMAGE" sanity echo ok)" = ok ]

hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$OUT/container-run.json" \
  -n "berth run --rm" "$B run --rm $IMAGE true" \
  -n "berth run --rm --network none" "$B run --rm --network none $IMAGE true" \
  -n "podman run --rm" "$PODMAN run $PODMAN_ULIMITS --rm $IMAGE true" \
  -n "podman run --rm --network none" "$PODMAN run $PODMAN_ULIMITS --rm --network none $IMAGE true" \
  -n "ctr run --rm" "bash -c '$CTR run --rm $IMAGE b\$RANDOM\$RANDOM true'"

# Memory per idle container: $IDLE sleeping containers each, then the RSS and PSS of what each
# runtime keeps per container (berth-shim; conmon; containerd-shim-runc-v2).
mem() { # name pattern
  local rss=0 pss=0 n=0
  for p in $(pgrep -f "$2"); do
    grep -q "$WORK" "/proc/$p/cmdline" 2>/dev/null || [ "$1" = ctr ] || continue
    r=$(awk '/^Rss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    s=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    rss=$((rss + r)); pss=$((pss + s)); n=$((n + 1))
  done
  [ "$n" -gt 0 ] || { echo "$1: no processes" ; return; }
  printf '%-8s %3d processes  RSS %6d KiB/container  PSS %6d KiB/container\n' \
    "$1" "$n" $((rss / IDLE)) $((pss / IDLE))
}
for i in $(seq "$IDLE"); do $B run -d --network none "$IMAGE" sleep 3600 >/dev/null; done
for i in $(seq "$IDLE"); do $PODMAN run $PODMAN_ULIMITS -d --network none "$IMAGE" sleep 3600 >/dev/null; done
for i in $(seq "$IDLE"); do $CTR run -d "$IMAGE" idle$i sleep 3600 >/dev/null; done
{
  echo "# $IDLE idle busybox containers each ($(date -u +%F))"
  mem berth "berth-shim.* --id"
  mem podman "conmon .*$WORK"
  mem ctr "containerd-shim-runc-v2 .*-namespace bench"
} | tee "$OUT/memory.txt"

python3 - "$OUT/container-run.json" <<'EOF'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
med = {k: sorted(v["times"])[len(v["times"]) // 2] * 1000 for k, v in r.items()}
for k, v in med.items():
    print(f"{k:34s} median {v:7.1f} ms")
# Like for like: ctr sets up no network (a netns with lo only), so it is compared with the
# --network none runs; with a bridge network only podman can be compared.
fast_none = min(med["podman run --rm --network none"], med["ctr run --rm"])
print(f"no network: berth / faster of podman and ctr: {med['berth run --rm --network none'] / fast_none:.2f}x")
print(f"bridge network (CNI bridge+portmap): berth / podman: {med['berth run --rm'] / med['podman run --rm']:.2f}x")
EOF
python3 benches/report.py container-run "$OUT/container-run.json" >/dev/null
