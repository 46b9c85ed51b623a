#!/usr/bin/env bash
# Create the project virtualenv (.venv) from the dev lock, claidex/locks/dev.txt (every
# transitive version exact, with hashes; `bash ops/lock.sh` regenerates it), then the project
# itself, editable and without dependencies. Idempotent: re-installs only when the lock (or
# pyproject.toml) changed. Works on a fresh Debian with Python 3.11.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${CLAIDEX_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "setup: $PY not found; install Python 3.11 (apt-get install -y python3 python3-venv)" >&2
  exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup: Python 3.11 is required, found $("$PY" --version 2>&1)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    echo "setup: installing python3-venv" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
  fi
fi
LOCK=$ROOT/claidex/locks/dev.txt
stamp="$VENV/.installed-$(cat "$LOCK" "$ROOT/pyproject.toml" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing claidex/locks/dev.txt into $VENV" >&2
  log="$VENV/pip-install.log"
  pip=("$VENV/bin/python" -m pip install --disable-pip-version-check)
  # The build backend (setuptools) comes from the lock too: no build isolation, no download.
  if ! { "${pip[@]}" --upgrade pip \
         && "${pip[@]}" --require-hashes -r "$LOCK" \
         && "${pip[@]}" --no-deps --no-build-isolation -e "$ROOT"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "setup: pip install failed (full log: $log)" >&2
    exit 1
  fi
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
