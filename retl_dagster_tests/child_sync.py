"""Run one sync in a process of its own (for tests that kill it, or run two at once).

    python -m retl_dagster_tests.child_sync DESTINATIONS_YAML SYNC_YAML NAME

Uses the instance at $DAGSTER_HOME and the warehouse at $RETL_WAREHOUSE; prints the summary.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg

from retl_dagster.runner import run_sync
from retl_dagster_tests.harness import defs_from_yaml


def main() -> None:
    destinations, sync, name = sys.argv[1:4]
    defs = defs_from_yaml(Path(destinations).read_text(), Path(sync).read_text())
    outcome = run_sync(defs, name, dg.DagsterInstance.get(), log_level="WARNING")
    print(json.dumps(outcome.summary, default=str))
    sys.exit(outcome.exit_code)


if __name__ == "__main__":
    main()
