"""`retl`: the command line over the same declarations and Dagster definitions the UI shows.

Commands that only read (`status`, `runs`, the YAML checks of `validate`) read the YAML and the
warehouse and never build Dagster's definitions, so they answer in about a second; a run
(`sync`, `replay`, `test-row`) builds them, as it goes through Dagster. Every mistake is a few
lines naming the sync, the field and the fix; `--verbose` adds the traceback.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, NoReturn

import click
from dotenv import load_dotenv

from retl_dagster.common.settings import PROJECT_ROOT

EXIT_FAILED = 1
STATUS_LOCK_WAIT_S = 5.0
"""How long `status` and `runs` wait for a warehouse another process holds."""

# One warehouse-writing step at a time (DuckDB allows a single writer per file), and one queued
# run per sync (job tag `retl/sync`) for runs launched from the UI, schedules and sensors; the
# queue is looked at every second, not every 5 (BENCHMARKS.md, "A run launched from the UI").
INSTANCE_YAML = """\
telemetry:
  enabled: false
run_queue:
  dequeue_interval_seconds: 1
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
IN_FLIGHT = ("querying", "preparing", "queued", "in_progress")


class CliError(Exception):
    """A mistake to report in a line or two, without a traceback."""


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


def short_message(exc: BaseException) -> str:
    """The message a person needs: ours, not the wrappers Dagster puts around it."""
    from retl_dagster.destinations.base import DestinationConfigError, DestinationError
    from retl_dagster.engine.config import ConfigError, SyncDeclarationError
    from retl_dagster.engine.warehouse import WarehouseError

    ours = (
        ConfigError,
        SyncDeclarationError,
        DestinationConfigError,
        DestinationError,
        WarehouseError,
        CliError,
    )
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for e in chain:
        if isinstance(e, ours):
            return str(e)
    return str(chain[-1]) or type(chain[-1]).__name__


class RetlGroup(click.Group):
    """Turns any error into `error: <message>` and exit 1; `--verbose` adds the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - every error is reported, none is lost
            verbose = "--verbose" in sys.argv
            if verbose:
                traceback.print_exc()
            click.echo(f"error: {short_message(exc)}", err=True)
            if not verbose:
                click.echo("(run with --verbose for the traceback)", err=True)
            sys.exit(EXIT_FAILED)


def _fail(message: str) -> NoReturn:
    raise CliError(message)


def _declarations() -> Any:
    from retl_dagster.engine.declarations import read_declarations

    return read_declarations()


def _sync_config(name: str, *, runnable: bool = True) -> Any:
    """The declared sync `name`, read from its YAML; a clear error when it is unknown, invalid
    or (`runnable`) disabled."""
    decls = _declarations()
    known = sorted([*decls.syncs, *decls.invalid])
    if name not in known:
        _fail(f"no sync named '{name}'. Syncs: {', '.join(known) or 'none'}")
    problem = decls.problems().get(name)
    if problem:
        _fail(f"sync {name} is invalid and cannot run:\n{problem}")
    cfg = decls.syncs[name]
    if runnable and not cfg.enabled:
        _fail(f"sync {name} is disabled (enabled: false in its defs.yaml); enable it to run it")
    return cfg


def _load_defs() -> Any:
    """Dagster's definitions of the project (a run needs them); another broken sync does not
    stop this one."""
    from retl_dagster.definitions import defs

    return defs()


def _resource(defs: Any, cfg: Any) -> Any:
    from retl_dagster.components.destination_resources import resource_key

    return (defs.resources or {})[resource_key(cfg.destination)]


def _console() -> Any:
    """Full width when not on a terminal (a pipe or a file is never cut at 80 columns)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 10_000)


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


@click.group(cls=RetlGroup)
@click.version_option(package_name="retl-dagster", prog_name="retl")
@click.option("--verbose", is_flag=True, help="Show tracebacks of errors.")
def main(verbose: bool) -> None:
    """Reverse ETL on Dagster: validate, run and inspect syncs."""
    if not verbose:
        # Dagster's beta/preview notices are for its API's users, not for ours.
        warnings.filterwarnings("ignore")
    ensure_dagster_home()


@main.command()
@click.option(
    "--no-warehouse",
    is_flag=True,
    help="Check the YAML and the definitions only (models and keys are not checked).",
)
def validate(no_warehouse: bool) -> None:
    """Check every declaration, Dagster's definitions, and each sync against the warehouse."""
    decls = _declarations()
    errors: list[str] = list(decls.errors)
    for _, problem in sorted(decls.problems().items()):
        errors += problem.splitlines()
    for name, (_, error) in sorted(decls.destinations.items()):
        if error and not any(f"destination '{name}'" in e for e in errors):
            errors.append(error)
    defs = None
    if not errors:
        os.environ["RETL_STRICT"] = "1"  # what Dagster accepts, checked as CI checks it
        try:
            defs = _load_defs()
        except Exception as exc:  # noqa: BLE001 - reported with the others
            errors.append(short_message(exc))
    if defs is not None and not no_warehouse:
        errors += _warehouse_errors(decls)
    if defs is not None:
        from retl_dagster.components.references import remote_property_errors

        errors += remote_property_errors(defs)
    for e in errors:
        click.echo(f"error: {e}", err=True)
    if errors:
        sys.exit(EXIT_FAILED)
    checked = "" if not no_warehouse else " (warehouse not checked: --no-warehouse)"
    click.echo(f"ok: {len(decls.syncs)} sync(s) valid{checked}: {', '.join(decls.syncs)}")


def _warehouse_errors(decls: Any) -> list[str]:
    """Each sync against the warehouse: its model's columns and keys. A warehouse that cannot be
    read is an error: validate never passes what it could not check."""
    from retl_dagster.common.settings import is_url, safe_location, warehouse_location
    from retl_dagster.engine import diff
    from retl_dagster.engine.model_sql import model_select
    from retl_dagster.engine.warehouse import Warehouse, WarehouseBusy

    location = warehouse_location()
    if not is_url(location) and not Path(location).exists():
        return [
            f"the warehouse {location} does not exist, so no model could be checked. Fix: build "
            "the models first (README, Quick start), set RETL_WAREHOUSE, or run "
            "`retl validate --no-warehouse` to check the declarations only"
        ]
    errors: list[str] = []
    try:
        with Warehouse(read_only=True) as wh:
            for cfg in decls.syncs.values():
                try:
                    sql = model_select(cfg)
                    diff.model_columns(wh, cfg, sql)
                    report = diff.check_keys(wh, cfg, sql)
                    if not report.ok:
                        errors.append(report.describe(cfg.name, cfg.primary_key))
                except Exception as exc:  # noqa: BLE001 - each sync's own problem
                    errors.append(str(exc))
    except WarehouseBusy as exc:
        errors.append(str(exc))
    except Exception as exc:  # noqa: BLE001
        errors.append(f"the warehouse {safe_location()} cannot be read: {exc}")
    return errors


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--verbose", is_flag=True, help="Show Dagster's run log.")
@click.option(
    "--allow-removals",
    is_flag=True,
    help="This run may remove more than guardrails.max_removed_percent of the synced records.",
)
def sync(name: str, as_json: bool, verbose: bool, allow_removals: bool) -> None:
    """Run sync NAME once through Dagster (recorded in $DAGSTER_HOME, visible in the UI).

    Exit 0: everything delivered; 2: some records rejected; 1: the run failed.
    """
    _sync(name, as_json, verbose, allow_removals=allow_removals)


@main.command()
@click.argument("name")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--verbose", is_flag=True, help="Show Dagster's run log.")
def replay(name: str, run_id: str, as_json: bool, verbose: bool) -> None:
    """Resend every record of run RUN_ID of sync NAME, as a new run (exit codes as `sync`)."""
    from retl_dagster.engine import stages
    from retl_dagster.engine.warehouse import Warehouse

    cfg = _sync_config(name)
    with Warehouse(read_only=True) as wh:  # before anything is created
        problem = stages.replay_problem(wh, cfg, run_id)
    if problem:
        _fail(problem)
    _sync(name, as_json, verbose, replay_of=run_id)


@main.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(name: str, yes: bool) -> None:
    """Forget what sync NAME delivered: its next run sends every row as added."""
    from retl_dagster.engine import stages
    from retl_dagster.engine.warehouse import Warehouse

    cfg = _sync_config(name, runnable=False)
    for warning in cfg.reset_warnings():
        click.echo(f"warning: {warning}", err=True)
    if not yes and not click.confirm(f"Forget the state of sync {name}?", err=True):
        _fail("not reset")
    with Warehouse() as wh:
        n = stages.reset(wh, cfg)
    click.echo(f"sync {name} reset: {n} record(s) forgotten; the next run sends every row as added")


def _sync(
    name: str,
    as_json: bool,
    verbose: bool,
    replay_of: str | None = None,
    allow_removals: bool = False,
) -> None:
    _sync_config(name)  # a wrong name is answered before Dagster is imported
    import dagster as dg
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from retl_dagster.components import sync as sync_component
    from retl_dagster.engine.guardrails import ALLOW_REMOVALS_TAG
    from retl_dagster.runner import SyncAlreadyRunning, SyncDisabled, run_sync

    defs = _load_defs()
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
                tags={
                    "retl/trigger": "cli",
                    **({ALLOW_REMOVALS_TAG: "true"} if allow_removals else {}),
                },
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


@main.command()
@click.argument("name")
@click.option("--samples", default=3, show_default=True, help="Sample payloads per operation.")
@click.option("--json", "as_json", is_flag=True)
def plan(name: str, samples: int, as_json: bool) -> None:
    """Dry run of sync NAME: the next run's counts and sample payloads; nothing is sent."""
    from retl_dagster.engine import stages
    from retl_dagster.engine.warehouse import Warehouse

    cfg = _sync_config(name, runnable=False)
    with Warehouse() as wh:
        result = stages.plan(wh, cfg, samples)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "sync": name,
                    "rows_queried": result.rows_queried,
                    **result.counts,
                    "sent_ops": result.sent_ops,
                    "samples": result.samples,
                    "diff": result.diff.kind,
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
@click.option("--yes", is_flag=True, help="Do not ask before sending a removal.")
def test_row_command(name: str, row_id: str, as_op: str, yes: bool) -> None:
    """Send the model's row ROW_ID of sync NAME to its destination and print the exact request
    (secrets redacted) and the answer. The sync's state does not change."""
    from retl_dagster.destinations.http import format_exchange
    from retl_dagster.engine import stages
    from retl_dagster.engine.warehouse import Warehouse

    cfg = _sync_config(name, runnable=False)
    if as_op == "removed" and not yes:
        what = {"delete": "deletes", "clear": "clears the fields of"}.get(cfg.delete_behavior)
        if what and not click.confirm(
            f"This {what} record {row_id} in destination '{cfg.destination}' for real. Go on?",
            err=True,
        ):
            _fail("nothing sent")
    resource = _resource(_load_defs(), cfg)
    redact = resource.redact
    try:
        with Warehouse() as wh, resource.client() as destination:
            outcome = stages.send_test_row(wh, cfg, destination, row_id, as_op)
    except Exception as exc:  # noqa: BLE001 - the destination's words, secrets redacted
        _fail(redact(short_message(exc)))
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


@main.command()
@click.argument("name")
def check(name: str) -> None:
    """Test the connection of destination NAME (or of sync NAME's destination, with the sync's
    object): its credentials are accepted and its target exists, by the cheapest read-only call
    its API offers. Nothing is sent; secrets never show."""
    from retl_dagster.components.destination_resources import declared_resource

    decls = _declarations()
    dest, object_ = name, None
    if name not in decls.destination_specs:
        if name in decls.invalid:
            _fail(f"sync {name} is invalid:\n{decls.invalid[name]}")
        if name not in decls.syncs:
            _fail(
                f"no destination or sync named '{name}'. Destinations: "
                f"{', '.join(sorted(decls.destination_specs)) or 'none'}; syncs: "
                f"{', '.join(sorted(decls.syncs)) or 'none'}"
            )
        dest, object_ = decls.syncs[name].destination, decls.syncs[name].object
        if dest not in decls.destination_specs:
            _fail(f"sync {name}'s destination '{dest}' is not declared")
    type_, error = decls.destinations[dest]
    if error:
        _fail(error)
    resource = declared_resource(dest, decls.destination_specs[dest])
    try:
        with resource.client() as client:
            said = client.check(object_)
    except Exception as exc:  # noqa: BLE001 - the destination's words, secrets redacted
        _fail(resource.redact(short_message(exc)))
    click.echo(resource.redact(f"ok: destination '{dest}' ({type_}): {said}"))


def _histories(names: list[str], limit: int) -> dict[str, list[dict[str, Any]]]:
    """Each sync's runs, newest first, from `_retl.sync_runs`, over one connection (none before
    a warehouse exists)."""
    from retl_dagster.common.settings import is_url, warehouse_location
    from retl_dagster.engine.runs import run_history, summarize
    from retl_dagster.engine.warehouse import Warehouse

    location = warehouse_location()
    if not is_url(location) and not Path(location).exists():
        return {name: [] for name in names}
    with Warehouse(read_only=True, lock_wait_s=STATUS_LOCK_WAIT_S) as wh:
        return {name: [summarize(r) for r in run_history(wh, name, limit)] for name in names}


def _finished_dagster_runs(run_ids: list[str]) -> dict[str, tuple[bool, float | None]]:
    """Dagster run id -> (finished, its duration as the UI shows it: start to end)."""
    if not run_ids:
        return {}
    import dagster as dg

    instance = dg.DagsterInstance.get()
    out = {}
    for record in instance.get_run_records(dg.RunsFilter(run_ids=run_ids)):
        start, end = record.start_time, record.end_time
        duration = end - start if start is not None and end is not None else None
        out[record.dagster_run.run_id] = (record.dagster_run.is_finished, duration)
    return out


@main.command()
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """Every sync: status, model, destination, mode, schedule and last run."""
    from retl_dagster.engine.warehouse import WarehouseBusy

    decls = _declarations()
    problems = decls.problems()
    rows = []
    busy = None
    names = sorted([*decls.syncs, *decls.invalid])
    try:
        lasts = {n: next(iter(runs), None) for n, runs in _histories(names, 1).items()}
    except WarehouseBusy as exc:
        busy, lasts = str(exc), dict.fromkeys(names)
    in_flight = [
        str(last["dagster_run_id"])
        for last in lasts.values()
        if last and last["status"] in IN_FLIGHT and last.get("dagster_run_id")
    ]
    dagster_runs = _finished_dagster_runs(in_flight)
    for name, last in lasts.items():
        cfg = decls.syncs.get(name)
        state = "Pending" if last is None else STATUS_WORDS.get(last["status"], last["status"])
        if last and last["status"] in IN_FLIGHT:
            finished, _ = dagster_runs.get(str(last.get("dagster_run_id")), (False, None))
            if finished:
                state = "Incomplete"  # the run ended without finishing the sync
        if busy:
            state = "Unknown"
        if cfg is not None and not cfg.enabled:
            state = "Disabled"
        if name in problems:
            state = "Invalid"
        row: dict[str, Any] = {"sync": name, "status": state, "last_run": last}
        if name in problems:
            row["error"] = problems[name]
        if cfg is not None:
            row |= {
                "model": f"{cfg.model.kind}: {cfg.model.dbt or cfg.model.table or 'inline sql'}",
                "destination": cfg.destination,
                "mode": cfg.mode,
                "schedule": _schedule_words(cfg),
            }
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    from rich.table import Table

    table = Table("sync", "status", "model", "destination", "mode", "schedule", "last run")
    for r in rows:
        last = r["last_run"]
        table.add_row(
            r["sync"],
            r["status"],
            r.get("model", "-"),
            r.get("destination", "-"),
            r.get("mode", "-"),
            r.get("schedule", "-"),
            f"{last['started_at']} ({last['status']})" if last else "never",
        )
    console = _console()
    console.print(table)
    for r in rows:
        if r.get("error"):
            console.print(f"{r['sync']} is invalid: {r['error']}", markup=False)
    if busy:
        console.print(f"last runs unknown: {busy}", markup=False)


def _schedule_words(cfg: Any) -> str:
    return (
        (f"{cfg.schedule.as_cron()} {cfg.schedule.timezone}" if cfg.schedule else "manual")
        + (" + on model update" if cfg.run_on_model_update else "")
        + (" + on table change" if cfg.run_on_table_change else "")
        + (f" + after {', '.join(cfg.after)}" if cfg.after else "")
    )


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=20, show_default=True)
def runs(name: str, as_json: bool, limit: int) -> None:
    """Run history of sync NAME: when, status, counts and duration, newest first."""
    _sync_config(name, runnable=False)
    history = _histories([name], limit)[name]
    dagster_runs = _finished_dagster_runs(
        [str(s["dagster_run_id"]) for s in history if s.get("dagster_run_id")]
    )
    for s in history:
        # The Dagster run's duration, as the UI shows it (the sync's own stages are within it).
        _, duration = dagster_runs.get(str(s.get("dagster_run_id")), (False, None))
        if duration is not None:
            s["run_duration_s"] = round(duration, 3)
    if as_json:
        click.echo(json.dumps(history, default=str))
        return
    if not history:
        click.echo(f"sync {name} has not run yet")
        return
    from rich.table import Table

    table = Table(
        "started (UTC)",
        "status",
        "rows queried",
        "added",
        "changed",
        "removed",
        "succeeded",
        "rejected",
        "duration",
        "stages (s)",
        "run id",
        "error",
    )

    def n(v: Any) -> str:
        return "-" if v is None else str(v)

    for s in history:
        seconds = s.get("run_duration_s", s.get("duration_s"))
        table.add_row(
            (s.get("started_at") or "-")[:19].replace("T", " "),
            s["status"],
            *(n(s.get(k)) for k in ("rows_queried", "added", "changed", "removed")),
            n(s.get("succeeded")),
            n(s.get("rejected")),
            "-" if seconds is None else f"{seconds:.1f}s",
            " ".join(f"{k} {v:.1f}" for k, v in (s.get("stage_s") or {}).items()) or "-",
            s["run_id"],
            (s.get("error") or "")[:200],
        )
    _console().print(table)
