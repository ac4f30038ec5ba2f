#!/usr/bin/env bash
# The reliability tests at nightly size, on new seeds: the state machine's
# model test (about a million steps), the filesystem core's model test, the
# quota model, the network fault test and the power-loss test, each with
# far more cases, faults or cycles than CI runs. Every seed is printed
# first, so a failure can be run again with the variable shown.
# Usage: bench/reliability_nightly.sh [SEED]   (default: a random seed)
# All of it runs below FUSE (no mount), against real node processes where a
# test is about them. The quota model's extra seeds are 1 to 200, the same
# each night. About an hour on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${1:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
echo "reliability_nightly: seed $seed"
run() {
  echo
  echo "== $*"
  env "$@"
}
run MODEL_CASES=17000 PROPTEST_RNG_SEED="$seed" \
  cargo test --release -p strata-meta --lib model_tests -- --nocapture
run CORE_MODEL_CASES=2000 PROPTEST_RNG_SEED="$seed" \
  cargo test --release -p strata-fuse --test core_model -- --nocapture
run QUOTA_MODEL_SEEDS=200 \
  cargo test --release -p strata-meta --test quota_model -- --nocapture
run NETWORK_FAULT_ROUNDS=70 NETWORK_FAULT_SEED="$seed" \
  cargo test --release -p strata --test network_faults -- --nocapture
run POWER_LOSS_CYCLES=200 POWER_LOSS_SEED="$seed" \
  cargo test --release -p strata --test power_loss -- --nocapture
echo
echo "reliability_nightly: seed $seed passed"
