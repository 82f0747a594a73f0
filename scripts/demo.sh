#!/usr/bin/env bash
# Set up and run the offline demo: build the dbt models through Dagster, sync active users to a
# local JSON Lines outbox, change three users, and sync again (only the three changes go out).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/retl ]; then
  python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  .venv/bin/pip install -q -e retl_dagster_tests/plugin_sample  # the tests' sample plugin
fi
export PATH="$PWD/.venv/bin:$PATH"

retl validate >/dev/null 2>&1 || true          # first call writes DAGSTER_HOME into .env
set -a; . ./.env; set +a

echo "== building the dbt models (dbt seed + run + test) through Dagster"
dagster asset materialize -m retl_dagster.definitions --select 'group:dbt_models' >/dev/null 2>&1 \
  || { echo "dbt build failed; rerun: dagster asset materialize -m retl_dagster.definitions --select group:dbt_models"; exit 1; }
retl validate

echo "== first sync: every active user is new"
retl sync demo_users_to_file

echo "== three users change their plan in the warehouse"
python - <<'PY'
import duckdb
from retl_dagster.common.settings import warehouse_location
con = duckdb.connect(warehouse_location())
con.execute("update main.users set plan = case plan when 'free' then 'pro' else 'free' end "
            "where user_id in (select user_id from main.users order by user_id limit 3)")
con.close()
PY

echo "== second sync: only the changes are sent"
retl sync demo_users_to_file
retl runs demo_users_to_file
echo "== delivered records: data/outbox/demo_users.jsonl ($(wc -l < data/outbox/demo_users.jsonl) lines)"
echo "== open the UI: .venv/bin/dagster dev -w workspace.yaml   (then http://localhost:3000)"
