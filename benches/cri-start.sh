#!/usr/bin/env bash
# berthd's CRI against containerd's CRI plugin, driven by the same client
# (cli/examples/cri-bench.rs) the way the kubelet drives them: time from the first
# RunPodSandbox to the last StartContainer answered, for 1 pod and for N pods started at once,
# busybox (`sleep 3600`) and nginx (its own entrypoint); then the memory each runtime keeps per
# running pod.
#
#   benches/cri-start.sh [RUNS1] [RUNSN] [N]    (as root; default 20 runs of 1 pod, 10 runs of 20)
#   benches/cri-start.sh --report                the report again from the last results
#
# Sets up what is missing on a fresh Debian bookworm machine: apt packages (containerd, runc,
# containernetworking-plugins, docker-registry, skopeo, curl), the fixtures
# (../shared/fixtures/build.sh into $BERTH_FIXTURES, default /var/cache/berth-fixtures), the
# fixture registry on 127.0.0.1:5000 (started and filled only if nothing answers there; then
# stopped at the end), and the release binaries. Then, all under one temp dir:
#
#   containerd  Debian's, private root/state/socket, CRI plugin on, runc from Debian
#               (SystemdCgroup=false), sandbox_image 127.0.0.1:5000/library/pause:3.9 (the
#               fixture pause image: Debian's catatonit), the registry as a plain-http mirror
#   berthd      the release build, private --root/--state/--address, its shim the static
#               non-PIE build (scripts/build-static.sh shim; BERTH_SHIM=path for another)
#
# Both use the same CNI conflist (bridge cni-bench0 + host-local 10.213.200.0/24, no masquerade,
# plugins from /usr/lib/cni) and the same cgroup parent (/berth-bench-cri-<pid>/pod<uid>, the
# cgroupfs layout of the kubelet). Runs alternate between the runtimes (one client invocation
# per run, the order swapped each round), after one untimed warm-up each. Each daemon runs in a
# CPU-accounting cgroup of its own (its shims, runc and the CNI plugins inherit it): the CPU
# time each runtime spends per pod is reported too, and how much CPU other work on the machine
# took meanwhile. Memory per pod: see cli/examples/cri-bench.rs (what is counted).
#
# Everything started here (daemons, registry if started here, pods, shims, the bridge, network
# namespaces, cgroups, mounts) is removed on exit, also on failure or ^C.
# Writes target/bench/cri-start/*.jsonl (one client result per line), target/bench/cri-start.json
# (the summary), the cri-start section of docs/benchmarks.md and docs/bench-cri-start.png.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
RUNS1=${1:-20}
RUNSN=${2:-10}
N=${3:-20}
REG=127.0.0.1:${FIXTURES_REGISTRY_PORT:-5000}
FIX=${BERTH_FIXTURES:-/var/cache/berth-fixtures}
SHARED=${BERTH_SHARED:-$(realpath -m "$PWD/../shared")}
BRIDGE=cni-bench0
SUBNET=10.213.200.0/24
NETNAME=berth-cri-bench
CG=berth-bench-cri-$$
log() { printf '[cri-start] %s\n' "$*" >&2; }
die() { printf '[cri-start] ERROR: %s\n' "$*" >&2; exit 1; }
# The summary (target/bench/cri-start.json), the cri-start section of docs/benchmarks.md and
# docs/bench-cri-start.png, from the results in target/bench/cri-start/.
report() {
  set -a; . "$PWD/target/bench/cri-start/meta.env"; set +a
  # shellcheck disable=SC2086
  python3 - "$PWD/target/bench/cri-start" "$PWD/target/bench/cri-start.json" docs/benchmarks.md $ARGS <<'PY'
import json, math, os, platform, statistics, sys
d, summary_path, doc, runs1, runsn, n = sys.argv[1:7]
res = {}
for f in sorted(os.listdir(d)):
    if not f.endswith(".jsonl"):
        continue
    name, rt = f[:-6].rsplit("-", 1)
    lines = [json.loads(l) for l in open(os.path.join(d, f)) if l.strip()]
    res.setdefault(name, {})[rt] = lines

def p95(xs):
    s = sorted(xs)
    return s[max(1, math.ceil(0.95 * len(s))) - 1]

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")

order = [k for k in ("busybox-1", "nginx-1", f"busybox-{n}", f"nginx-{n}") if k in res]
summary = {}
for name in order:
    for rt, lines in res[name].items():
        times = [t for l in lines for t in l["times_ms"]]
        mem = [m for l in lines for m in l["memory"]]
        pods = lines[0]["pods"]
        phases = {k: med([l["phase_median_ms"][k] for l in lines]) for k in lines[0]["phase_median_ms"]}
        by = {}
        for m in mem:
            for c, v in m["by_command"].items():
                by.setdefault(c, []).append(v)
        summary.setdefault(name, {})[rt] = {
            "runtime": lines[0]["runtime"], "pods": pods, "times_ms": times,
            "median_ms": med(times), "min_ms": min(times), "p95_ms": p95(times),
            "phase_median_ms": phases,
            "cpu_ms_per_pod": med([t / pods for l in lines for t in l.get("cpu_ms", [])]),
            "processes_per_pod": med([m["processes_per_pod"] for m in mem]),
            "rss_kib_per_pod": med([m["rss_kib_per_pod"] for m in mem]),
            "pss_kib_per_pod": med([m["pss_kib_per_pod"] for m in mem]),
            "uss_kib_per_pod": med([m["uss_kib_per_pod"] for m in mem]),
            "daemon_rss_growth_kib_per_pod": med([m.get("daemon_rss_growth_kib_per_pod") for m in mem]),
            "by_command_per_pod": {c: {k: med([x[k] for x in v]) / pods for k in ("processes", "rss_kib", "pss_kib", "uss_kib")}
                                   for c, v in by.items()},
        }
json.dump(summary, open(summary_path, "w"), indent=1)

label = {"busybox-1": "busybox, 1 pod", "nginx-1": "nginx, 1 pod",
         f"busybox-{n}": f"busybox, {n} pods at once", f"nginx-{n}": f"nginx, {n} pods at once"}
rows, verdicts = [], []
for name in order:
    b, c = summary[name]["berth"], summary[name]["containerd"]
    r = b["median_ms"] / c["median_ms"]
    verdicts.append(r)
    rows.append(f"| {label[name]} | {b['median_ms']:.1f} | {b['min_ms']:.1f} | {b['p95_ms']:.1f} "
                f"| {c['median_ms']:.1f} | {c['min_ms']:.1f} | {c['p95_ms']:.1f} | {len(b['times_ms'])} | **{r:.2f}** |")
phase_rows = []
for name in order:
    for rt in ("berth", "containerd"):
        p = summary[name][rt]["phase_median_ms"]
        cpu = summary[name][rt]["cpu_ms_per_pod"]
        phase_rows.append(f"| {label[name]} | {rt} | {p['run_pod_sandbox']:.1f} | {p['pod_sandbox_status']:.1f} "
                          f"| {p['create_container']:.1f} | {p['start_container']:.1f} | {cpu:.1f} |")
mem_rows = []
for name in order:
    if summary[name]["berth"]["pods"] < 2 and f"busybox-{n}" in summary:
        continue
    for rt in ("berth", "containerd"):
        s = summary[name][rt]
        what = ", ".join(f"{c} ×{v['processes']:.2g}" for c, v in sorted(s["by_command_per_pod"].items()))
        mem_rows.append(f"| {label[name]} | {rt} | {what} | {s['pss_kib_per_pod']:.0f} | {s['rss_kib_per_pod']:.0f} "
                        f"| {s['uss_kib_per_pod']:.0f} | {s['daemon_rss_growth_kib_per_pod']:.0f} |")
mem_ratio = {name: summary[name]["berth"]["pss_kib_per_pod"] / summary[name]["containerd"]["pss_kib_per_pod"]
             for name in order if summary[name]["berth"]["pods"] > 1}
b0 = summary[order[0]]
section = f"""<!-- cri-start:begin -->
Measured {os.environ['DATE']} on {platform.node()} ({os.cpu_count()} cores,
kernel {platform.release()}), command: `benches/cri-start.sh {runs1} {runsn} {n}`; {b0['berth']['runtime']}
against containerd {os.environ['CTRD_VERSION']} (CRI plugin, runc {os.environ['RUNC_VERSION']}), runs alternating;
load average {os.environ['LOAD0']} before; work outside the benchmark's processes (other programs,
kernel threads) used {os.environ['OTHER_CPU']}.

Time from the first RunPodSandbox to the last StartContainer answered (ms):

| pods | berth median | min | p95 | containerd median | min | p95 | runs | berth / containerd |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
""" + "\n".join(rows) + f"""

Target ≤ 0.5×: {"met" if max(verdicts) <= 0.5 else "**missed**"} (worst ratio {max(verdicts):.2f}).

Each call's latency, median over pods and runs (ms; with N pods at once it includes the wait
for the others), and the CPU time the runtime used per pod meanwhile (daemon, shims, runc,
CNI plugins, pause; not the containers):

| pods | runtime | RunPodSandbox | PodSandboxStatus | CreateContainer | StartContainer | CPU per pod |
|---|---|---:|---:|---:|---:|---:|
""" + "\n".join(phase_rows) + f"""

Memory per running pod (KiB, median over runs): the processes the runtime added for the pods
(shims, pause) besides the containers' own, and the daemon's RSS growth:

| pods | runtime | processes per pod | PSS | RSS | USS | daemon RSS growth |
|---|---|---|---:|---:|---:|---:|
""" + "\n".join(mem_rows) + "\n\n" + " ".join(
    f"{label[k]}: berth's PSS per pod is **{v:.2f}×** containerd's." for k, v in mem_ratio.items()) + """

![cri-start](bench-cri-start.png)
<!-- cri-start:end -->"""
text = open(doc).read()
b, e = "<!-- cri-start:begin -->", "<!-- cri-start:end -->"
if b in text and e in text:
    text = text[: text.index(b)] + section + text[text.index(e) + len(e):]
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(doc, "w").write(text)
print(section)

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib not installed: no plot", file=sys.stderr)
    sys.exit(0)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
fig.suptitle("CRI: first RunPodSandbox to last StartContainer answered", fontsize=11)
for ax, names in zip(axes, ([k for k in order if k.endswith("-1")], [k for k in order if not k.endswith("-1")])):
    data, labels = [], []
    for name in names:
        for rt in ("berth", "containerd"):
            data.append(summary[name][rt]["times_ms"])
            labels.append(f"{rt}\n{name.split('-')[0]}")
    if not data:
        continue
    _kw = "tick_labels" if tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) >= (3, 9) else "labels"
    ver = tuple(int(p) for p in matplotlib.__version__.split(".")[:2])
    horiz = {"orientation": "horizontal"} if ver >= (3, 10) else {"vert": False}
    ax.boxplot(data, showfliers=False, **horiz, **{_kw: labels})
    ax.set_xlim(left=0)
    ax.set_xlabel("ms (lower is better)")
    ax.set_title("1 pod" if names[0].endswith("-1") else f"{names[0].split('-')[1]} pods at once")
fig.tight_layout()
fig.savefig(os.path.join(os.path.dirname(doc), "bench-cri-start.png"), dpi=110)
PY
}
if [ "${1:-}" = --report ]; then report; exit 0; fi
[ "$(id -u)" = 0 ] || die "must run as root"

# Debian packages: the peers and the tools.
# shellcheck source=scripts/apt.sh
. scripts/apt.sh
apt_install containerd runc containernetworking-plugins docker-registry skopeo curl iproute2 python3
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || die "no CNI plugins in /usr/lib/cni"
if ! [ -f "$FIX/fixtures.env" ]; then
  [ -f "$SHARED/fixtures/build.sh" ] || die "no fixtures in $FIX and no $SHARED/fixtures/build.sh (set BERTH_SHARED)"
  log "building the fixtures into $FIX"
  bash "$SHARED/fixtures/build.sh" "$FIX" </dev/null
fi
if ip link show "$BRIDGE" >/dev/null 2>&1; then
  die "$BRIDGE exists: another cri-start.sh is running, or one was killed -9 (ip link del $BRIDGE)"
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
log "building (release)"
cargo build --release -q -p berth-cri -p berth-shim -p berth-runtime -p berth-cli --bins --example cri-bench
BIN=$CARGO_TARGET_DIR/release
CLIENT=$BIN/examples/cri-bench
SHIM=${BERTH_SHIM:-$(bash scripts/build-static.sh shim)}
OUT=$PWD/target/bench; mkdir -p "$OUT/cri-start"; rm -f "$OUT"/cri-start/*.jsonl

WORK=$(mktemp -d /var/tmp/berth-cri-bench.XXXXXX)
CTRD_PID= BERTHD_PID= REG_STARTED= CPUACCT= ORIG_CG=
CTRD_SOCK=$WORK/ctrd/containerd.sock
BERTH_SOCK=$WORK/berth/berthd.sock

# What cleanup may touch: our daemons (by pid), processes whose command line names $WORK (their
# shims), processes in our cgroup parent (the containers), mounts under $WORK, our bridge, and
# CNI cache files of our network name.
kill_wait() { # pid
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null || true
}
ours() { # pids of processes naming $WORK, and of processes in our cgroups
  local p
  for p in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$p" = $$ ] && continue
    if grep -qaF "$WORK" "/proc/$p/cmdline" 2>/dev/null; then echo "$p"; fi
  done
  for d in /sys/fs/cgroup/*/"$CG" /sys/fs/cgroup/"$CG"; do
    [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done
  true
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  log "cleaning up"
  # Out of our cgroups first: what is left in them is killed below.
  [ -n "$CPUACCT" ] && [ -n "$ORIG_CG" ] && echo $$ > "$CPUACCT${ORIG_CG%/}/cgroup.procs" 2>/dev/null
  # Through the runtimes: they delete what they set up (CNI DEL, netns, cgroups).
  if [ -n "$BERTHD_PID" ] && kill -0 "$BERTHD_PID" 2>/dev/null; then
    timeout 120 "$CLIENT" --endpoint "$BERTH_SOCK" --work "$WORK/client-berth" --cleanup
    kill_wait "$BERTHD_PID"
  fi
  if [ -n "$CTRD_PID" ] && kill -0 "$CTRD_PID" 2>/dev/null; then
    timeout 120 "$CLIENT" --endpoint "$CTRD_SOCK" --work "$WORK/client-ctrd" --cleanup
    kill_wait "$CTRD_PID"
  fi
  # Whatever is left of ours: shims, containers, pause processes.
  for _ in 1 2 3; do
    pids=$(ours | sort -u)
    [ -n "$pids" ] || break
    kill -9 $pids 2>/dev/null; sleep 0.3
  done
  # A containerd that died leaves its shims' sockets in /run/containerd/s and the CNI cache of
  # its sandboxes' loopback: by the addresses and sandbox ids in its state.
  for a in "$WORK"/ctrd/state/io.containerd.runtime.v2.task/*/*/address; do
    [ -f "$a" ] || continue
    s=$(sed 's|^unix://||' "$a")
    case $s in /run/containerd/s/*) rm -f "$s" ;; esac
  done
  for id in $(ls -1 "$WORK"/ctrd/state/io.containerd.grpc.v1.cri/sandboxes \
      "$WORK"/ctrd/root/io.containerd.grpc.v1.cri/sandboxes 2>/dev/null | grep -E '^[0-9a-f]{64}$'); do
    rm -f /var/lib/cni/results/*-"$id"-*
  done
  cp "$WORK/ctrd/log" "$OUT/cri-start/containerd.log" 2>/dev/null
  cp "$WORK/berth/berthd.log" "$OUT/cri-start/berthd.log" 2>/dev/null
  grep -o " $WORK[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  ip link del "$BRIDGE" 2>/dev/null
  ip link del bcribench0 2>/dev/null
  rm -f /var/lib/cni/results/"$NETNAME"-* 2>/dev/null
  for d in /sys/fs/cgroup/*/"$CG" /sys/fs/cgroup/"$CG"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  if [ -n "$REG_STARTED" ]; then bash "$SHARED/fixtures/registry.sh" stop "$WORK/registry"; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The fixture registry: the one running, else ours.
if ! curl -fsS -o /dev/null "http://$REG/v2/" 2>/dev/null; then
  log "starting the fixture registry"
  REG_STARTED=1
  bash "$SHARED/fixtures/registry.sh" start "$WORK/registry"
  bash "$SHARED/fixtures/registry.sh" push "$FIX" >/dev/null
fi
for r in busybox:latest nginx:latest pause:3.9; do
  curl -fsS -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REG/v2/library/${r%%:*}/manifests/${r#*:}" || die "$REG has no library/$r"
done

# The CNI network both runtimes use.
mkdir -p "$WORK/net.d"
cat > "$WORK/net.d/10-bench.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$NETNAME",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$SUBNET" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$WORK/ipam"
      }
    }
  ]
}
EOF

# containerd with its CRI plugin.
mkdir -p "$WORK/ctrd"
cat > "$WORK/ctrd/config.toml" <<EOF
version = 2
root = "$WORK/ctrd/root"
state = "$WORK/ctrd/state"
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/ctrd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$REG/library/pause:3.9"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This host's bounding set has no CAP_SYS_RESOURCE: the pause's -998 cannot be set.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
        Root = "$WORK/ctrd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$WORK/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REG"]
    endpoint = ["http://$REG"]
EOF
# Each daemon in a CPU-accounting cgroup of its own, which its shims and the programs they run
# (runc, CNI plugins) inherit, and the containers leave: the runtime's CPU time per pod.
CPUACCT=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpuacct(,|$)/ {print $2; exit}' /proc/self/mounts)
[ -n "$CPUACCT" ] || { [ -f /sys/fs/cgroup/cgroup.controllers ] && CPUACCT=/sys/fs/cgroup; }
# This script (and so the clients) joins one too: all the CPU time the benchmark uses is that of
# $CPUACCT/$CG; the machine's busy time (/proc/stat) minus it is what else ran meanwhile.
ORIG_CG=$(awk -F: '$2 ~ /(^|,)cpuacct(,|$)/ {print $3; exit}' /proc/self/cgroup)
[ -n "$ORIG_CG" ] || ORIG_CG=$(awk -F: '$1 == 0 {print $3; exit}' /proc/self/cgroup)
if [ -n "$CPUACCT" ] && mkdir -p "$CPUACCT/$CG/bench" 2>/dev/null; then
  echo $$ > "$CPUACCT/$CG/bench/cgroup.procs"
fi
busy_ms() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / {printf "%d", ($2 + $3 + $4 + $7 + $8) * 1000 / hz}' /proc/stat; }
ours_ms() {
  if [ -f "$CPUACCT/$CG/cpuacct.usage" ]; then echo $(( $(cat "$CPUACCT/$CG/cpuacct.usage") / 1000000 ))
  else awk '/^usage_usec/ {printf "%d", $2 / 1000}' "$CPUACCT/$CG/cpu.stat" 2>/dev/null || echo 0; fi
}
in_cgroup() { # name command...: runs the command (exec) in $CPUACCT/$CG/name
  local name=$1; shift
  if [ -n "$CPUACCT" ] && mkdir -p "$CPUACCT/$CG/$name" 2>/dev/null; then
    exec bash -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CPUACCT/$CG/$name" "$@"
  else
    exec "$@"
  fi
}
in_cgroup containerd containerd --config "$WORK/ctrd/config.toml" > "$WORK/ctrd/log" 2>&1 &
CTRD_PID=$!

# berthd with its CRI on the same network config.
mkdir -p "$WORK/berth"
cat > "$WORK/berth/config.toml" <<EOF
[daemon]
log_dir = "$WORK/berth/logs"
shim = "$SHIM"
[network]
bridge = "bcribench0"
subnet = "10.213.201.0/24"
plugin_dirs = ["/usr/lib/cni"]
[cri]
cni_conf_dir = "$WORK/net.d"
EOF
BERTH_LOG=${BERTH_LOG:-info} in_cgroup berthd "$BIN/berthd" --config "$WORK/berth/config.toml" --address "$BERTH_SOCK" \
  --root "$WORK/berth/root" --state "$WORK/berth/state" 2> "$WORK/berth/berthd.log" &
BERTHD_PID=$!

for _ in $(seq 200); do [ -S "$CTRD_SOCK" ] && [ -S "$BERTH_SOCK" ] && break; sleep 0.05; done
[ -S "$CTRD_SOCK" ] || { tail "$WORK/ctrd/log" >&2; die "containerd did not start"; }
[ -S "$BERTH_SOCK" ] || { tail "$WORK/berth/berthd.log" >&2; die "berthd did not start"; }

client() { # runtime image pods runs warmup cmd...
  local rt=$1 image=$2 pods=$3 runs=$4 warmup=$5; shift 5
  local sock pid match cg extra=()
  case $rt in
    berth) sock=$BERTH_SOCK pid=$BERTHD_PID match=$WORK/berth cg=berthd ;;
    containerd) sock=$CTRD_SOCK pid=$CTRD_PID match=$WORK/ctrd cg=containerd
      extra=(--pull "$REG/library/pause:3.9") ;;
  esac
  [ -n "$CPUACCT" ] && extra+=(--cpu-cgroup "$CPUACCT/$CG/$cg")
  "$CLIENT" --endpoint "$sock" --label "$rt" --image "$REG/library/$image" --pods "$pods" \
    --runs "$runs" --warmup "$warmup" --cgroup-parent "/$CG" --work "$WORK/client-$rt" \
    --daemon-pid "$pid" --match "$match" ${PROBE:-} "${extra[@]}" ${1:+--cmd} "$@"
}

bench() { # name image pods runs cmd...
  local name=$1 image=$2 pods=$3 runs=$4; shift 4
  local f=$OUT/cri-start/$name
  log "$name: warm-up"
  client berth "$image" "$pods" 0 1 "$@" >/dev/null
  client containerd "$image" "$pods" 0 1 "$@" >/dev/null
  for i in $(seq "$runs"); do
    local order="berth containerd"
    [ $((i % 2)) = 0 ] && order="containerd berth"
    for rt in $order; do client "$rt" "$image" "$pods" 1 0 "$@" >> "$f-$rt.jsonl"; done
  done
}

DATE0=$(date -u '+%Y-%m-%d %H:%M UTC') LOAD0=$(cut -d' ' -f1-3 /proc/loadavg) BUSY0=$(busy_ms) OURS0=$(ours_ms) T0=$(date +%s%N)
bench busybox-1 busybox:latest 1 "$RUNS1" sleep 3600
PROBE="--probe-http 80" bench nginx-1 nginx:latest 1 "$RUNS1"
bench "busybox-$N" busybox:latest "$N" "$RUNSN" sleep 3600
PROBE="--probe-http 80" bench "nginx-$N" nginx:latest "$N" "$RUNSN"

# What the report says about the conditions, then the report.
WALL=$(( ($(date +%s%N) - T0) / 1000000 ))
OTHER=$(( $(busy_ms) - BUSY0 - ($(ours_ms) - OURS0) ))
OTHER_CPU="$(( OTHER * 100 / (WALL * $(nproc)) ))% of the CPU time of the machine over the $(( WALL / 1000 )) s"
{
  printf 'ARGS=%q\n' "$RUNS1 $RUNSN $N"
  printf 'DATE=%q\n' "$DATE0"
  printf 'LOAD0=%q\n' "$LOAD0"
  printf 'OTHER_CPU=%q\n' "$OTHER_CPU"
  printf 'CTRD_VERSION=%q\n' "$(containerd --version | awk '{print $3}')"
  printf 'RUNC_VERSION=%q\n' "$(runc --version | awk 'NR==1{print $3}')"
} > "$OUT/cri-start/meta.env"
report
