#!/usr/bin/env bash
# Installs what the tests need beyond scripts/install-deps.sh: the POSIX test
# suite pjdfstest 0.2.2 (from crates.io) and the `tests` user and group it
# switches to. Needs root, as the mount tests do.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
bin="${CARGO_HOME:-$HOME/.cargo}/bin/pjdfstest"
if ! "$bin" --version 2>/dev/null | grep -q "0.2.2"; then
  echo "strata: installing pjdfstest 0.2.2 (cargo install)" >&2
  cargo install pjdfstest --version 0.2.2 --locked --quiet
fi
if [ "$(id -u)" = 0 ]; then
  getent group tests >/dev/null || groupadd tests
  getent passwd tests >/dev/null ||
    useradd -g tests -M -d / -s /usr/sbin/nologin -c "pjdfstest user" tests
fi
