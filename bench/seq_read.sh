#!/usr/bin/env bash
# Strata alone: a sequential write of one file, then a cold sequential read
# of it (page cache dropped), through the S3 server the tests use (s3s-fs on
# loopback) and a one-node metaserver; prints both rates and the CPU seconds
# the S3 server, the metaserver and the mount spent during the read. A quick
# look at the read path; bench/data_bench.sh is the comparison with JuiceFS.
#
# usage: bench/seq_read.sh      (as root; needs fio and fuse3)
#   SIZE=1G                       the file
#   MOUNT_OPTS="--cache-dir DIR"  extra mount flags (default: memory cache only)
# Not a test: numbers depend on the machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/bench/lib.sh"
require_root "FUSE mounts, dropping the page cache"
size="${SIZE:-1G}"
need_debian fio
"$root/scripts/install-deps.sh"
build_strata --test-s3
work="$(mktemp -d /tmp/strata-seq-read.XXXXXX)"
pids=()
cleanup() {
  set +e
  mountpoint -q "$work/mnt" && { "$S" umount "$work/mnt" >/dev/null 2>&1 || fusermount3 -u -z "$work/mnt"; }
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

start_test_s3
s3="${pids[-1]}"
RUST_LOG=error "$S" meta serve --id 1 --listen 127.0.0.1:0 --data-dir "$work/meta" >/dev/null 2>&1 & meta=$!; pids+=("$meta")
wait_for "the metaserver" test -s "$work/meta/meta.addr"
addr="$(cat "$work/meta/meta.addr")"
"$S" format --meta "$addr" bench --storage s3://strata/bench --s3-endpoint "$endpoint" >/dev/null
# shellcheck disable=SC2086 # MOUNT_OPTS is a list of flags
"$S" mount -d --meta "$addr" bench "$work/mnt" --log "$work/mount.log" ${MOUNT_OPTS:-} >/dev/null
mount_pid="$(pgrep -f -- "--log $work/mount.log" | head -1)"

fio_mib() {  # fio_mib RW [flags]: MiB/s of a 1 MiB-block sequential job
  fio --name="$1" --filename="$work/mnt/seq" --rw="$1" --bs=1M --size="$size" --numjobs=1 \
    --ioengine=psync --direct=0 --fallocate=none --output-format=json "${@:2}" |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print("%.1f" % ((j["read"]["bw"] + j["write"]["bw"]) / 1024))'
}
cpu() { for p in "$s3" "$meta" "$mount_pid"; do awk '{print $14+$15}' "/proc/$p/stat"; done; }
echo "sequential write: $(fio_mib write --end_fsync=1) MiB/s"
drop_caches
mapfile -t before < <(cpu)
echo "cold sequential read: $(fio_mib read) MiB/s"
mapfile -t after < <(cpu)
tck="$(getconf CLK_TCK)"
awk -v t="$tck" -v a="${before[*]}" -v b="${after[*]}" 'BEGIN {
  split(a, x, " "); split(b, y, " ");
  printf "CPU seconds during the read: S3 server %.2f, metaserver %.2f, mount %.2f\n",
    (y[1]-x[1])/t, (y[2]-x[2])/t, (y[3]-x[3])/t }'
