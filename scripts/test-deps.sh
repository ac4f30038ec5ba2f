#!/usr/bin/env bash
# Installs what the tests need beyond scripts/install-deps.sh: the POSIX test
# suite pjdfstest 0.2.2 (from crates.io) and the `tests` user and group it
# switches to, and a Prometheus server (Debian's) that the metrics test
# scrapes with. Needs root, as the mount tests do.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
bin="${CARGO_HOME:-$HOME/.cargo}/bin/pjdfstest"
if ! "$bin" --version 2>/dev/null | grep -q "0.2.2"; then
  echo "strata: installing pjdfstest 0.2.2 (cargo install)" >&2
  cargo install pjdfstest --version 0.2.2 --locked --quiet
fi
if ! command -v prometheus >/dev/null 2>&1; then
  echo "strata: installing prometheus (Debian's, for the metrics test)" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if [ "$(id -u)" = 0 ]; then
  getent group tests >/dev/null || groupadd tests
  getent passwd tests >/dev/null ||
    useradd -g tests -M -d / -s /usr/sbin/nologin -c "pjdfstest user" tests
fi
