#!/usr/bin/env bash
# Scale (issue 27, aim 5): a one-node metaserver holding FILES inodes.
#   1. metadata rates on a fresh filesystem (bench/meta_ops.py: create,
#      rename, unlink, mkdir, rmdir; one process, then PROCS in a directory
#      each), and stats of random files of a loaded tree of SMALL_FILES;
#   2. a generated dump of FILES small files, WIDE to a directory
#      (bench/make_dump.py), loaded with `strata load`; the metaserver's RSS
#      and data size after it;
#   3. the metaserver stopped (SIGTERM) and started again, then killed
#      (SIGKILL) and started again: seconds until it answers (`strata status`);
#   4. the same rates on the big filesystem, and stats of its files picked
#      at random;
#   5. a directory of WIDE entries listed through a fresh mount (`ls -f`),
#      entries/s, and the mount's peak RSS before and after;
#   6. `strata snapshot create` of the big filesystem, timed.
# Prints a table, with the big filesystem's rates over the fresh one's.
#
# usage: bench/scale.sh        (as root; installs fuse3)
#   FILES=10000000 WIDE=1000000                  the loaded tree
#   SMALL_FILES=20000                            the tree stats are compared with
#   OPS_FILES=4000 PROCS=8                       meta_ops.py --files and processes
#   PREWARM=1                                    `meta serve --prewarm`
#   KEEP=1                                       keep the work directory
# Not a test: numbers depend on the machine; run it on an idle one. With
# 10 M files it writes about 5 GB under /tmp and takes about 15 minutes.
set -eEuo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/bench/lib.sh"
require_root "FUSE mounts, dropping the page cache"
FILES="${FILES:-10000000}"
WIDE="${WIDE:-1000000}"
SMALL_FILES="${SMALL_FILES:-20000}"
OPS_FILES="${OPS_FILES:-4000}"
PROCS="${PROCS:-8}"
META_PORT="${META_PORT:-17780}"
"$root/scripts/install-deps.sh"
build_strata
work="$(mktemp -d /tmp/strata-scale.XXXXXX)"
mnt="$work/mnt"
mkdir -p "$mnt" "$work/blocks"
meta_pid=
cleanup() {
  set +e
  mountpoint -q "$mnt" && { timeout 60 "$S" umount "$mnt" >/dev/null 2>&1 || fusermount3 -u -z "$mnt"; }
  [ -n "$meta_pid" ] && kill "$meta_pid" 2>/dev/null
  wait 2>/dev/null
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
meta=(--meta "127.0.0.1:$META_PORT")
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
rss_mib() { awk '/^'"$2"':/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

# Starts the metaserver; sets meta_pid, and answered_in to the seconds
# until it answered.
start_meta() {
  local t0
  t0="$(now)"
  local prewarm=()
  [ "${PREWARM:-0}" = 1 ] && prewarm=(--prewarm)
  RUST_LOG=error "$S" meta serve --id 1 --listen "127.0.0.1:$META_PORT" --data-dir "$work/meta" \
    "${prewarm[@]}" >>"$work/meta.log" 2>&1 &
  meta_pid=$!
  for _ in $(seq 6000); do
    if "$S" status "${meta[@]}" >/dev/null 2>&1; then
      answered_in="$(secs "$t0" "$(now)")"
      return 0
    fi
    if ! kill -0 "$meta_pid" 2>/dev/null; then
      echo "scale.sh: the metaserver exited; see $work/meta.log" >&2
      exit 1
    fi
    sleep 0.01
  done
  echo "scale.sh: the metaserver did not answer in 60 s" >&2
  exit 1
}
stop_meta() {  # stop_meta SIGNAL
  kill "-$1" "$meta_pid"
  wait "$meta_pid" 2>/dev/null || true
}
mount_fs() { "$S" mount -d "${meta[@]}" "$1" "$mnt" --log "$work/mount.log" >/dev/null; }
mount_pid() { pgrep -n -f -- "mount .*$mnt( |\$)"; }
# random_stat FS FILES: stats per second, one process, of 20 000 files of a
# loaded tree (make_dump.py's names, WIDE to a directory) picked at random,
# through a fresh mount: each one a metaserver lookup.
random_stat() {
  mount_fs "$1"
  python3 - "$mnt" "$2" "$WIDE" <<'PY'
import os, random, sys, time
root, files, per_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
picks = [rng.randrange(files) for _ in range(20000)]
t = time.perf_counter()
for j in picks:
    os.stat(os.path.join(root, "d%06d" % (j // per_dir), "f%06d" % (j % per_dir)))
print(f"{len(picks) / (time.perf_counter() - t):.0f}")
PY
  "$S" umount "$mnt" >/dev/null
}
# meta_ops FS LABEL: one process, then PROCS in a directory each.
meta_ops() {
  mount_fs "$1"
  python3 "$root/bench/meta_ops.py" "$mnt" --threads 1 --files "$((OPS_FILES / 4))" --label "$2, 1 process"
  python3 "$root/bench/meta_ops.py" "$mnt" --threads "$PROCS" --spread --files "$OPS_FILES" \
    --label "$2, $PROCS processes"
  "$S" umount "$mnt" >/dev/null
}

start_meta
# The template: one directory `d` with one file `f`, written through a
# mount; one partition large enough for every inode (dense numbers from 1).
room=$(( (FILES + FILES / WIDE + 1024) * 2 ))
"$S" format "${meta[@]}" template --storage "file://$work/blocks" \
  --partitions 1 --inodes-per-partition "$room" >/dev/null
mount_fs template
mkdir "$mnt/d"
echo template >"$mnt/d/f"
"$S" umount "$mnt" >/dev/null
"$S" dump "${meta[@]}" template "$work/template.dump" >/dev/null

echo "1. metadata rates on a fresh filesystem, and stats in a tree of $SMALL_FILES files" >&2
"$S" format "${meta[@]}" fresh --storage "file://$work/blocks" >/dev/null
meta_ops fresh fresh | tee "$work/fresh.txt"
python3 "$root/bench/make_dump.py" "$work/template.dump" "$work/small.dump" "$SMALL_FILES" "$WIDE"
"$S" load "${meta[@]}" "$work/small.dump" small >&2
random_stat small "$SMALL_FILES" >"$work/fresh-stat.txt"

echo "2. generating and loading $FILES files" >&2
t0="$(now)"
python3 "$root/bench/make_dump.py" "$work/template.dump" "$work/big.dump" "$FILES" "$WIDE"
gen_s="$(secs "$t0" "$(now)")"
t0="$(now)"
"$S" load "${meta[@]}" "$work/big.dump" big >&2
load_s="$(secs "$t0" "$(now)")"
rm -f "$work/big.dump"
load_rss="$(rss_mib "$meta_pid" VmRSS)"
data_mib="$(du -sm "$work/meta" | awk '{print $1}')"

echo "3. restarting the metaserver" >&2
stop_meta TERM
drop_caches
start_meta
restart_term="$answered_in"
stop_meta KILL
drop_caches
start_meta
restart_kill="$answered_in"
idle_rss="$(rss_mib "$meta_pid" VmRSS)"

echo "4. metadata rates on the big filesystem" >&2
meta_ops big "$FILES files" | tee "$work/big.txt"
random_stat big "$FILES" >"$work/big-stat.txt"

echo "5. listing the directory of $WIDE entries" >&2
drop_caches
mount_fs big
mp="$(mount_pid)"
rss_before="$(rss_mib "$mp" VmHWM)"
t0="$(now)"
listed="$(ls -f "$mnt/d000000" | wc -l)"
list_s="$(secs "$t0" "$(now)")"
rss_after="$(rss_mib "$mp" VmHWM)"
"$S" umount "$mnt" >/dev/null
if [ "$listed" != "$((WIDE + 2))" ]; then
  echo "scale.sh: listed $listed names in d000000, expected $((WIDE + 2))" >&2
  exit 1
fi

echo "6. snapshot create of $FILES files" >&2
t0="$(now)"
"$S" snapshot create "${meta[@]}" big s1 >&2
snap_s="$(secs "$t0" "$(now)")"

# rate FILE LABEL OP: OP's rate on the line of FILE whose label starts LABEL.
rate() { grep -F "$2" "$1" | grep -o "$3=[0-9]*" | cut -d= -f2; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo
echo "$FILES files, $WIDE to a directory; one-node metaserver; $(nproc) cores"
printf '%-52s %s\n' "generating the dump (s)" "$gen_s"
printf '%-52s %s\n' "strata load (s)" "$load_s"
printf '%-52s %s\n' "metaserver data on disk (MiB)" "$data_mib"
printf '%-52s %s\n' "metaserver RSS after the load / after restart (MiB)" "$load_rss / $idle_rss"
printf '%-52s %s\n' "restart to serving after SIGTERM (s)" "$restart_term"
printf '%-52s %s\n' "restart to serving after SIGKILL (s)" "$restart_kill"
printf '%-52s %s\n' "ls -f of $WIDE entries (s)" "$list_s"
printf '%-52s %s\n' "  entries/s" "$(awk -v n="$WIDE" -v s="$list_s" 'BEGIN {printf "%.0f", n / s}')"
printf '%-52s %s\n' "mount peak RSS before / after the listing (MiB)" "$rss_before / $rss_after"
printf '%-52s %s\n' "snapshot create (s)" "$snap_s"
echo
printf '%-24s %10s %10s %10s\n' "rate (/s)" "fresh" "big" "big/fresh"
a="$(cat "$work/fresh-stat.txt")" b="$(cat "$work/big-stat.txt")"
printf '%-24s %10s %10s %10s\n' "stat (random), 1 process" "$a" "$b" "$(ratio "$b" "$a")"
# meta_ops.py's own stats are of files just created: the kernel's attribute
# cache answers them, so they are left out.
for run in "1 process" "$PROCS processes"; do
  for op in create rename unlink mkdir rmdir; do
    a="$(rate "$work/fresh.txt" "fresh, $run" "$op")"
    b="$(rate "$work/big.txt" "$FILES files, $run" "$op")"
    printf '%-24s %10s %10s %10s\n' "$op, $run" "$a" "$b" "$(ratio "$b" "$a")"
  done
done
