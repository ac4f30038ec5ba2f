#!/usr/bin/env bash
# Datasets (issue 27, aim 4): a training job's epochs over many small files,
# read whole in a shuffled order by parallel reader processes.
#   cold epochs: a fresh mount with an empty disk cache, the S3 server
#     answering every GET after S3_GET_LATENCY_MS (as a remote store would),
#     with 1, 4 and 16 readers;
#   warm epochs: the blocks in the disk cache (the page cache dropped), 4 and
#     16 readers, next to the same files on the local disk and through a
#     FUSE passthrough of them (bindfs: what FUSE alone allows here);
#   `strata warmup` of the dataset on a fresh mount with an empty cache;
#   the store's own limit for these GETs: a plain S3 client (`s3_raw`, the
#   AWS SDK) GETting as many 128K objects with as many in flight as the
#   16-reader epoch and the warmup.
# Prints files/s for each and the ratios the issue names.
#
# usage: bench/dataset_epoch.sh   (as root; installs fuse3 and bindfs)
#   FILES=2000 SIZE=128K DIRS=20   the dataset (SIZE in K or M)
#   S3_GET_LATENCY_MS=20            the store's latency per GET
#   WARMUP_JOBS=64                  `strata warmup --jobs`
#   KEEP=1                          keep the work directory
# Not a test: numbers depend on the machine; run it on an idle one.
set -eEuo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/bench/lib.sh"
require_root "FUSE mounts, dropping the page cache"
FILES="${FILES:-2000}"
SIZE="${SIZE:-128K}"
DIRS="${DIRS:-20}"
S3_GET_LATENCY_MS="${S3_GET_LATENCY_MS:-20}"
WARMUP_JOBS="${WARMUP_JOBS:-64}"
META_PORT="${META_PORT:-17770}"
case "$SIZE" in
  *[Kk]) size_kib="${SIZE%?}" ;;
  *[Mm]) size_kib="$(( ${SIZE%?} * 1024 ))" ;;
  *) echo "dataset_epoch.sh: SIZE must end in K or M, not $SIZE" >&2; exit 1 ;;
esac
"$root/scripts/install-deps.sh"
need_debian bindfs
build_strata --test-s3
ops="$root/bench/data_ops.py"
work="$(mktemp -d /tmp/strata-dataset.XXXXXX)"
mnt="$work/mnt"
passthrough="$work/passthrough"
pids=()
cleanup() {
  set +e
  mountpoint -q "$mnt" && { timeout 60 "$S" umount "$mnt" >/dev/null 2>&1 || fusermount3 -u -z "$mnt"; }
  mountpoint -q "$passthrough" && fusermount3 -u -z "$passthrough"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export S3_GET_LATENCY_MS
start_test_s3
RUST_LOG=error "$S" meta serve --id 1 --listen "127.0.0.1:$META_PORT" --data-dir "$work/meta" \
  >/dev/null 2>"$work/meta.log" & pids+=($!)
wait_for "strata meta serve" test -s "$work/meta/meta.addr"
"$S" format --meta "127.0.0.1:$META_PORT" data --storage s3://strata/data --s3-endpoint "$endpoint" >/dev/null

# mount [keep]: a fresh mount; without "keep", an empty disk cache.
mount_fresh() {
  if mountpoint -q "$mnt"; then "$S" umount "$mnt" >/dev/null; fi
  [ "${1:-}" = keep ] || rm -rf "$work/cache"
  drop_caches
  "$S" mount -d --meta "127.0.0.1:$META_PORT" data "$mnt" --log "$work/mount.log" \
    --cache-dir "$work/cache" >/dev/null
}

# The dataset, written once (PUTs are not delayed), and a copy on local disk.
mount_fresh
echo "writing $FILES files of $SIZE in $DIRS directories" >&2
python3 - "$mnt/set" "$work/local" "$FILES" "$SIZE" "$DIRS" <<'PY'
import os, sys
mnt, local, files, size, dirs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
n = int(size[:-1]) * units[size[-1].upper()] if size[-1].upper() in units else int(size)
for base in (mnt, local):
    for d in range(dirs):
        os.makedirs(os.path.join(base, f"d{d}"), exist_ok=True)
for i in range(files):
    data = os.urandom(n)
    for base in (mnt, local):
        with open(os.path.join(base, f"d{i % dirs}", f"f{i}"), "wb") as f:
            f.write(data)
PY

declare -A rate
for r in 1 4 16; do
  mount_fresh
  echo "cold epoch, $r readers (every GET ${S3_GET_LATENCY_MS} ms)" >&2
  rate[cold$r]="$(python3 "$ops" epoch "$mnt/set" "$r" "$r")"
done
# The last cold epoch left every block in the disk cache.
mkdir -p "$passthrough"
bindfs "$work/local" "$passthrough"
for r in 4 16; do
  mount_fresh keep
  echo "warm epoch, $r readers" >&2
  rate[warm$r]="$(python3 "$ops" epoch "$mnt/set" "$r" "$((r + 100))")"
  drop_caches
  echo "local disk, $r readers" >&2
  rate[local$r]="$(python3 "$ops" epoch "$work/local" "$r" "$((r + 100))")"
  drop_caches
  echo "FUSE passthrough (bindfs) of the local disk, $r readers" >&2
  rate[fuse$r]="$(python3 "$ops" epoch "$passthrough" "$r" "$((r + 100))")"
done
fusermount3 -u "$passthrough"
mount_fresh
echo "strata warmup --jobs $WARMUP_JOBS" >&2
start=$(date +%s.%N)
"$S" warmup --jobs "$WARMUP_JOBS" "$mnt/set" >/dev/null
end=$(date +%s.%N)
rate[warmup]="$(awk -v a="$start" -v b="$end" -v n="$FILES" 'BEGIN {printf "%.1f", n / (b - a)}')"
# The same GETs from a plain client, in a bucket of their own.
for c in 16 "$WARMUP_JOBS"; do
  rate[raw$c]="$("$root/target/release/examples/s3_raw" "$endpoint" strata "$access" "$secret" \
    "$(( (FILES * size_kib + 1023) / 1024 ))" "${size_kib}K" "$c" | awk '{print $6}')"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo
echo "$FILES files of $SIZE; every GET waits ${S3_GET_LATENCY_MS} ms; $(nproc) cores"
printf '%-34s %10s\n' "epoch" "files/s"
for r in 1 4 16; do printf '%-34s %10s\n' "cold, $r readers" "${rate[cold$r]}"; done
for r in 4 16; do
  printf '%-34s %10s\n' "warm (disk cache), $r readers" "${rate[warm$r]}"
  printf '%-34s %10s\n' "local disk, $r readers" "${rate[local$r]}"
  printf '%-34s %10s\n' "bindfs of the local disk, $r readers" "${rate[fuse$r]}"
done
printf '%-34s %10s\n' "strata warmup --jobs $WARMUP_JOBS" "${rate[warmup]}"
for c in 16 "$WARMUP_JOBS"; do
  printf '%-34s %10s\n' "plain S3 client, $c GETs in flight" "${rate[raw$c]}"
done
echo
echo "warm / local disk: 4 readers $(ratio "${rate[warm4]}" "${rate[local4]}"), 16 readers $(ratio "${rate[warm16]}" "${rate[local16]}") (aim >= 0.7)"
echo "bindfs / local disk (FUSE alone): 4 readers $(ratio "${rate[fuse4]}" "${rate[local4]}"), 16 readers $(ratio "${rate[fuse16]}" "${rate[local16]}")"
echo "warm / bindfs: 4 readers $(ratio "${rate[warm4]}" "${rate[fuse4]}"), 16 readers $(ratio "${rate[warm16]}" "${rate[fuse16]}")"
echo "cold 16 readers / cold 1 reader: $(ratio "${rate[cold16]}" "${rate[cold1]}") (aim >= 10)"
echo "warmup / cold epoch: 1 reader $(ratio "${rate[warmup]}" "${rate[cold1]}"), 16 readers $(ratio "${rate[warmup]}" "${rate[cold16]}") (aim >= 5)"
echo "against the store's own limit: cold 16 readers $(ratio "${rate[cold16]}" "${rate[raw16]}"), warmup $(ratio "${rate[warmup]}" "${rate[raw$WARMUP_JOBS]}")"
