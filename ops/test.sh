#!/usr/bin/env bash
# README command 2: the whole test suite, installing and starting what it needs.
# Extra arguments go to pytest (e.g. `bash ops/test.sh -k invariance`; `-n 0` runs serially).
#
# pytest-xdist, two workers, work stealing: the tests mostly wait on child processes
# (Celery workers, Modal stand-in containers, Postgres, the Bolt server), so two workers keep
# both cores busy (~2x faster than serial). Three were faster still on two cores but lost
# timing races (a kill meant for the merge landed after it), so two. Each worker starts its
# own private servers (session fixtures are per worker; a port another worker took first is
# retried, see tests/devservices.py). Work stealing, not --dist loadfile:
# test_modal_burst.py alone is a third of the suite. CLAIDEX_TEST_WORKERS=0: serial.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/ops/setup.sh"
bash "$ROOT/ops/services.sh"  # server binaries the suite starts privately (never the shared ones)
cd "$ROOT"
"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/pytest" -q -n "${CLAIDEX_TEST_WORKERS:-2}" --dist worksteal "$@"
