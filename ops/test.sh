#!/usr/bin/env bash
# README command 2: the whole test suite, installing and starting what it needs.
# Extra arguments go to pytest (e.g. `bash ops/test.sh -k invariance`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/ops/setup.sh"
bash "$ROOT/ops/services.sh"  # server binaries the suite starts privately (never the shared ones)
cd "$ROOT"
"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/pytest" -q "$@"
