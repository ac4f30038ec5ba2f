#!/usr/bin/env bash
# Snapshot and export benchmark. Prints one table:
# - how long `strata snapshot create` and `strata snapshot delete` take on a
#   filesystem of FILES files (default 1 000 000; made with `strata load` from
#   a generated dump, since creating them one by one would take most of an hour);
# - export throughput (MiB/s, files/s) of a tree of large files and of a tree
#   of many small files from a snapshot to an S3 server (s3s-fs on loopback),
#   next to `aws s3 sync` and `rclone copy` of the same trees from a local
#   directory to the same server.
#
# usage: bench/snapshot_bench.sh        (as root; installs fuse3, rclone, awscli)
# Not a test: numbers depend on the machine. Sizes come from the environment:
#   FILES=1000000                 files in the snapshot-time filesystem
#   BIG_FILES=4 BIG_SIZE_MIB=256  the large-file tree
#   SMALL_FILES=100000 SMALL_SIZE=4096 the small-file tree (bytes per file)
#   JOBS=16                       parallel transfers for all three tools
#   KEEP=1                        keep the work directory at the end
set -eEuo pipefail
shopt -s inherit_errexit
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/bench/lib.sh"
require_root "FUSE mounts, dropping the page cache"
FILES="${FILES:-1000000}"
BIG_FILES="${BIG_FILES:-4}"
BIG_SIZE_MIB="${BIG_SIZE_MIB:-256}"
SMALL_FILES="${SMALL_FILES:-100000}"
SMALL_SIZE="${SMALL_SIZE:-4096}"
JOBS="${JOBS:-16}"
META_PORT="${META_PORT:-17760}"

"$root/scripts/install-deps.sh"
need_debian rclone
command -v aws >/dev/null || pip install -q awscli
build_strata --test-s3

work="$(mktemp -d /tmp/strata-snapshot-bench.XXXXXX)"
pids=()
mnt="$work/mnt"
cleanup() {
  set +e
  mountpoint -q "$mnt" && { timeout 60 "$S" umount "$mnt" >/dev/null 2>&1 || fusermount3 -u -z "$mnt"; }
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
rows=()
row() { rows+=("$(printf '%-44s %12s %12s %12s' "$@")"); }

start_test_s3
RUST_LOG=error "$S" meta serve --id 1 --listen "127.0.0.1:$META_PORT" --data-dir "$work/meta" \
  >/dev/null 2>"$work/meta.log" & pids+=($!)
wait_for "strata meta serve" test -s "$work/meta/meta.addr"
meta="127.0.0.1:$META_PORT"
"$S" format --meta "$meta" data --storage s3://strata/data --s3-endpoint "$endpoint" >/dev/null
"$S" mount -d --meta "$meta" data "$mnt" --log "$work/mount.log" >/dev/null

# 1. Snapshot time on FILES files.
mkdir "$mnt/d" && echo template >"$mnt/d/f"
"$S" dump --meta "$meta" data "$work/template.dump" >/dev/null
rm -r "$mnt/d"
echo "generating a dump of $FILES files" >&2
python3 "$root/bench/make_dump.py" "$work/template.dump" "$work/big.dump" "$FILES"
t=$(now); "$S" load --meta "$meta" "$work/big.dump" big >/dev/null; load_s=$(since "$t")
echo "snapshot of $FILES files" >&2
t=$(now); "$S" snapshot create --meta "$meta" big s1 --max-freeze 3600 >/dev/null; snap_s=$(since "$t")
t=$(now); "$S" snapshot delete --meta "$meta" big s1 >/dev/null; del_s=$(since "$t")
row "filesystem of $FILES files" "strata" "" ""
row "  load from a dump (s)" "$load_s" "" ""
row "  snapshot create (s)" "$snap_s" "" ""
row "  snapshot delete (s)" "$del_s" "" ""

# 2. Export: the same trees, made locally and copied into the mount.
echo "making the trees" >&2
mkdir -p "$work/local/big" "$work/local/small"
for i in $(seq "$BIG_FILES"); do
  head -c "$((BIG_SIZE_MIB << 20))" /dev/urandom >"$work/local/big/file$i"
done
python3 - "$work/local/small" "$SMALL_FILES" "$SMALL_SIZE" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    sub = os.path.join(d, "d%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, "f%06d" % i), "wb") as f:
        f.write(os.urandom(size))
PY
cp -r "$work/local/big" "$mnt/big"
cp -r "$work/local/small" "$mnt/small"
sync
"$S" snapshot create --meta "$meta" data big --path /big >/dev/null
"$S" snapshot create --meta "$meta" data small --path /small >/dev/null
rclone_s3=(--s3-provider Other --s3-endpoint "$endpoint" --s3-access-key-id "$access"
  --s3-secret-access-key "$secret" --s3-force-path-style --transfers "$JOBS" --checkers "$JOBS")
for tree in big small; do
  bytes=$(du -sb --apparent-size "$work/local/$tree" | cut -f1)
  files=$(find "$work/local/$tree" -type f | wc -l)
  rate() { python3 -c "import sys; b,f,s=map(float,sys.argv[1:]); print(f'{b/s/2**20:.1f} MiB/s {f/s:.0f} f/s')" "$bytes" "$files" "$1"; }
  for b in "strata-$tree" "aws-$tree" "rclone-$tree"; do mkdir -p "$work/s3/$b"; done
  echo "export of $tree: strata" >&2
  drop_caches
  t=$(now)
  AWS_ENDPOINT_URL="$endpoint" "$S" export --meta "$meta" "data@$tree" "s3://strata-$tree/" \
    --jobs "$JOBS" --quiet >/dev/null
  s_strata=$(since "$t")
  echo "export of $tree: aws s3 sync" >&2
  drop_caches
  t=$(now)
  aws configure set default.s3.max_concurrent_requests "$JOBS"
  aws --endpoint-url "$endpoint" s3 sync --only-show-errors "$work/local/$tree" "s3://aws-$tree/"
  s_aws=$(since "$t")
  echo "export of $tree: rclone copy" >&2
  drop_caches
  # rclone cannot use a custom CA bundle with its own transport (and needs none on plain HTTP).
  t=$(now); env -u AWS_CA_BUNDLE rclone copy "${rclone_s3[@]}" "$work/local/$tree" ":s3:rclone-$tree/" 2>"$work/rclone.log"
  s_rclone=$(since "$t")
  row "export $tree ($files files, $((bytes >> 20)) MiB)" "$(rate "$s_strata" | cut -d' ' -f1,2)" \
    "$(rate "$s_aws" | cut -d' ' -f1,2)" "$(rate "$s_rclone" | cut -d' ' -f1,2)"
  row "" "$(rate "$s_strata" | cut -d' ' -f3,4)" "$(rate "$s_aws" | cut -d' ' -f3,4)" \
    "$(rate "$s_rclone" | cut -d' ' -f3,4)"
done

echo
echo "Strata snapshot and export; s3s-fs on loopback; $(nproc) cores; --jobs/concurrency $JOBS"
printf '%-44s %12s %12s %12s\n' "" "strata" "aws s3 sync" "rclone copy"
printf '%s\n' "${rows[@]}"
echo "(strata exports read blocks from the same S3 server; aws and rclone read a local directory)"
