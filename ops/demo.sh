#!/usr/bin/env bash
# README command 1: the main job end to end on the embedded default — the local
# engine over generated sample data (no server needed) — and a result summary.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/ops/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/claidex" demo "$@"
