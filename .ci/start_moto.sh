#!/usr/bin/env bash
# Start moto's server (an S3 emulator speaking S3's HTTP API) for the file destination's tests,
# once; print the endpoint URL the real S3 client (s3fs/botocore) reaches it at.
# Tests create a bucket of their own on it (retl_dagster_tests/fakes/s3.py).
set -euo pipefail
cd "$(dirname "$0")/.."
port="${RETL_MOTO_PORT:-18766}"
dir="${RETL_MOTO_DIR:-${TMPDIR:-/tmp}/retl-moto-$port}"
mkdir -p "$dir"
up() { .venv/bin/python - "$port" <<'PY'
import sys, urllib.request
try:
    # moto answers S3's ListBuckets on / (not just an open port: the app is loaded).
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2).close()
except Exception:
    sys.exit(1)
PY
}
if ! up; then
  # setsid + nohup: the server outlives this script (and the shell that ran it).
  setsid nohup .venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$dir/server.log" 2>&1 < /dev/null &
  echo $! >"$dir/server.pid"
  for _ in $(seq 60); do up && break; sleep 0.5; done
  up || { echo "moto_server did not start; see $dir/server.log" >&2; exit 1; }
fi
echo "http://127.0.0.1:$port"
