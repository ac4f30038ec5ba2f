#!/usr/bin/env bash
# Installs what Strata needs at run time and in tests: FUSE 3 (fusermount3,
# /dev/fuse). The test S3 server (s3s-fs) is built by cargo with the tests.
set -euo pipefail
if command -v fusermount3 >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "strata: installing fuse3 (needs root)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fuse3 >/dev/null
