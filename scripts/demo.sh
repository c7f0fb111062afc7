#!/usr/bin/env bash
# The main job, end to end, on a fresh machine (as root):
#
#   scripts/demo.sh
#
# installs what is needed (scripts/setup.sh: Debian packages, fixtures), builds berth, starts
# the fixture registry on 127.0.0.1:5000 (unless one is there) and a private berthd, pulls
# nginx from the registry with `berth pull`, makes a bundle of it (`berth bundle`), runs it
# with `berth-runtime run -d`, and prints the welcome page nginx serves inside the container's
# network namespace. Everything it started is stopped and removed on exit, also on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SHARED=${BERTH_SHARED:-$(realpath -m "$ROOT/../shared")}
export BERTH_FIXTURES=${BERTH_FIXTURES:-/var/cache/berth-fixtures}
export PATH="$HOME/.cargo/bin:$PATH"
REG=127.0.0.1:5000
D=$(mktemp -d /tmp/berth-demo.XXXXXX)
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

REG_STARTED= BERTHD_PID=
BIN=$ROOT/target/debug
cleanup() {
  set +e
  [ -x "$BIN/berth-runtime" ] && "$BIN/berth-runtime" --root "$D/rt" delete -f web >/dev/null 2>&1
  [ -n "$BERTHD_PID" ] && "$BIN/berth" -H "unix://$D/berthd.sock" bundle --rm "$D/web" >/dev/null 2>&1
  [ -n "$BERTHD_PID" ] && kill "$BERTHD_PID" && wait "$BERTHD_PID" 2>/dev/null
  [ -n "$REG_STARTED" ] && bash "$SHARED/fixtures/registry.sh" stop "$REG_STARTED" >/dev/null 2>&1
  grep -q " $D/" /proc/mounts && umount -l "$D"/web/rootfs 2>/dev/null
  rm -rf "$D"
}
trap cleanup EXIT

say "setup (Debian packages, cargo-nextest, fixtures)"
bash scripts/setup.sh </dev/null

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

say "start berthd (socket $D/berthd.sock, store $D/root)"
"$BIN/berthd" --address "$D/berthd.sock" --root "$D/root" --state "$D/state" 2>"$D/berthd.log" &
BERTHD_PID=$!
for _ in $(seq 100); do [ -S "$D/berthd.sock" ] && break; sleep 0.05; done
berth() { echo "+ berth $*" >&2; "$BIN/berth" -H "unix://$D/berthd.sock" "$@"; }

say "pull nginx"
berth pull $REG/library/nginx
berth images

say "run it"
berth bundle $REG/library/nginx "$D/web"
echo "+ berth-runtime run -d --bundle $D/web web" >&2
"$BIN/berth-runtime" --root "$D/rt" run -d --bundle "$D/web" web >"$D/web.log" 2>&1
"$BIN/berth-runtime" --root "$D/rt" list
PID=$("$BIN/berth-runtime" --root "$D/rt" state web | sed -n 's/^ *"pid": \([0-9]*\),/\1/p')

say "the page nginx serves (curl http://127.0.0.1/ in the container's network namespace)"
for _ in $(seq 100); do
  if PAGE=$(nsenter -t "$PID" -n curl -sf http://127.0.0.1/); then break; fi
  sleep 0.05
done
echo "$PAGE"
echo "$PAGE" | grep -q "Welcome to nginx!"
say "done: cleaning up"
