#!/usr/bin/env bash
# Run one SimpleSAMLphp IdP on PHP's built-in web server; started by tests/peers/simplesamlphp.py
# in its own session (setsid), so the fixture stops it and php's forked workers as one process
# group.
#   serve.sh STATE_DIR PORT PARENT_PID
# The config must already be in STATE_DIR/config (gen-config.php). If PARENT_PID (the pytest
# process) goes away without stopping us (killed), the whole group is taken down, so no php
# workers are left listening.
set -uo pipefail
STATE_DIR="$1"; PORT="$2"; PARENT_PID="$3"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$STATE_DIR"
SIMPLESAMLPHP_CONFIG_DIR="$STATE_DIR/config" PHP_CLI_SERVER_WORKERS="${PHP_WORKERS:-4}" \
  php -d session.save_path="$STATE_DIR/sessions" -d display_errors=stderr -d log_errors=1 \
  -d error_reporting='E_ALL & ~E_DEPRECATED' \
  -S "127.0.0.1:$PORT" "$HERE/router.php" </dev/null &
child=$!
while kill -0 "$child" 2>/dev/null; do
  if ! kill -0 "$PARENT_PID" 2>/dev/null; then
    kill -TERM 0
    exit 0
  fi
  sleep 1  # orphan watchdog only; readiness is polled by the fixture
done
wait "$child"
