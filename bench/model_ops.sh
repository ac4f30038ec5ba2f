#!/usr/bin/env bash
# The state machine's model test (metaserver/src/server/ops/model_tests/)
# at nightly size: CASES sequences of 1 to 119 steps (default 17 000, about
# a million steps), from seed SEED (default: a random one, printed).
# Usage: bench/model_ops.sh [CASES] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-17000}"
seed="${2:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}"
echo "model_ops: $cases sequences from seed $seed"
MODEL_CASES="$cases" PROPTEST_RNG_SEED="$seed" \
  cargo test --release -p strata-meta --lib model_tests -- --nocapture
