#!/usr/bin/env bash
# The whole check, as CI runs it (`bash .ci/run` = this script):
#   venv + project (scripts/setup.sh), peers' dependencies (scripts/install-test-deps.sh),
#   then ruff, mypy and the full pytest suite (unit + integration against real peers).
# Extra arguments go to pytest. Every step runs; the exit status is non-zero if any failed.
# With CI=true a missing peer fails the run instead of skipping (tests/peers/common.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }
elapsed() { printf '    (%ss)\n' "$(( SECONDS - $1 ))"; }

t=$SECONDS; step "setup (venv)"; bash scripts/setup.sh; elapsed "$t"
t=$SECONDS; step "install test dependencies (apt, npm)"; bash scripts/install-test-deps.sh; elapsed "$t"

export PATH="$ROOT/.venv/bin:$PATH"
failed=()
t=$SECONDS; step "ruff check . && ruff format --check ."
{ ruff check . && ruff format --check .; } || failed+=(ruff); elapsed "$t"
t=$SECONDS; step "mypy"; mypy || failed+=(mypy); elapsed "$t"
t=$SECONDS; step "pytest $*"; python -m pytest "$@" || failed+=(pytest); elapsed "$t"

if [ "${#failed[@]}" -gt 0 ]; then
  printf '\nFAILED: %s\n' "${failed[*]}" >&2
  exit 1
fi
printf '\nALL OK\n'
