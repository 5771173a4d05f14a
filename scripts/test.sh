#!/usr/bin/env bash
# Sets everything up and runs the whole test suite. Extra arguments go to pytest.
#
# With no test paths given, each folder of tests/ (and each tests/test_*.py) runs in its own pytest process: in one
# process for the whole suite, XLA's CPU compiler segfaulted while compiling a small slice near the end (2026-12-02,
# after ~500 tests had loaded models, torch and eight virtual devices into the same process); per folder it does not.
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

# Groups run LCF_TEST_JOBS at a time (default 2: the CI machine's cores; most of a group's time is XLA compiling
# on one thread), longest first so the lanes end together; each group's output is printed whole when it ends.
# Processes that fill the same cache (converted models, TFDS builds) take turns through a file lock.
jobs="${LCF_TEST_JOBS:-2}"
# Order: seconds per group in a run of 2026-12-03 on the 2-core machine (with a T1 scoring alongside): export 762,
# train 675, models 390, adapters 385, eval 216, data 199, launch 164, comm 155, kernels 64, cli 28.
groups=(tests/export/ tests/train/ tests/models/ tests/adapters/ tests/eval/ tests/data/ tests/launch/ tests/comm/
        tests/kernels/ tests/cli/)
for group in tests/test_*.py tests/*/; do  # any group the list above does not name yet, after it
  [[ "$group" == *__pycache__* || " ${groups[*]} " == *" $group "* ]] || groups+=("$group")
done
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
key() { echo "$1" | tr '/.' '__'; }
failed=()
running=0
report_finished() {
  local group f rc secs
  for group in "${groups[@]}"; do
    f="$logs/$(key "$group")"
    if [ -f "$f.rc" ] && [ ! -f "$f.shown" ]; then
      read -r rc secs <"$f.rc"
      echo "== $group (${secs} s)"
      cat "$f.out"
      touch "$f.shown"
      running=$((running - 1))
      [ "$rc" -eq 0 ] || failed+=("$group")
    fi
  done
}
for group in "${groups[@]}"; do
  [ -e "$group" ] || continue
  while [ "$running" -ge "$jobs" ]; do sleep 1; report_finished; done
  f="$logs/$(key "$group")"
  ( start=$SECONDS
    if run_pytest "${options[@]}" "$group" >"$f.out" 2>&1; then rc=0; else rc=$?; fi
    echo "$rc $((SECONDS - start))" >"$f.rc" ) &
  running=$((running + 1))
done
while [ "$running" -gt 0 ]; do sleep 1; report_finished; done
wait
if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
echo "all test groups passed (${SECONDS} s)"
