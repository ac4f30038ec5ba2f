#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests that mount through the
# kernel's FUSE, talk to a real S3 server over HTTP on loopback and run
# metaservers as separate processes, and the POSIX suite pjdfstest. Installs
# fuse3, pjdfstest and its test user first if they are missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/test-deps.sh
if [ ! -e /dev/fuse ]; then
  echo "strata: /dev/fuse is missing; load the fuse module (modprobe fuse) and retry" >&2
  exit 1
fi
# A CI build is thrown away afterwards: incremental state would only take disk.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=0
fi
cargo test --workspace --all-targets "$@"
