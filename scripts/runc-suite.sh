#!/usr/bin/env bash
# runc's own integration suite (bats, tests/integration of the runc that Debian ships) against
# berth-runtime and against runc, with the tallies of both and the tests that pass with runc
# but not with berth-runtime:
#
#   scripts/runc-suite.sh [BERTH-RUNTIME] [FILTER]        (as root)
#
# BERTH-RUNTIME defaults to $CARGO_TARGET_DIR/debug/berth-runtime (target/ of this repository).
# FILTER is a bash regular expression matched against "FILE.bats: TEST NAME", e.g. '^exec\.bats: '
# or 'pid-file'; default: every test. Output: one line per runtime,
#
#   runc: P passed, F failed, S skipped, H hung
#   berth-runtime: P passed, F failed, S skipped, H hung
#
# then the tests that pass with runc and fail, hang or skip with berth-runtime; for those that
# are not in the known differences (scripts/runc-suite.known) the gist of the failure too (the
# failed assertion, the last runtime call that failed and the first line it printed). The exit
# status is 1 if there is one of those (so the known list may only shrink); the known entries
# that pass now are named, to be removed. A new failure is run again alone, up to twice; if it
# passes then, it is reported as flaky and not counted (known entries whose reason starts with
# "flaky:" fail only some of the time, and are not named when they pass). The TAP output of every file is kept in
# $BERTH_RUNC_SUITE_CACHE/last-run/<runtime>/.
#
# What it does, each step skipped when its result is in the cache (default
# /var/cache/berth-runc-suite; a run with everything cached starts in a second):
# 1. Debian packages the suite needs (bats, gawk, jq, criu, gcc, Go and the Go libraries of the
#    helpers), with scripts/apt.sh's apt_install.
# 2. runc's source at the version of the installed runc package, from Debian's source package
#    `runc` (it ships tests/integration), with Debian's patches applied, as Debian builds its
#    runc (0005 skips a dev.bats test without /dev/kmsg, 0008 enables seccomp tests on arm):
#    apt-get source with deb-src entries made from this machine's own apt sources, in a private
#    apt state (the machine's lists are not touched; apt checks the files against the signed
#    index).
# 3. The helpers the tests run: recvtty (console sockets, most tests) and seccompagent
#    (seccomp-notify.bats), built with Debian's Go from the runc tree and Debian's Go library
#    packages, offline (GO111MODULE=off). sd-helper is not built: it serves only the systemd
#    cgroup driver's tests, which need systemd as init (RUNC_USE_SYSTEMD), and skip here.
# 4. The images: get-images.sh would download busybox and Debian 10 from the internet; it skips
#    a download when the file is there, so they are made from the fixtures
#    ($BERTH_FIXTURES, default /var/cache/berth-fixtures): busybox-<arch>.tar.xz is the
#    busybox bundle's rootfs without proc/ and sys/ (the upstream image has neither, and the
#    runtime must make the mount points); debian-<arch>.tar.xz (hooks.bats only) is the
#    Debian base layer of the nginx layout with libc-bin's ldconfig and ld.so.conf added (the
#    test runs ldconfig in the container).
# 5. Each bats file alone (several change host state: cgroups, loop devices), under `script`
#    so the tests have a terminal (its stdin stays open, as a user's terminal), with
#    RUNC=<runtime>, TMPDIR in a private directory, every process of it in a cgroup of its own
#    (cgroup v2: the unified hierarchy of a hybrid host, or the root of a v2 one). A test that
#    runs longer than $BERTH_RUNC_SUITE_TIMEOUT seconds (default 40; the slowest takes 6 s with
#    runc) is a hang: everything in that cgroup is killed and the file goes on with the tests
#    after the hung one; a bats that stays on after its last result (a process of a failed test
#    holds its output) is stopped too. (Not bats' own BATS_TEST_TIMEOUT: its watchdog is a
#    background job of the test, and events.bats' `wait` then waits for it, so every events
#    test "hangs".)
#    After each file, containers left in a state directory are deleted with `delete -f` of the
#    runtime that made them, mounts and loop devices under the private directory are
#    removed, and so are the suite's own cgroups (/runc-cgroups-integration-test, made by its
#    helpers, renamed for this run: the only change made to the suite); the trap does the same
#    if the script is interrupted.
#
# Run time on 2 cores: ~3.5 min for runc's pass, ~4.5 min for berth-runtime's (two hangs of
# 40 s included). runc's reference pass is on by default (the first tally line), but it about
# doubles the time, so scripts/test.sh (CI) runs it only with BERTH_RUNC_SUITE_REFERENCE=1: runc's results on this kind of host
# (Debian 12, hybrid cgroups, no systemd) do not change from one berth commit to the next, and
# the tests that do not pass with runc here are listed in the known file's [runc] section.
# Without the reference pass, "passes with runc" means "not in [runc]". With it, differences
# between runc's results and [runc] are reported (not an error: another host, another kernel).
#
# Environment: RUNC (the reference runc, default /usr/sbin/runc), BERTH_RUNC_SUITE_REFERENCE
# (1 = run runc's pass, 0 = use [runc]), BERTH_RUNC_SUITE_TIMEOUT, BERTH_RUNC_SUITE_CACHE,
# BERTH_RUNC_SUITE_KNOWN (default scripts/runc-suite.known), BERTH_FIXTURES.
set -euo pipefail
shopt -s inherit_errexit nullglob

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T0=$(date +%s)
log() { printf '[runc-suite +%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { printf '[runc-suite] ERROR: %s\n' "$*" >&2; exit 2; }

BERTH=${1:-${CARGO_TARGET_DIR:-$REPO/target}/debug/berth-runtime}
FILTER=${2:-}
REF_RUNC=${RUNC:-/usr/sbin/runc}
REFERENCE=${BERTH_RUNC_SUITE_REFERENCE:-1}
TIMEOUT=${BERTH_RUNC_SUITE_TIMEOUT:-40}
CACHE=${BERTH_RUNC_SUITE_CACHE:-/var/cache/berth-runc-suite}
KNOWN=${BERTH_RUNC_SUITE_KNOWN:-$REPO/scripts/runc-suite.known}
FIXTURES=${BERTH_FIXTURES:-/var/cache/berth-fixtures}

[ "$(id -u)" = 0 ] || die "must run as root (containers, cgroups, apt)"
[ -x "$BERTH" ] || die "no berth-runtime at $BERTH (cargo build -p berth-runtime, or give its path)"
BERTH=$(realpath "$BERTH")
[ -f "$KNOWN" ] || die "no known-differences file $KNOWN"
[ "$REFERENCE" = 0 ] || { [ -x "$REF_RUNC" ] || die "no runc at $REF_RUNC (set RUNC)"; REF_RUNC=$(realpath "$REF_RUNC"); }
[ -f "$FIXTURES/fixtures.env" ] || die "no fixtures in $FIXTURES (scripts/setup.sh builds them)"
# shellcheck disable=SC1091
. "$FIXTURES/fixtures.env"

# ---------------------------------------------------------------- 1. packages
GO_LIBS=(golang-github-containerd-console-dev golang-github-urfave-cli-dev
         golang-github-sirupsen-logrus-dev golang-github-seccomp-libseccomp-golang-dev
         golang-github-cyphar-filepath-securejoin-dev golang-github-opencontainers-specs-dev
         golang-golang-x-sys-dev)
# shellcheck source=scripts/apt.sh
. "$REPO/scripts/apt.sh"
apt_install bats gawk jq criu util-linux procps gcc libc6-dev libseccomp-dev pkg-config \
  golang-go "${GO_LIBS[@]}" dpkg-dev xz-utils runc iproute2

mkdir -p "$CACHE"
# One run at a time: the tree is shared, and so are the cgroups of containers without a
# cgroupsPath (berth-runtime's /berth/<id>: most tests call theirs test_busybox).
exec 9>"$CACHE/lock"
flock -n 9 || { log "another runc-suite.sh holds $CACHE/lock; waiting"; flock 9; }

# ---------------------------------------------------------------- 2. runc's source
VERSION=$(dpkg-query -W -f '${Version}' runc)
TREE=$CACHE/runc-$VERSION
if [ ! -f "$TREE/.berth-complete" ]; then
  log "runc $VERSION: Debian source package (apt-get source, private apt state)"
  B=$CACHE/build.$$
  rm -rf "$B" "$TREE"
  mkdir -p "$B/sp" "$B/lists/partial"
  # deb-src entries for what this machine's apt uses (deb822 .sources files and one-line lists).
  for f in /etc/apt/sources.list.d/*.sources; do
    sed 's/^Types: *deb$/Types: deb-src/' "$f" > "$B/sp/$(basename "$f")"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    if [ -f "$f" ]; then sed -n 's/^deb \(.*\)/deb-src \1/p' "$f" > "$B/sp/$(basename "$f")"; fi
  done
  APT=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$B/sp"
       -o "Dir::State::Lists=$B/lists" -o APT::Sandbox::User=root)
  apt-get "${APT[@]}" update -qq </dev/null >/dev/null
  (cd "$B" && apt-get "${APT[@]}" source --download-only -qq "runc=$VERSION" </dev/null >/dev/null) \
    || die "apt-get source runc=$VERSION failed (is it still in the archive?)"
  # (dpkg-source cannot check the .dsc's signature without Debian's keyring: apt checked the
  # files against the signed index.)
  (cd "$B" && dpkg-source -x ./runc_*.dsc src >"$B/dpkg-source.log" 2>&1) \
    || { cat "$B/dpkg-source.log" >&2; die "dpkg-source -x failed"; }
  mv "$B/src" "$TREE"
  touch "$TREE/.berth-complete"
  rm -rf "$B"
fi
INTEGRATION=$TREE/tests/integration
TESTDATA=$INTEGRATION/testdata
# The one change to the suite: the parent cgroup its tests put their containers in
# (/runc-cgroups-integration-test) comes from RUNC_SUITE_CGROUP_PARENT when set, so that this
# run's is its own (another bats run of the suite on the machine uses the same name) and can
# be removed after each file without touching anyone else's.
if ! grep -q RUNC_SUITE_CGROUP_PARENT "$INTEGRATION/helpers.bash"; then
  sed -i 's|REL_PARENT_PATH="/runc-cgroups-integration-test\${slash_pod}"|REL_PARENT_PATH="/${RUNC_SUITE_CGROUP_PARENT:-runc-cgroups-integration-test}${slash_pod}"|' \
    "$INTEGRATION/helpers.bash"
  grep -q RUNC_SUITE_CGROUP_PARENT "$INTEGRATION/helpers.bash" || die "cannot set the cgroup parent in helpers.bash"
fi
# (cgroups.bats checks that the path has "runc-cgroups-integration-test" in it.)
SUITE_CGROUP=runc-cgroups-integration-test.berth-$$

# ---------------------------------------------------------------- 3. helpers
build_helper() { # NAME [go build args…]
  local name=$1 out=$TREE/contrib/cmd/$1/$1; shift
  [ -x "$out" ] && return 0
  log "building $name (Go, offline, Debian's Go libraries)"
  local gopath=$CACHE/gopath
  mkdir -p "$gopath/src/github.com/opencontainers"
  ln -sfn "$TREE" "$gopath/src/github.com/opencontainers/runc"
  env GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$CACHE/gocache" GOFLAGS= \
    HOME="$CACHE" go build "$@" -o "$out.tmp" "github.com/opencontainers/runc/contrib/cmd/$name" </dev/null \
    || die "cannot build $name"
  mv "$out.tmp" "$out"
}
build_helper recvtty
build_helper seccompagent -tags seccomp

# ---------------------------------------------------------------- 4. images
ARCH=$(go env GOARCH)
if [ ! -f "$TESTDATA/busybox-$ARCH.tar.xz" ]; then
  log "busybox-$ARCH.tar.xz from $BUSYBOX_BUNDLE/rootfs"
  tar -C "$BUSYBOX_BUNDLE/rootfs" --exclude ./proc --exclude ./sys --numeric-owner -cf - . \
    | xz -1 -T0 > "$TESTDATA/busybox-$ARCH.tar.xz.tmp"
  mv "$TESTDATA/busybox-$ARCH.tar.xz.tmp" "$TESTDATA/busybox-$ARCH.tar.xz"
fi
if [ ! -f "$TESTDATA/debian-$ARCH.tar.xz" ]; then
  log "debian-$ARCH.tar.xz from the Debian base layer of $NGINX_LAYOUT, with ldconfig"
  D=$CACHE/debian.$$
  rm -rf "$D"; mkdir -p "$D/rootfs"
  manifest=$(jq -r '.manifests[] | select(.annotations."org.opencontainers.image.ref.name" == "latest") | .digest' \
    "$NGINX_LAYOUT/index.json")
  layer=$(jq -r '.layers[0].digest' "$NGINX_LAYOUT/blobs/sha256/${manifest#sha256:}")
  tar -C "$D/rootfs" --numeric-owner -xzf "$NGINX_LAYOUT/blobs/sha256/${layer#sha256:}"
  # libc-bin of the same libc (ldconfig is static): the file of the host's package.
  install -D -m 755 /sbin/ldconfig "$D/rootfs/usr/sbin/ldconfig"
  install -m 644 /etc/ld.so.conf "$D/rootfs/etc/ld.so.conf"
  install -D -m 644 /etc/ld.so.conf.d/libc.conf "$D/rootfs/etc/ld.so.conf.d/libc.conf"
  chroot "$D/rootfs" /usr/sbin/ldconfig
  tar -C "$D/rootfs" --numeric-owner -cf - . | xz -1 -T0 > "$TESTDATA/debian-$ARCH.tar.xz.tmp"
  mv "$TESTDATA/debian-$ARCH.tar.xz.tmp" "$TESTDATA/debian-$ARCH.tar.xz"
  rm -rf "$D"
fi

# ---------------------------------------------------------------- the tests
declare -A KNOWN_BERTH=() KNOWN_RUNC=()
section=
while IFS= read -r line; do
  case $line in
    '[berth]') section=berth; continue ;;
    '[runc]') section=runc; continue ;;
    ''|'#'*) continue ;;
  esac
  name=${line%% # *}
  name=${name%"${name##*[![:space:]]}"}
  reason=${line#"$name"}; reason=${reason# }; reason=${reason#\# }
  case $section in
    berth) KNOWN_BERTH[$name]=${reason:-?} ;;
    runc) KNOWN_RUNC[$name]=${reason:-?} ;;
    *) die "$KNOWN: entry before a [berth] or [runc] section: $line" ;;
  esac
done < "$KNOWN"

# Tests to run, per file, as "FILE.bats: NAME" (every @test line of the suite is @test "NAME" {).
declare -A FILE_TESTS=()
FILES=()
for f in "$INTEGRATION"/*.bats; do
  b=$(basename "$f")
  sel=()
  while IFS= read -r n; do
    [ -z "$FILTER" ] || [[ "$b: $n" =~ $FILTER ]] && sel+=("$n")
  done < <(sed -n 's/^@test "\(.*\)" {$/\1/p' "$f")
  [ ${#sel[@]} -gt 0 ] || continue
  FILES+=("$b")
  FILE_TESTS[$b]=$(printf '%s\n' "${sel[@]}")
done
[ ${#FILES[@]} -gt 0 ] || die "no test matches '$FILTER'"

WORK=$(mktemp -d /tmp/runc-suite.XXXXXX)
# The userns tests run the container as another uid, which must reach the bundle (kernel 5.12+
# checks the parents too): as helpers.bash does for its own directories.
chmod 755 "$WORK"
mkdir -m 755 "$WORK/tmp"
mkfifo "$WORK/stdin"
printf '#!/bin/sh\nexec cat\n' > "$WORK/formatter"   # bats' own stream: begin/ok/not ok/# lines
chmod +x "$WORK/formatter"
OUT=$CACHE/last-run
# The cgroup that holds every process of a bats run: cgroup v2 (cgroup.kill), where there is one.
CGROOT=$(awk '$3 == "cgroup2" && ($2 == "/sys/fs/cgroup/unified" || $2 == "/sys/fs/cgroup") {print $2; exit}' /proc/self/mounts)
CG=
RUN_N=0
CUR_RUNTIME=
BATS_PID=

# Everything a run of bats may leave: its processes (the cgroup), the containers in its state
# directories, mounts below $WORK, the suite's cgroup parent.
cleanup_run() {
  local rt=$1 st root id
  # A process in a frozen cgroup dies only once thawed: cgroups.bats freezes one of the suite's.
  thaw_suite_cgroups
  if [ -n "$BATS_PID" ]; then
    kill_tracked
    { wait "$BATS_PID"; } 2>/dev/null || true
    BATS_PID=
  fi
  while IFS= read -r st; do
    root=$(dirname "$(dirname "$st")"); id=$(basename "$(dirname "$st")")
    timeout -k 5 20 "$rt" --root "$root" delete -f "$id" </dev/null >/dev/null 2>&1 \
      || log "WARNING: $(basename "$rt") --root $root delete -f $id failed"
  done < <(find "$WORK/tmp" -name state.json -path '*/state*/*' 2>/dev/null)
  kill_tracked
  [ -z "$CG" ] || [ ! -d "$CG" ] || rmdir "$CG" 2>/dev/null || log "WARNING: cannot remove $CG"
  local m
  while IFS= read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r)
  while IFS= read -r m; do
    losetup -d "$m" 2>/dev/null || true
  done < <(losetup -n -l -O NAME,BACK-FILE 2>/dev/null | awk -v w="$WORK/" 'index($2, w) == 1 {print $1}')
  local d sub i
  for d in /sys/fs/cgroup/*/"$SUITE_CGROUP" /sys/fs/cgroup/"$SUITE_CGROUP"; do
    [ -d "$d" ] || continue
    while IFS= read -r sub; do
      for i in $(seq 20); do
        grep -q . "$sub/cgroup.procs" 2>/dev/null || break
        xargs -r kill -9 < "$sub/cgroup.procs" 2>/dev/null || true
        sleep 0.1
      done
      rmdir "$sub" 2>/dev/null || log "WARNING: cannot remove $sub"
    done < <(find "$d" -depth -type d)
  done
  find "$WORK/tmp" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} + 2>/dev/null || true
}
thaw_suite_cgroups() {
  local f
  while IFS= read -r f; do
    case $f in
      */freezer.state) echo THAWED > "$f" ;;
      */cgroup.freeze) echo 0 > "$f" ;;
    esac 2>/dev/null || true
  done < <(find /sys/fs/cgroup/*/"$SUITE_CGROUP" /sys/fs/cgroup/"$SUITE_CGROUP" \( -name freezer.state -o -name cgroup.freeze \) 2>/dev/null)
}
kill_tracked() {
  if [ -z "$CG" ]; then
    # No cgroup v2 here: the process tree below BATS_PID (what left it is not found).
    [ -n "$BATS_PID" ] || return 0
    local pids
    pids=$(ps -e -o pid=,ppid= | awk -v root="$BATS_PID" '
      { parent[$1] = $2 } END { n = 1; t[root] = 1; while (n) { n = 0
        for (p in parent) if (!(p in t) && (parent[p] in t)) { t[p] = 1; n = 1 } }
        for (p in t) if (p != root) print p }')
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    return 0
  fi
  [ -d "$CG" ] || return 0
  local i
  for i in $(seq 50); do
    grep -q . "$CG/cgroup.procs" || return 0
    if [ -f "$CG/cgroup.kill" ]; then echo 1 > "$CG/cgroup.kill"
    else xargs -r kill -9 < "$CG/cgroup.procs" 2>/dev/null || true; fi
    sleep 0.1
  done
  log "WARNING: processes left in $CG: $(tr '\n' ' ' < "$CG/cgroup.procs")"
}
on_exit() {
  [ -n "$CUR_RUNTIME" ] && cleanup_run "$CUR_RUNTIME"
  [ -n "$CG" ] && [ -d "$CG" ] && { kill_tracked; rmdir "$CG" 2>/dev/null || true; }
  rm -rf --one-file-system "$WORK"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# Escapes a test name for bats' -f (a bash regular expression).
ere_escape() { sed 's/[][\.*^$+?(){}|]/\\&/g'; }

# Runs FILE's tests NAMES… with runtime RT; appends "RESULT<TAB>FILE: NAME" lines to $RESULTS
# (pass, fail, skip, hung) and writes bats' stream to $TAP.
run_file() { # RT FILE TAP NAME…
  local rt=$1 file=$2 tap=$3; shift 3
  local -a todo=("$@")
  : > "$tap"
  while [ ${#todo[@]} -gt 0 ]; do
    local regex stream=$WORK/stream
    regex="^($(printf '%s\n' "${todo[@]}" | ere_escape | paste -sd '|'))\$"
    : > "$stream"
    # A new one for each run of bats: on this kernel (6.18), once cgroup.kill was written in a
    # cgroup, a child its processes make with clone3(CLONE_INTO_CGROUP) into another cgroup is
    # killed at birth (the kill counter of the parent's cgroup is compared with the target's),
    # so after a hang every container of berth-runtime (which uses CLONE_INTO_CGROUP) died.
    RUN_N=$((RUN_N + 1))
    if [ -n "$CGROOT" ]; then CG=$CGROOT/berth-runc-suite.$$.$RUN_N; mkdir "$CG"; fi
    # shellcheck disable=SC2016
    # BATS_PID is a subshell outside that cgroup, which waits for it (and keeps bash's
    # "Killed" notice of a killed bats out of the output).
    (cd "$INTEGRATION" && env CG="$CG" RUNC="$rt" TMPDIR="$WORK/tmp" RUNC_SUITE_CGROUP_PARENT="$SUITE_CGROUP" \
       FILTER="$regex" FILE="$file" FMT="$WORK/formatter" \
       sh -c '[ -z "$CG" ] || echo $$ > "$CG/cgroup.procs"; exec script -qefc '\''exec bats -T --formatter "$FMT" -f "$FILTER" "$FILE"'\'' /dev/null' \
       <>"$WORK/stdin" >"$stream" 2>&1; exit 0) 2>/dev/null &
    BATS_PID=$!
    # Watchdog, once a second: a test with a "begin" and no result for TIMEOUT seconds is
    # hung. A bats that prints nothing for TIMEOUT seconds between tests, or stays on after its
    # last result (a process of a failed test holding its output open, such as update.bats'
    # own recvtty), is stopped too; tests it gave no result for count as failed.
    local cur= since=0 hung= stuck= n size last=-1 changed now results
    changed=$(date +%s)
    while kill -0 "$BATS_PID" 2>/dev/null; do
      sleep 1
      now=$(date +%s)
      size=$(stat -c %s "$stream")
      [ "$size" = "$last" ] || { last=$size; changed=$now; }
      read -r results n < <(tr -d '\r' < "$stream" | awk '
        /^begin [0-9]+ / { sub(/^begin [0-9]+ /, ""); b = $0; next }
        /^(not )?ok [0-9]+ / { b = ""; r++ }
        END { print r + 0, b }')
      [ "$n" = "$cur" ] || { cur=$n; since=$now; }
      if [ -n "$cur" ]; then
        [ $(( now - since )) -lt "$TIMEOUT" ] || { hung=$cur; break; }
      elif [ "$results" -ge ${#todo[@]} ]; then
        [ $(( now - changed )) -lt 5 ] || { stuck="after its last test"; break; }
      else
        [ $(( now - changed )) -lt "$TIMEOUT" ] || { stuck="between tests"; break; }
      fi
    done
    [ -z "$hung" ] || log "  $file: $hung: no end after ${TIMEOUT}s, killing its bats"
    [ -z "$stuck" ] || log "  $file: bats still runs $stuck (something it started holds its output?), killing it"
    cleanup_run "$rt"
    tr -d '\r' < "$stream" >> "$tap"
    [ -n "$hung" ] && printf 'not ok - %s # killed: no end after %ss\n' "$hung" "$TIMEOUT" >> "$tap"
    # What has a result now, and what is left (the tests after a killed one).
    local -A done=()
    local line res name suffix
    while IFS= read -r line; do
      case $line in
        'ok '*|'not ok '*) ;;
        *) continue ;;
      esac
      # "ok N NAME in Tms[ # skip REASON]", "not ok N NAME in Tms[ # timeout after Ns]"
      res=pass
      [[ $line == 'not ok '* ]] && res=fail
      name=${line#ok }; name=${name#not ok }; name=${name#* }
      suffix=
      if [[ $name == *' # '* ]]; then suffix=${name#* # }; name=${name%% # *}; fi
      name=${name% in [0-9]*ms}
      case $suffix in
        skip*) res=skip ;;
        'timeout after '*|'killed: '*) res=hung ;;
      esac
      [ -n "${done[$name]:-}" ] && continue
      done[$name]=1
      printf '%s\t%s: %s\n' "$res" "$file" "$name" >> "$RESULTS"
    done < <(tr -d '\r' < "$stream"; [ -n "$hung" ] && printf 'not ok - %s # killed: x\n' "$hung")
    local -a left=()
    for name in "${todo[@]}"; do [ -n "${done[$name]:-}" ] || left+=("$name"); done
    if [ -z "$hung" ] && [ ${#left[@]} -gt 0 ]; then
      # bats ended without results for these (it failed to start, or died): count them failed.
      log "  $file: bats gave no result for ${#left[@]} test(s); see $tap"
      for name in "${left[@]}"; do printf 'fail\t%s: %s\n' "$file" "$name" >> "$RESULTS"; done
      left=()
    fi
    todo=("${left[@]}")
  done
}

# What a failed test printed (TAP "# " lines after its "not ok").
failure_text() { # TAP NAME
  awk -v n="$2" '
    /^(begin|ok|not ok) / { inside = 0 }
    /^not ok / { s = $0; sub(/^not ok [0-9-]+ /, "", s); sub(/ # .*$/, "", s); sub(/ in [0-9]+ms$/, "", s); inside = (s == n) }
    inside && /^#/ { print substr($0, 3) }' "$1"
}
# Its gist in a few lines: the failed assertion, then the last runtime command that failed
# (else the last one) with the first line of its output. helpers.bash prints each runtime call
# as "NAME ARGS… (status=N):" followed by its output.
failure_gist() { # TAP NAME RUNTIME-NAME
  failure_text "$1" "$2" | awk -v rt="$3 " '
    /^  `.*failed/ && !a { a = $0 }
    /^[^ ]+ .*\(status=[0-9]+\):$/ && index($0, rt) == 1 { c = $0; o = ""; want = 1; st = $0; sub(/.*\(status=/, "", st); sub(/\):$/, "", st)
      if (st != "0") { fc = c; fo = ""; fwant = 1 } ; next }
    want && $0 != "" { o = $0; want = 0 }
    fwant && $0 != "" { fo = $0; fwant = 0 }
    END { if (a) print a; if (fc) { print fc; if (fo) print fo } else if (c) { print c; if (o) print o } }'
}

run_pass() { # NAME RT
  local label=$1 rt=$2
  CUR_RUNTIME=$rt
  RESULTS=$WORK/results.$label
  : > "$RESULTS"
  rm -rf "${OUT:?}/$label"; mkdir -p "$OUT/$label"
  log "$label ($rt): ${#FILES[@]} bats files"
  local f t0
  for f in "${FILES[@]}"; do
    t0=$(date +%s)
    mapfile -t names <<< "${FILE_TESTS[$f]}"
    run_file "$rt" "$f" "$OUT/$label/${f%.bats}.tap" "${names[@]}"
    log "  $(tally "$f" <(grep -F "$(printf '\t%s: ' "$f")" "$RESULTS")), $(( $(date +%s) - t0 ))s"
  done
  cp "$RESULTS" "$OUT/$label/results"
  CUR_RUNTIME=
}

tally() { # LABEL RESULTS
  awk -F '\t' -v l="$1" '{ c[$1]++ }
    END { printf "%s: %d passed, %d failed, %d skipped, %d hung\n", l, c["pass"], c["fail"], c["skip"], c["hung"] }' "$2"
}

T_START=$(date +%s)
[ "$REFERENCE" = 0 ] || run_pass runc "$REF_RUNC"
run_pass berth-runtime "$BERTH"

declare -A BR=() RR=()
while IFS=$'\t' read -r r n; do BR[$n]=$r; done < "$WORK/results.berth-runtime"
if [ "$REFERENCE" != 0 ]; then
  while IFS=$'\t' read -r r n; do RR[$n]=$r; done < "$WORK/results.runc"
fi

echo
echo "runc's integration suite (runc $VERSION, $(( $(date +%s) - T_START ))s):"
if [ "$REFERENCE" != 0 ]; then
  tally runc "$WORK/results.runc"
else
  echo "runc: not run (BERTH_RUNC_SUITE_REFERENCE=0); $KNOWN lists ${#KNOWN_RUNC[@]} tests that do not pass with runc here"
fi
tally berth-runtime "$WORK/results.berth-runtime"

rc=0
DIFF=() NEW=() FIXED=()
mapfile -t ALL < <(cut -f2 "$WORK/results.berth-runtime")
for n in "${ALL[@]}"; do
  if [ "$REFERENCE" != 0 ]; then
    [ "${RR[$n]:-}" = pass ] || continue
  else
    [ -z "${KNOWN_RUNC[$n]:-}" ] || continue
  fi
  if [ "${BR[$n]}" = pass ]; then
    # (An entry whose reason starts with "flaky:" fails only some of the time.)
    if [ -n "${KNOWN_BERTH[$n]:-}" ] && [[ ${KNOWN_BERTH[$n]} != flaky:* ]]; then FIXED+=("$n"); fi
    continue
  fi
  DIFF+=("$n")
  [ -n "${KNOWN_BERTH[$n]:-}" ] || NEW+=("$n")
done
# A new failure is run again alone, up to twice: one that passes then is flaky (reported, not
# counted: a CI run must not fail on a race it did not bring).
FLAKY=()
if [ ${#NEW[@]} -gt 0 ]; then
  log "running the ${#NEW[@]} new failure(s) again alone (up to twice each)"
  CUR_RUNTIME=$BERTH
  still=()
  for n in "${NEW[@]}"; do
    f=${n%%: *} ok=
    for try in 1 2; do
      RESULTS=$WORK/retry
      : > "$RESULTS"
      run_file "$BERTH" "$f" "$OUT/berth-runtime/${f%.bats}.retry$try.tap" "${n#*: }"
      if grep -q '^pass' "$RESULTS"; then ok=1; break; fi
    done
    if [ -n "$ok" ]; then FLAKY+=("$n"); else still+=("$n"); fi
  done
  CUR_RUNTIME=
  NEW=("${still[@]}")
fi

echo
echo "Pass with runc, not with berth-runtime: ${#DIFF[@]} (${#NEW[@]} not in $(basename "$KNOWN"), ${#FLAKY[@]} flaky)"
for n in "${DIFF[@]}"; do
  f=${n%%: *}
  mark=known
  if [ -z "${KNOWN_BERTH[$n]:-}" ]; then
    mark=NEW
    for x in "${FLAKY[@]}"; do [ "$x" != "$n" ] || mark=flaky; done
  fi
  printf '  %-5s %-4s %s\n' "$mark" "${BR[$n]}" "$n"
  if [ "$mark" = NEW ]; then
    failure_gist "$OUT/berth-runtime/${f%.bats}.tap" "${n#*: }" berth-runtime | sed 's/^/          | /'
  fi
done
if [ ${#NEW[@]} -gt 0 ]; then
  echo "FAILED: ${#NEW[@]} test(s) pass with runc but not with berth-runtime and are not known differences"
  rc=1
fi
if [ ${#FLAKY[@]} -gt 0 ]; then
  echo
  echo "Flaky with berth-runtime: failed, then passed alone (not counted; add them to $(basename "$KNOWN") with a \"flaky:\" reason):"
  printf '  %s\n' "${FLAKY[@]}"
fi
if [ ${#FIXED[@]} -gt 0 ]; then
  echo
  echo "Known differences that pass now (remove them from $(basename "$KNOWN")):"
  printf '  %s\n' "${FIXED[@]}"
fi
if [ "$REFERENCE" != 0 ]; then
  notes=()
  for n in "${!RR[@]}"; do
    if [ "${RR[$n]}" = pass ] && [ -n "${KNOWN_RUNC[$n]:-}" ]; then notes+=("runc passes, listed in [runc]: $n"); fi
    if [ "${RR[$n]}" != pass ] && [ -z "${KNOWN_RUNC[$n]:-}" ]; then notes+=("runc: ${RR[$n]}, not listed in [runc]: $n"); fi
  done
  if [ ${#notes[@]} -gt 0 ]; then
    echo
    echo "runc's results here differ from [runc] of $(basename "$KNOWN") (update it if this host is CI's kind):"
    printf '  %s\n' "${notes[@]}" | sort
  fi
fi
echo
echo "TAP output: $OUT/{runc,berth-runtime}/"
exit "$rc"
