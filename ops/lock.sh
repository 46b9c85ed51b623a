#!/usr/bin/env bash
# Regenerate the dependency locks in claidex/locks/ (shipped inside the package) with
# `uv pip compile`: every transitive version exact, with hashes, for CPython 3.11 on
# x86_64 Linux: glibc 2.28 and up for what the Docker and Modal images install, 2.34 for the
# dev tools (arcadedb-embedded has no older wheel; the dev machines are Debian 12, glibc 2.36).
#   runtime.txt    pyproject.toml's dependencies: the Docker image
#   dev.txt        runtime + the dev extra: ops/setup.sh's .venv
#   container.txt  the closure of container.in (what Modal containers import): the Modal image
# dev.txt and container.txt are compiled with `-c runtime.txt`, so a package has one version
# in all three. tests/test_locks.py fails when a lock and pyproject.toml disagree.
# After changing a pin: `bash ops/lock.sh`, then `bash ops/setup.sh`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UV=${UV:-$ROOT/.venv/bin/uv}
if [ ! -x "$UV" ]; then
  echo "lock: $UV not found; run bash ops/setup.sh first (uv is in the dev extra)" >&2
  exit 1
fi
cd "$ROOT"
compile() {
  local glibc=$1
  shift
  "$UV" pip compile --quiet --generate-hashes --python-version 3.11 \
    --python-platform "x86_64-manylinux_$glibc" --custom-compile-command "bash ops/lock.sh" "$@"
}
compile 2_28 pyproject.toml -o claidex/locks/runtime.txt
compile 2_34 pyproject.toml --extra dev -c claidex/locks/runtime.txt -o claidex/locks/dev.txt
compile 2_28 claidex/locks/container.in -c claidex/locks/runtime.txt -o claidex/locks/container.txt
echo "lock: claidex/locks/{runtime,dev,container}.txt written; now bash ops/setup.sh" >&2
