#!/usr/bin/env bash
# README command 2: the whole test suite, installing and starting what it needs.
# Extra arguments go to pytest (e.g. `bash ops/test.sh -k invariance`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/ops/setup.sh"
cd "$ROOT"
"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/pytest" -q "$@"
