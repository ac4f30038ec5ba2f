#!/usr/bin/env bash
# One directory with N entries (default 1 000 000) on the embedded default:
# creates them, lists them (readdirplus, which Strata answers page by page
# from the metaserver), stats them, removes them; prints the rate of each
# step and the most memory the mount process held (VmHWM), which stays flat
# however large the directory: no step reads the whole directory at once.
#
# usage: bench/big_dir.sh [N]   (as root; needs fuse3; takes about 20 minutes
#                                for 1 000 000 entries on 2 cores)
# Not a test: numbers depend on the machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-1000000}"
"$root/scripts/install-deps.sh"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p strata
S="$root/target/release/strata"
work="$(mktemp -d /tmp/strata-bigdir.XXXXXX)"
mnt="$work/mnt"
cleanup() {
  "$S" umount "$mnt" >/dev/null 2>&1 || fusermount3 -u -z "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
out="$("$S" mount -d --data-dir "$work/data" "$mnt")"
pid="$(sed -n 's/.*(pid \([0-9]*\),.*/\1/p' <<<"$out")"
hwm() { awk '/VmHWM/ {print $2 " kB"}' "/proc/$pid/status"; }
mkdir "$mnt/big"
python3 - "$mnt/big" "$n" "$pid" <<'PY'
import os, sys, time
d, n, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def hwm():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return line.split()[1] + " kB"
def step(what, f):
    t = time.perf_counter()
    count = f()
    secs = time.perf_counter() - t
    print(f"{what:<8} {count:>9} entries  {secs:8.1f} s  {count / secs:9.0f}/s  mount VmHWM {hwm()}", flush=True)
def create():
    for i in range(n):
        os.close(os.open(f"{d}/f{i:07d}", os.O_CREAT | os.O_WRONLY, 0o644))
    return n
def listing():
    c = 0
    with os.scandir(d) as it:
        for _ in it:
            c += 1
    assert c == n, (c, n)
    return c
def stat():
    c = 0
    with os.scandir(d) as it:
        for e in it:
            e.stat(follow_symlinks=False)
            c += 1
    return c
def remove():
    for i in range(n):
        os.unlink(f"{d}/f{i:07d}")
    assert not os.listdir(d)
    return n
step("create", create)
step("list", listing)
step("stat", stat)
step("remove", remove)
PY
