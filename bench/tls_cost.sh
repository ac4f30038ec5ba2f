#!/usr/bin/env bash
# What TLS costs metadata operations: creates (1 and 4 tasks), lookups of
# missing names and getattrs through the metadata client alone (the
# create_rate example, no FUSE), on a 1-node and a 3-node metaserver each
# with plain TCP and with TLS (certificates from `strata cert`), all four
# running at once and measured in interleaved rounds so the machine's
# swings fall on both sides alike. Prints one line per run and, at the
# end, the median of each column per setup and TLS/plain.
#
# On a machine with two or more cores the servers run on core 0 and the
# client on core 1 (taskset), so that the scheduler moving threads between
# cores does not swing the numbers more than TLS does. The client's own CPU
# time per operation is printed too: on a 2-core box the servers and the
# client share the cores, so TLS's CPU cost shows up as throughput.
#
# usage: bench/tls_cost.sh [FILES] [ROUNDS]   (default 2000 files, 3 rounds)
# Not a test: numbers depend on the machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
files="${1:-2000}"
rounds="${2:-3}"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p strata
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p strata-meta --example create_rate
S="$root/target/release/strata"
RATE="$root/target/release/examples/create_rate"
work="$(mktemp -d /tmp/strata-tls-cost.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$S" cert init --dir "$work/pki" >/dev/null
for i in 1 2 3 4; do "$S" cert issue --dir "$work/pki" --node $i >/dev/null; done
"$S" cert issue --dir "$work/pki" --client bench --admin >/dev/null
tls_node() { echo "--tls-ca $work/pki/ca.pem --tls-cert $work/pki/node-$1.pem --tls-key $work/pki/node-$1.key"; }
client_tls="--tls-ca $work/pki/ca.pem --tls-cert $work/pki/client-bench.pem --tls-key $work/pki/client-bench.key"

server_cpu=()
client_cpu=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 0)
  client_cpu=(taskset -c 1)
fi

serve() { # id port dir [tls flags...]
  local id=$1 port=$2 dir=$3; shift 3
  RUST_LOG=error "${server_cpu[@]}" "$S" meta serve --id "$id" --listen "127.0.0.1:$port" --data-dir "$dir" "$@" \
    >/dev/null 2>"$dir.log" & pids+=($!)
}
# shellcheck disable=SC2046
serve 1 17801 "$work/plain1"
# shellcheck disable=SC2046
serve 1 17802 "$work/tls1" $(tls_node 1)
for i in 1 2 3; do
  serve "$i" $((17810 + i)) "$work/plain3-$i"
  # shellcheck disable=SC2046
  serve "$i" $((17820 + i)) "$work/tls3-$i" $(tls_node "$i")
done
sleep 1
"$S" meta init --meta 127.0.0.1:17811 --peers 1=127.0.0.1:17811,2=127.0.0.1:17812,3=127.0.0.1:17813 >/dev/null
# shellcheck disable=SC2086
"$S" meta init $client_tls --meta 127.0.0.1:17821 --peers 1=127.0.0.1:17821,2=127.0.0.1:17822,3=127.0.0.1:17823 >/dev/null

declare -A addrs=(
  [1-node-plain]=127.0.0.1:17801
  [1-node-tls]=127.0.0.1:17802
  [3-node-plain]=127.0.0.1:17811,127.0.0.1:17812,127.0.0.1:17813
  [3-node-tls]=127.0.0.1:17821,127.0.0.1:17822,127.0.0.1:17823
)
order=(1-node-plain 1-node-tls 3-node-plain 3-node-tls)
out="$work/results"
for r in $(seq 1 "$rounds"); do
  for setup in "${order[@]}"; do
    envs=()
    if [[ $setup == *tls ]]; then
      envs=(STRATA_TLS_CA="$work/pki/ca.pem" STRATA_TLS_CERT="$work/pki/client-bench.pem" STRATA_TLS_KEY="$work/pki/client-bench.key")
    fi
    TIMEFORMAT='%U %S'
    one=$( { time env "${envs[@]}" "${client_cpu[@]}" "$RATE" "${addrs[$setup]}" "$files" 1; } 2>"$work/time")
    cpu=$(awk '{printf "%.2f", $1 + $2}' "$work/time")
    four=$(env "${envs[@]}" "${client_cpu[@]}" "$RATE" "${addrs[$setup]}" "$files" 4)
    c1=$(echo "$one" | sed -n 1p | awk '{print $3}')
    lk=$(echo "$one" | sed -n 2p | awk '{print $3}')
    ga=$(echo "$one" | sed -n 3p | awk '{print $3}')
    c4=$(echo "$four" | sed -n 1p | awk '{print $3}')
    printf '%-13s round %d: creates t1 %s/s, creates t4 %s/s, missing lookups %s/s, getattrs %s/s, client CPU (1 task) %s s\n' \
      "$setup" "$r" "$c1" "$c4" "$lk" "$ga" "$cpu"
    echo "$setup $c1 $c4 $lk $ga $cpu" >>"$out"
  done
done

echo
echo "medians (ops/s) and TLS/plain:"
python3 - "$out" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    s, *v = line.split()
    rows.setdefault(s, []).append([float(x) for x in v])
cols = ["creates t1", "creates t4", "missing lookups", "getattrs", "client CPU s"]
med = {s: [statistics.median(r[i] for r in rs) for i in range(5)] for s, rs in rows.items()}
for s in ["1-node-plain", "1-node-tls", "3-node-plain", "3-node-tls"]:
    print(f"{s:<13} " + "  ".join(f"{c} {m:.4g}" for c, m in zip(cols, med[s])))
for n in ["1-node", "3-node"]:
    p, t = med[f"{n}-plain"], med[f"{n}-tls"]
    print(f"{n} TLS/plain: " + "  ".join(f"{c} {tv / pv:.2f}" for c, pv, tv in zip(cols, p, t)))
PY
