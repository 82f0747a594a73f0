#!/usr/bin/env bash
# Start fakesnow (a Snowflake emulator serving Snowflake's HTTP protocol) for the tests, once;
# print the RETL_WAREHOUSE URL the real Snowflake connector reaches it by (host, port, http).
# Tests give each test its own database on it (retl_dagster_tests/harness.py).
set -euo pipefail
cd "$(dirname "$0")/.."
port="${RETL_FAKESNOW_PORT:-18765}"
dir="${RETL_FAKESNOW_DIR:-${TMPDIR:-/tmp}/retl-fakesnow-$port}"
mkdir -p "$dir"
up() { .venv/bin/python - "$port" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}
if ! up; then
  # setsid + nohup: the server outlives this script (and the shell that ran it).
  setsid nohup .venv/bin/fakesnow -s -p "$port" -d "$dir" >"$dir/server.log" 2>&1 < /dev/null &
  echo $! >"$dir/server.pid"
  for _ in $(seq 60); do up && break; sleep 0.5; done
  up || { echo "fakesnow did not start; see $dir/server.log" >&2; exit 1; }
fi
echo "snowflake://retl:retl@fakesnow/RETL_TEST/PUBLIC?host=127.0.0.1&port=$port&protocol=http&warehouse=RETL_WH"
