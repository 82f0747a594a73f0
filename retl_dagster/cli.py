"""`retl`: the command line over the same Dagster definitions the UI shows."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from dotenv import load_dotenv

from retl_dagster.common.settings import PROJECT_ROOT

EXIT_FAILED = 1

# One warehouse-writing step at a time (DuckDB allows a single writer per file), and one queued
# run per sync (job tag `retl/sync`) for runs launched from the UI, schedules and sensors.
INSTANCE_YAML = """\
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
  runs:
    tag_concurrency_limits:
      - key: retl/sync
        value:
          applyLimitPerUniqueValue: true
        limit: 1
"""

# Hightouch's words for a run's state, from what `_retl.sync_runs` says.
STATUS_WORDS = {
    "querying": "Querying",
    "preparing": "Preparing",
    "queued": "Queued",
    "in_progress": "In Progress",
    "succeeded": "Healthy",
    "partial": "Partial",
    "failed": "Failed",
    "incomplete": "Incomplete",
}


def ensure_dagster_home() -> Path:
    """Share `$DAGSTER_HOME` with `dagster dev`: read the project's `.env`, and on first use
    write `DAGSTER_HOME=<project>/.dagster_home` into it (dagster dev loads .env by itself)."""
    env_file = PROJECT_ROOT / ".env"
    load_dotenv(env_file, override=False)
    if not os.environ.get("DAGSTER_HOME"):
        home = PROJECT_ROOT / ".dagster_home"
        with env_file.open("a", encoding="utf-8") as fh:
            fh.write(f"DAGSTER_HOME={home}\n")
        os.environ["DAGSTER_HOME"] = str(home)
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text(INSTANCE_YAML)
    return home


def _load_defs() -> Any:
    from retl_dagster.definitions import defs

    return defs()


def _configs(defs: Any) -> dict[str, Any]:
    from retl_dagster.components.references import sync_configs

    return {c.name: c for c in sync_configs(defs)}


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_FAILED)


def _sync_config(defs: Any, name: str) -> Any:
    configs = _configs(defs)
    if name not in configs:
        _fail(f"no sync named '{name}'. Syncs: {', '.join(configs) or 'none'}")
    return configs[name]


def _summary_line(s: dict[str, Any]) -> str:
    def n(k: str) -> str:
        return "-" if s.get(k) is None else str(s[k])

    line = (
        f"sync {s['sync']} {s['status']}: run {s['run_id']}, {n('rows_queried')} rows queried, "
        f"{n('added')} added, {n('changed')} changed, {n('removed')} removed, "
        f"{n('succeeded')} succeeded, {n('rejected')} rejected in {n('duration_s')}s"
    )
    if s.get("identified") is not None:
        # Audience and conversion destinations: how many rows could be matched at all.
        rate = s.get("match_rate")
        line += f", {s['identified']} identified" + (
            f", match rate {rate:.1%}" if rate is not None else ", match rate not reported"
        )
    return line


@click.group()
def main() -> None:
    """Reverse ETL on Dagster: validate, run and inspect syncs."""
    ensure_dagster_home()


def _validate_sync_yaml() -> list[str]:
    """Check every Sync defs.yaml on its own first, for errors that name the sync and the fix
    (Dagster's loader names only the file and line)."""
    import pydantic
    import yaml

    from retl_dagster.engine.config import SyncConfig, explain

    errors: list[str] = []
    for path in sorted((PROJECT_ROOT / "retl_dagster" / "defs").rglob("defs.yaml")):
        rel = path.relative_to(PROJECT_ROOT)
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except yaml.YAMLError as exc:
            errors.append(f"{rel}: not valid YAML: {exc}")
            continue
        for doc in docs:
            if doc.get("type") != "retl_dagster.components.Sync":
                continue
            attrs = doc.get("attributes") or {}
            name = attrs.get("name") or path.parent.name
            try:
                SyncConfig.model_validate(attrs)
            except pydantic.ValidationError as exc:
                errors += explain(exc, name, str(rel))
    return errors


@main.command()
def validate() -> None:
    """Load every declaration and check each sync against the warehouse."""
    from retl_dagster.common.settings import safe_location
    from retl_dagster.components.references import remote_property_errors
    from retl_dagster.engine import diff
    from retl_dagster.engine.model_sql import model_select
    from retl_dagster.engine.warehouse import Warehouse

    yaml_errors = _validate_sync_yaml()
    if yaml_errors:
        for e in yaml_errors:
            click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_FAILED)
    try:
        defs = _load_defs()
    except Exception as exc:  # component loading wraps our errors; show the innermost
        cause: BaseException = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        _fail(str(cause) if str(cause) else str(exc))
    configs = _configs(defs)
    errors: list[str] = remote_property_errors(defs)
    wh_ok = True
    try:
        wh = Warehouse(read_only=True)
        wh.open()
    except Exception as exc:
        wh_ok = False
        click.echo(
            f"warning: warehouse {safe_location()} not readable ({exc}); "
            "model columns were not checked. Build the models first (see README).",
            err=True,
        )
    if wh_ok:
        with wh:
            for cfg in configs.values():
                try:
                    sql = model_select(cfg)
                    diff.model_columns(wh, cfg, sql)
                    report = diff.check_keys(wh, cfg, sql)
                    if not report.ok:
                        errors.append(report.describe(cfg.name, cfg.primary_key))
                except Exception as exc:
                    errors.append(str(exc))
    for e in errors:
        click.echo(f"error: {e}", err=True)
    if errors:
        sys.exit(EXIT_FAILED)
    click.echo(f"ok: {len(configs)} sync(s) valid: {', '.join(configs)}")


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--verbose", is_flag=True, help="Show Dagster's run log.")
def sync(name: str, as_json: bool, verbose: bool) -> None:
    """Run sync NAME once through Dagster (recorded in $DAGSTER_HOME, visible in the UI).

    Exit 0: everything delivered; 2: some records rejected; 1: the run failed.
    """
    _sync(name, as_json, verbose)


@main.command()
@click.argument("name")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--verbose", is_flag=True, help="Show Dagster's run log.")
def replay(name: str, run_id: str, as_json: bool, verbose: bool) -> None:
    """Resend every record of run RUN_ID of sync NAME, as a new run (exit codes as `sync`)."""
    _sync(name, as_json, verbose, replay_of=run_id)


@main.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(name: str, yes: bool) -> None:
    """Forget what sync NAME delivered: its next run sends every row as added."""
    from retl_dagster.engine import stages
    from retl_dagster.engine.warehouse import Warehouse

    _, cfg, _ = _sync_parts(name)
    for warning in cfg.reset_warnings():
        click.echo(f"warning: {warning}", err=True)
    if not yes and not click.confirm(f"Forget the state of sync {name}?", err=True):
        _fail("not reset")
    with Warehouse() as wh:
        n = stages.reset(wh, cfg)
    click.echo(f"sync {name} reset: {n} record(s) forgotten; the next run sends every row as added")


def _sync(name: str, as_json: bool, verbose: bool, replay_of: str | None = None) -> None:
    import dagster as dg
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from retl_dagster.components import sync as sync_component
    from retl_dagster.runner import SyncAlreadyRunning, SyncDisabled, run_sync

    defs = _load_defs()
    _sync_config(defs, name)
    show_bar = sys.stderr.isatty() and not as_json
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        disable=not show_bar,
    )
    task = bar.add_task(f"sync {name}", total=None)

    def on_progress(sync_name: str, done: int, total: int) -> None:
        if sync_name == name:
            bar.update(task, completed=done, total=total)

    sync_component.progress_listeners.append(on_progress)
    try:
        with bar:
            outcome = run_sync(
                defs,
                name,
                dg.DagsterInstance.get(),
                log_level="INFO" if verbose else "CRITICAL",
                tags={"retl/trigger": "cli"},
                replay_of=replay_of,
            )
    except (SyncAlreadyRunning, SyncDisabled) as exc:
        _fail(str(exc))
    finally:
        sync_component.progress_listeners.remove(on_progress)
    out = outcome.summary
    if as_json:
        click.echo(json.dumps(out, default=str))
    else:
        click.echo(_summary_line(out))
        if out.get("error"):
            click.echo(f"error: {out['error']}", err=True)
    sys.exit(outcome.exit_code)


def _sync_parts(name: str) -> tuple[Any, Any, Any]:
    """(definitions, the sync's config, its destination resource)."""
    from retl_dagster.components.destination_resources import resource_key

    defs = _load_defs()
    cfg = _sync_config(defs, name)
    return defs, cfg, (defs.resources or {})[resource_key(cfg.destination)]


@main.command()
@click.argument("name")
@click.option("--samples", default=3, show_default=True, help="Sample payloads per operation.")
@click.option("--json", "as_json", is_flag=True)
def plan(name: str, samples: int, as_json: bool) -> None:
    """Dry run of sync NAME: the next run's counts and sample payloads; nothing is sent."""
    from retl_dagster.engine import stages
    from retl_dagster.engine.warehouse import Warehouse

    _, cfg, _ = _sync_parts(name)
    try:
        with Warehouse() as wh:
            result = stages.plan(wh, cfg, samples)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "sync": name,
                    "rows_queried": result.rows_queried,
                    **result.counts,
                    "sent_ops": result.sent_ops,
                    "samples": result.samples,
                },
                default=str,
            )
        )
        return
    for line in stages.describe_plan(cfg, result):
        click.echo(line)


@main.command("test-row")
@click.argument("name")
@click.argument("row_id")
@click.option(
    "--as",
    "as_op",
    type=click.Choice(["added", "changed", "removed"]),
    default="added",
    show_default=True,
)
def test_row_command(name: str, row_id: str, as_op: str) -> None:
    """Send the model's row ROW_ID of sync NAME to its destination and print the exact request
    (secrets redacted) and the answer. The sync's state does not change."""
    from retl_dagster.destinations.http import format_exchange
    from retl_dagster.engine import stages
    from retl_dagster.engine.warehouse import Warehouse

    _, cfg, resource = _sync_parts(name)
    redact = resource.redact
    try:
        with Warehouse() as wh, resource.client() as destination:
            outcome = stages.send_test_row(wh, cfg, destination, row_id, as_op)
    except Exception as exc:
        _fail(redact(str(exc)))
    record = outcome.record
    click.echo(
        "record: "
        + redact(
            json.dumps({"op": record.op, "id": record.key, "fields": record.fields}, default=str)
        )
    )
    for response in outcome.exchanges:
        click.echo(format_exchange(response, redact))
    reason = outcome.rejected
    click.echo(f"result: rejected: {redact(reason)}" if reason else "result: delivered")
    sys.exit(2 if reason else 0)


def _history(name: str, limit: int) -> list[dict[str, Any]]:
    from retl_dagster.engine.runs import run_history
    from retl_dagster.engine.warehouse import Warehouse
    from retl_dagster.runner import summarize

    try:
        with Warehouse(read_only=True) as wh:
            return [summarize(r) for r in run_history(wh, name, limit)]
    except Exception as exc:
        if "lock" in str(exc).lower():
            _fail("the warehouse is locked by a running sync; try again when it finishes")
        return []  # no warehouse yet: no runs


@main.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Every sync: model, destination, mode, status and last run."""
    import dagster as dg

    from retl_dagster.components.sync import job_name

    defs = _load_defs()
    instance = dg.DagsterInstance.get()
    rows = []
    for name, cfg in _configs(defs).items():
        last = next(iter(_history(name, 1)), None)
        state = "Pending" if last is None else STATUS_WORDS.get(last["status"], last["status"])
        if last and last["status"] in ("querying", "preparing", "queued", "in_progress"):
            runs = instance.get_run_records(dg.RunsFilter(job_name=job_name(name)), limit=1)
            if runs and runs[0].dagster_run.is_finished:
                state = "Incomplete"  # the run ended without finishing the sync
        if not cfg.enabled:
            state = "Disabled"
        rows.append(
            {
                "sync": name,
                "status": state,
                "model": f"{cfg.model.kind}: {cfg.model.dbt or cfg.model.table or 'inline sql'}",
                "destination": cfg.destination,
                "mode": cfg.mode,
                "schedule": (
                    f"{cfg.schedule.as_cron()} {cfg.schedule.timezone}"
                    if cfg.schedule
                    else "manual"
                )
                + (" + on model update" if cfg.run_on_model_update else "")
                + (" + on table change" if cfg.run_on_table_change else "")
                + (f" + after {', '.join(cfg.after)}" if cfg.after else ""),
                "last_run": last,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("sync", "status", "model", "destination", "mode", "schedule", "last run")
    for r in rows:
        last = r["last_run"]
        table.add_row(
            r["sync"],
            r["status"],
            r["model"],
            r["destination"],
            r["mode"],
            r["schedule"],
            f"{last['started_at']} ({last['status']})" if last else "never",
        )
    Console().print(table)


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=20, show_default=True)
def runs(name: str, as_json: bool, limit: int) -> None:
    """Run history of sync NAME with its counts."""
    _sync_config(_load_defs(), name)
    history = _history(name, limit)
    if as_json:
        click.echo(json.dumps(history, default=str))
        return
    if not history:
        click.echo(f"sync {name} has not run yet")
    for s in history:
        click.echo(_summary_line(s))
