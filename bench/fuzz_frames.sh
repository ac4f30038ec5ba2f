#!/usr/bin/env bash
# A million random and mutated frames sent to a `strata meta serve` process:
# tests/frame_fuzz.rs (which CI runs with 100 000 frames in debug mode) in
# release mode with more frames. It prints the seed, the mix of frames sent,
# what the node did with them, the requests skipped until authorization
# exists, the node's VmRSS after the warm-up and at the end, and its open
# descriptors; it fails if the node panics, hangs, grows, closes a
# connection it should keep (or keeps one it should close), or stops
# serving a well-behaved client.
#
# usage: bench/fuzz_frames.sh [SEED]
#   STRATA_FUZZ_SEED=N      the seed (or the first argument; random if neither)
#   STRATA_FUZZ_FRAMES=N    frames to send to the plain node (default 1000000)
#   STRATA_FUZZ_TLS_FRAMES=N   frames to send over TLS by a client of one
#                           filesystem, unfiltered (default 200000)
# Not a test: it takes a release build and a few minutes. A failure prints
# the seed, the frames in question and the node's log; repeat it with the
# same seed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seed="${1:-${STRATA_FUZZ_SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}}"
frames="${STRATA_FUZZ_FRAMES:-1000000}"
tls_frames="${STRATA_FUZZ_TLS_FRAMES:-200000}"
echo "fuzz_frames: seed $seed, $frames frames (repeat: bench/fuzz_frames.sh $seed)"
cd "$root"
start=$(date +%s)
STRATA_FUZZ_SEED="$seed" STRATA_FUZZ_FRAMES="$frames" STRATA_FUZZ_TLS_FRAMES="$tls_frames" \
  cargo test --release -p strata --test frame_fuzz -- --nocapture
echo "fuzz_frames: seed $seed passed in $(($(date +%s) - start)) s (build included)"
