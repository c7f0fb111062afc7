#!/usr/bin/env bash
# The main job, end to end, on a fresh machine (as root):
#
#   scripts/demo.sh
#
# installs what is needed (scripts/setup.sh: Debian packages, fixtures), builds berth, starts
# the fixture registry on 127.0.0.1:5000 (unless one is there) and berthd, then does what a
# docker user does:
#
#   berth pull 127.0.0.1:5000/library/nginx; berth tag … nginx
#   berth run -d --name web -p 8080:80 nginx; curl http://127.0.0.1:8080/
#   berth ps; berth logs web; berth exec web …; berth stop web; berth rm web
#
# berthd runs with its own socket, store and state under a temporary directory, so a berthd
# already on this machine is not disturbed. Everything the demo started is stopped and removed
# on exit, also on failure. PORT=8081 scripts/demo.sh publishes on another host port.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SHARED=${BERTH_SHARED:-$(realpath -m "$ROOT/../shared")}
export BERTH_FIXTURES=${BERTH_FIXTURES:-/var/cache/berth-fixtures}
export PATH="$HOME/.cargo/bin:$PATH"
REG=127.0.0.1:5000
PORT=${PORT:-8080}
D=$(mktemp -d /tmp/berth-demo.XXXXXX)
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

REG_STARTED= BERTHD_PID=
BIN=$ROOT/target/debug
B() { "$BIN/berth" -H "unix://$D/berthd.sock" "$@"; }
cleanup() {
  set +e
  if [ -n "$BERTHD_PID" ]; then
    B rm -f web >/dev/null 2>&1
    kill "$BERTHD_PID" && wait "$BERTHD_PID" 2>/dev/null
  fi
  [ -n "$REG_STARTED" ] && bash "$SHARED/fixtures/registry.sh" stop "$REG_STARTED" >/dev/null 2>&1
  # berthd's netns directory is a bind mount of itself (as /run/netns is for `ip netns`).
  grep " $D/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$D"
}
trap cleanup EXIT

say "setup (Debian packages, cargo-nextest, fixtures)"
BERTH_SETUP_KUBELET=0 bash scripts/setup.sh </dev/null

say "build"
cargo build --bins </dev/null

if (exec 3<>"/dev/tcp/127.0.0.1/5000") 2>/dev/null; then
  say "fixture registry already on $REG"
else
  say "start the fixture registry on $REG"
  bash "$SHARED/fixtures/registry.sh" start "$D/registry" </dev/null >&2
  REG_STARTED=$D/registry
  bash "$SHARED/fixtures/registry.sh" push "$BERTH_FIXTURES" </dev/null >&2
fi

say "berthd &   (socket $D/berthd.sock, store $D/root, log $D/berthd.log)"
"$BIN/berthd" --address "$D/berthd.sock" --root "$D/root" --state "$D/state" \
  --log-dir "$D/logs" 2>"$D/berthd.log" &
BERTHD_PID=$!
for _ in $(seq 100); do [ -S "$D/berthd.sock" ] && break; sleep 0.05; done
berth() { echo "+ berth $*" >&2; B "$@"; }

say "pull nginx (from the fixture registry; docker.io in real life)"
berth pull $REG/library/nginx
berth tag $REG/library/nginx nginx
berth images

say "run it"
berth run -d --name web -p "$PORT:80" nginx
echo "+ curl http://127.0.0.1:$PORT/" >&2
for _ in $(seq 100); do
  if PAGE=$(curl -sf "http://127.0.0.1:$PORT/"); then break; fi
  sleep 0.05
done
echo "$PAGE"
echo "$PAGE" | grep -q "Welcome to nginx!"

say "look at it"
berth ps
berth logs web
berth exec web sh -c 'echo "in $(hostname): $(nginx -v 2>&1)"'

say "stop and remove it"
berth stop web
berth rm web
berth ps -a
say "done: cleaning up"
