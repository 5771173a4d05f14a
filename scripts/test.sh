#!/usr/bin/env bash
# Sets everything up and runs the whole test suite. Extra arguments go to pytest.
#
# With no test paths given, each folder of tests/ runs in its own pytest process: in one process for the
# whole suite, XLA's CPU compiler segfaulted while compiling a small slice near the end (2026-12-02, after
# ~500 tests had loaded models, torch and eight virtual devices into the same process); per folder it does not.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

run_pytest() {
  set +e
  .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
  local rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests in: $*  (that is a failure here)" >&2
    return 1
  fi
  return "$rc"
}

paths=()
options=()
for arg in "$@"; do
  case "$arg" in
    -*) options+=("$arg") ;;
    *) paths+=("$arg") ;;
  esac
done

if [ "${#paths[@]}" -gt 0 ]; then
  run_pytest "$@"
  exit $?
fi

failed=()
groups=(tests/test_*.py tests/*/)
for group in "${groups[@]}"; do
  echo "== $group"
  run_pytest "${options[@]}" "$group" || failed+=("$group")
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
echo "all ${#groups[@]} test groups passed"
