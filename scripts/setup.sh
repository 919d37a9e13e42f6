#!/usr/bin/env bash
# Create/refresh the development venv at .venv (repo root) with the project and its test extras.
# Idempotent: pip runs only when pyproject.toml (or the Python version) changed since the last
# successful install, or the editable install is gone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

LOCK="${TMPDIR:-/tmp}/isthmus-setup-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12).lock"
exec 9>"$LOCK"
flock 9

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

STAMP="$VENV/.isthmus-setup"
WANT="$( { "$VENV/bin/python" -VV; cat pyproject.toml; } | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ] \
   || ! "$VENV/bin/python" -c 'import federation, connectors, policies' >/dev/null 2>&1 \
   || ! "$VENV/bin/pip" show -q isthmus >/dev/null 2>&1; then
  echo "setup: pip install -e '.[test]' into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
  printf '%s\n' "$WANT" >"$STAMP"
fi
echo "setup: ok ($("$VENV/bin/python" -V), $VENV)"
