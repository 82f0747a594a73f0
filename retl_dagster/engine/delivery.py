"""Load stage: stream a run's diff out of the warehouse, deliver it, commit what was acknowledged.

State advances per destination batch, in one warehouse transaction with that batch's record
results, and only for the records the destination acknowledged. A rejected record stays out of
state, so the next run's diff offers it again with the model's latest values.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any

import pyarrow as pa

from retl_dagster.destinations.base import (
    AnyDestination,
    Batch,
    BatchResult,
)
from retl_dagster.engine.config import SyncConfig
from retl_dagster.engine.mapping import FieldsEncoder, Mapper, encoded_rows
from retl_dagster.engine.state import (
    RECORD_RESULTS,
    StateTypes,
    SyncTables,
    ensure_state_schema,
    state_types,
)
from retl_dagster.engine.warehouse import Warehouse, quote_ident

MAX_REJECTED_SAMPLES = 10
READ_ROWS = 10_000
"""Rows read from the warehouse and mapped at a time (Python holds this many, mapped)."""
COMMIT_EVERY_S = 0.25
COMMIT_EVERY_RECORDS = 50_000
"""Acknowledged batches are committed together at most this far apart (see load)."""
RELEASE_EVERY_S = 2.0
"""A single-writer warehouse (DuckDB) is closed after a commit at most this far apart, so
other syncs' commits get the file; closing after every commit (a checkpoint and a reopen,
about 70 ms each) cost a sixth of a fast load's CPU (BENCHMARKS.md, "Side by side")."""

OPS = ("added", "changed", "removed")

Progress = Callable[[int, int], None]
"""Called with (records done, records to do) after each batch."""


@dataclass
class LoadResult:
    planned: int = 0
    succeeded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPS, 0))
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPS, 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPS, 0))
    """Rows the mode or delete behaviour sends nowhere (settled in state, no request)."""
    batches: int = 0
    rejected_samples: list[dict[str, Any]] = field(default_factory=list)
    warned: int = 0
    """Acknowledged records the destination sent without some field, saying why."""
    warning_samples: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0
    field_types: dict[str, str] = field(default_factory=dict)
    stage_s: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("map", "send", "commit"), 0.0)
    )
    """Seconds reading the run's rows out and mapping them, delivering (wall time, batches in
    flight overlapping), and committing (on the committer thread, overlapping delivery)."""
    """Each destination field sent -> the warehouse type of its values."""
    identified: int | None = None
    """Audience and conversion destinations: records sent that carried a usable identifier."""
    matched: int | None = None
    """Records the platform said it matched, where it says so per request."""
    match_rate: float | None = None
    """The platform's own match rate if it reports one, else matched / identified."""

    @property
    def total_succeeded(self) -> int:
        return sum(self.succeeded.values())

    @property
    def total_rejected(self) -> int:
        return sum(self.rejected.values())


_RESULT_SCHEMA = pa.schema(
    [
        ("_retl_key", pa.string()),
        ("op", pa.string()),
        ("_retl_hash", pa.string()),
        ("_retl_match", pa.string()),
        ("_retl_dest_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
    ]
)


STATE_COLUMNS = (
    "_retl_key",
    "_retl_hash",
    "_retl_match",
    "_retl_dest_id",
    "first_synced_at",
    "last_synced_at",
    "last_run_id",
)
PENDING_COLUMNS = (
    "_retl_key",
    "op",
    "_retl_hash",
    "expired",
    "error",
    "first_failed_at",
    "last_failed_at",
    "attempts",
    "last_run_id",
)


def _remember(
    wh: Warehouse,
    t: SyncTables,
    select_sql: str,
    params: list[Any],
    updates: Callable[[str, str], dict[str, str]],
) -> None:
    """Upsert the selected rows (named as STATE_COLUMNS) into the sync's state."""
    wh.upsert(t.state, "_retl_key", STATE_COLUMNS, select_sql, params, updates)


def _state_rows(st: StateTypes, source: str, where: str) -> str:
    """SELECT of `source`'s rows matching `where` as state rows (STATE_COLUMNS), synced now by
    the run given as the first parameter."""
    return f"""select cast(_retl_key as {st.key}) as _retl_key,
        cast(_retl_hash as {st.hash}) as _retl_hash, _retl_match, _retl_dest_id,
        current_timestamp as first_synced_at, current_timestamp as last_synced_at,
        cast(? as varchar) as last_run_id
    from {source} where {where}"""


def _commit(
    wh: Warehouse, t: SyncTables, st: StateTypes, sync: str, run_id: str, rows: pa.Table
) -> None:
    """Apply batches' outcomes to state, pending and the record log, atomically."""
    view = "_retl_batch_results"
    wh.register_arrow(view, rows)
    try:
        with wh.transaction():
            _remember(
                wh,
                t,
                _state_rows(st, view, "status = 'succeeded' and op in ('added', 'changed')"),
                [run_id],
                lambda old, new: {
                    "_retl_hash": f"{new}._retl_hash",
                    "_retl_match": f"{new}._retl_match",
                    "_retl_dest_id": f"coalesce({new}._retl_dest_id, {old}._retl_dest_id)",
                    "last_synced_at": f"{new}.last_synced_at",
                    "last_run_id": f"{new}.last_run_id",
                },
            )
            wh.execute(
                f"delete from {t.state} where _retl_key in (select cast(_retl_key as {st.key}) "
                f"from {view} where status = 'succeeded' and op = 'removed')"
            )
            wh.execute(
                f"delete from {t.pending} where _retl_key in "
                f"(select _retl_key from {view} where status <> 'rejected')"
            )
            wh.upsert(
                t.pending,
                "_retl_key",
                PENDING_COLUMNS,
                f"""select _retl_key, op, _retl_hash, false as expired, error,
                    current_timestamp as first_failed_at, current_timestamp as last_failed_at,
                    1 as attempts, cast(? as varchar) as last_run_id
                from {view} where status = 'rejected'""",
                [run_id],
                lambda old, new: {
                    "op": f"{new}.op",
                    "error": f"{new}.error",
                    "last_failed_at": f"{new}.last_failed_at",
                    "attempts": f"{old}.attempts + 1",
                    "last_run_id": f"{new}.last_run_id",
                    # a row that changed since it was rejected gets a fresh retry window
                    "first_failed_at": f"case when {old}._retl_hash is distinct from "
                    f"{new}._retl_hash then {new}.first_failed_at else {old}.first_failed_at end",
                    "expired": "false",
                    "_retl_hash": f"{new}._retl_hash",
                },
            )
            wh.execute(
                f"insert into {RECORD_RESULTS} select ?, ?, _retl_key, op, status, error, "
                f"current_timestamp from {view}",
                [run_id, sync],
            )
    finally:
        wh.unregister(view)


def prepare_destination(
    destination: AnyDestination, config: SyncConfig, columns: list[tuple[str, str]]
) -> dict[str, str]:
    """Tell the destination the warehouse type of every field it will receive; returns them
    (field -> warehouse type, the match field's included)."""
    types = {c.lower(): ty for c, ty in columns}
    fields = {m.to: m.kind.warehouse_type(types) for m in config.mappings}
    match_type = types[config.match.column.lower()] if config.match else None
    destination.prepare(
        config.object, config.match.field if config.match else None, fields, match_type
    )
    if config.match and match_type is not None:
        fields.setdefault(config.match.field, match_type)
    return fields


def mapper_for(config: SyncConfig, destination: AnyDestination | None) -> Mapper:
    """The mapper a destination needs: JSON-ready values, or Python values for databases."""
    if destination is None:
        return Mapper(config)
    return Mapper(
        config, encode=not destination.native_values, accepts_nulls=destination.accepts_nulls
    )


def _skip(wh: Warehouse, t: SyncTables, st: StateTypes, sync: str, run_id: str, op: str) -> int:
    """Settle rows of `op` that the sync's mode or delete behaviour sends nowhere, in SQL
    (however many, none passes through Python): a removed row is forgotten; a changed row in
    insert or events mode is remembered with its new hash, so it is not offered again."""
    rows = f"select _retl_key from {t.diff} where _retl_run_id = ? and _retl_op = '{op}'"
    state_keys = (
        f"select cast(_retl_key as {st.key}) from {t.diff} "
        f"where _retl_run_id = ? and _retl_op = '{op}'"
    )
    row = wh.fetchone(f"select count(*) from ({rows}) as r", [run_id])
    n = int(row[0]) if row else 0
    if not n:
        return 0
    with wh.transaction():
        if op == "removed":
            wh.execute(f"delete from {t.state} where _retl_key in ({state_keys})", [run_id])
        else:
            _remember(
                wh,
                t,
                _state_rows(st, t.diff, f"_retl_run_id = ? and _retl_op = '{op}'"),
                [run_id, run_id],
                lambda old, new: {
                    "_retl_hash": f"{new}._retl_hash",
                    "last_run_id": f"{new}.last_run_id",
                },
            )
        wh.execute(f"delete from {t.pending} where _retl_key in ({rows})", [run_id])
        wh.execute(
            f"insert into {RECORD_RESULTS} select ?, ?, _retl_key, _retl_op, 'skipped', "
            f"null, current_timestamp from {t.diff} where _retl_run_id = ? and _retl_op = '{op}'",
            [run_id, sync, run_id],
        )
    return n


def ops_to_send(config: SyncConfig) -> list[str]:
    """Diff operations the sync delivers: insert and events never touch what exists, and
    removals go out only with a delete behaviour."""
    ops = ["added"]
    if config.mode not in ("insert", "events"):
        ops.append("changed")
    if config.delete_behavior != "nothing":
        ops.append("removed")
    return ops


@functools.lru_cache(maxsize=8)
def _all_succeeded(n: int) -> tuple[pa.Array, pa.Array]:
    """The status and error columns of n acknowledged records (made once per batch size)."""
    return pa.array(["succeeded"] * n, pa.string()), pa.nulls(n, pa.string())


def _text(column: pa.Array) -> pa.Array:
    return column if column.type == pa.string() else column.cast(pa.string())


def _deliver(destination: AnyDestination, batch: Batch) -> BatchResult:
    """One batch's answer; an answer we cannot read proves nothing was acknowledged: every
    record is rejected with it, and the run goes on."""
    try:
        return destination.deliver(batch)
    except (json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
        body = getattr(exc, "doc", "")[:500]
        reason = f"malformed answer from the destination ({type(exc).__name__}: {exc})"
        return BatchResult(
            rejected=dict.fromkeys(batch.keys, reason + (f": {body}" if body else ""))
        )


@dataclass
class _Sent:
    """A batch handed to the destination, waiting for its answer."""

    answer: Future[BatchResult]
    rb: pa.RecordBatch
    batch: Batch

    def payload(self, i: int) -> dict[str, Any]:
        """Record i's fields as sent (for rejected samples)."""
        rows = self.batch.rows
        return rows.fields(i) if rows is not None else self.batch.records[i].fields


DIFF_COLUMNS = "_retl_op, _retl_key, _retl_hash, _retl_match, _retl_dest_id"
"""The diff's own columns a load reads beside the model's (settling a batch needs them)."""


def _encoding_read(
    wh: Warehouse, encoder: FieldsEncoder | None, source: str, run_id: str
) -> str | None:
    """On a DuckDB warehouse, a read of `source` (the run's diff rows) that encodes each row's
    fields as it reads (FieldsEncoder's SQL over it): one query on DuckDB's threads, instead of
    each read batch going back into DuckDB. None on other warehouses (whose SQL differs), or
    where the mapping or a column's type needs Records."""
    if encoder is None or wh.dialect != "duckdb":
        return None
    first = list(wh.stream(f"{source} limit 1", [run_id]))
    if not first:
        return None
    return encoder.select_sql(first[0].schema, f"({source}) as batch", keep=DIFF_COLUMNS)


def load(
    wh: Warehouse,
    config: SyncConfig,
    destination: AnyDestination,
    run_id: str,
    *,
    progress: Progress | None = None,
    salt: str = "",
) -> LoadResult:
    """Deliver run `run_id`'s diff to `destination`. `salt`: a replay's, for fresh batch ids.

    Up to `destination.concurrency` batches are in flight at once (threads: the clients block
    on the network, which frees the GIL, and mapping the next batch overlaps their waits); the
    next is handed out as soon as any of them is answered.
    Acknowledged outcomes are committed together at most every COMMIT_EVERY_S seconds (or
    COMMIT_EVERY_RECORDS records): one warehouse transaction per batch would cost more than
    the batch. A crash loses at most those uncommitted acknowledgements, which the next run
    resends (with the same batch ids, so a destination that honours them drops them).

    On a single-writer warehouse (DuckDB) the run's rows are spooled out first and the
    warehouse is held only to commit, so syncs to other destinations deliver side by side and
    only their commits queue for the file's lock.
    """
    started = time.monotonic()
    t = ensure_state_schema(wh, config.name)
    st = state_types(wh, t)
    result = LoadResult()
    row = wh.fetchone(f"select count(*) from {t.diff} where _retl_run_id = ?", [run_id])
    result.planned = int(row[0]) if row else 0

    send = ops_to_send(config)
    for op in OPS:
        if op not in send:
            result.skipped[op] = _skip(wh, t, st, config.name, run_id, op)
    op_filter = "and _retl_op in (" + ", ".join(f"'{op}'" for op in send) + ")"

    mapper = mapper_for(config, destination)
    encoder = (
        FieldsEncoder(mapper, destination.item_sql)
        if destination.encoded_rows and not destination.native_values
        else None
    )
    match_field = config.match.field if config.match else None
    fill_only = config.fill_only()
    result.field_types = prepare_destination(
        destination, config, wh.columns_of(f"select * from {t.diff}")
    )
    batch_size = min(config.batch_size or destination.batch_size, destination.max_batch_size)
    cols = ", ".join(quote_ident(c) for c in config.source_columns())
    done = sum(result.skipped.values())
    if progress:
        progress(done, result.planned)

    unsaved: list[pa.Table] = []
    unsaved_records = 0
    last_commit = time.monotonic()
    # Commits run on a thread of their own, one at a time, so delivery never waits for the
    # warehouse (on DuckDB: for the file's lock, which other syncs' commits take too).
    committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retl-commit")
    committing: Future[None] | None = None

    released = time.monotonic()

    def write(rows: pa.Table) -> None:
        nonlocal released
        began = time.monotonic()
        _commit(wh, t, st, config.name, run_id, rows)
        result.stage_s["commit"] += time.monotonic() - began
        if wh.single_writer and began - released >= RELEASE_EVERY_S:
            # Let the other syncs' commits in (BENCHMARKS.md, "Many syncs").
            wh.close()
            released = time.monotonic()

    def commit(wait: bool = False) -> None:
        """Hand what is acknowledged to the committer; if it is still writing the last
        hand-over, keep collecting (up to a few commits' worth, then wait for it). `wait`:
        until all of it is written."""
        nonlocal unsaved_records, last_commit, committing
        backlog = unsaved_records >= 4 * COMMIT_EVERY_RECORDS
        if committing is not None and (wait or backlog or committing.done()):
            finished, committing = committing, None
            finished.result()  # a commit that failed fails the run here
        if unsaved and committing is None:
            committing = committer.submit(write, pa.concat_tables(unsaved))
            unsaved.clear()
            unsaved_records = 0
            last_commit = time.monotonic()
        if wait and committing is not None:
            finished, committing = committing, None
            finished.result()

    def settle(sent: _Sent) -> None:
        nonlocal done, unsaved_records
        answer = sent.answer.result()
        result.batches += 1
        if destination.reports_match:
            result.identified = (result.identified or 0) + (answer.identified or 0)
            if answer.matched is not None:
                result.matched = (result.matched or 0) + answer.matched
        rb = sent.rb
        ops = rb.column("_retl_op").to_pylist()
        # The diff's own keys, in the order of the rows committed below (only where needed).
        keys = (
            _text(rb.column("_retl_key")).to_pylist()
            if answer.rejected or answer.warnings or answer.dest_ids
            else []
        )
        statuses: list[str] | pa.Array
        errors: list[str | None] | pa.Array
        if not answer.rejected and not answer.warnings:
            # Everything acknowledged (the common case): counted without a loop per record.
            statuses, errors = _all_succeeded(rb.num_rows)
            # (Not Arrow's value_counts: its call releases the GIL, which the delivering
            # threads then fight over.)
            for op, n in Counter(ops).items():
                result.succeeded[op] += n
        else:
            statuses, errors = [], []
            for i, (op, key) in enumerate(zip(ops, keys, strict=True)):
                err = answer.rejected.get(key)
                note = answer.warnings.get(key) if err is None else None
                if note is not None:
                    result.warned += 1
                    if len(result.warning_samples) < MAX_REJECTED_SAMPLES:
                        result.warning_samples.append({"id": key, "op": op, "warning": note})
                statuses.append("rejected" if err is not None else "succeeded")
                errors.append(err)
                bucket = result.rejected if err is not None else result.succeeded
                bucket[op] += 1
                if err is not None and len(result.rejected_samples) < MAX_REJECTED_SAMPLES:
                    result.rejected_samples.append(
                        {
                            "id": key,
                            "op": op,
                            "error": err,
                            "payload": sent.payload(i),
                            "action": recommended_action(config, err),
                        }
                    )
        dest_ids = _text(rb.column("_retl_dest_id"))
        unsaved.append(
            pa.table(
                {
                    "_retl_key": _text(rb.column("_retl_key")),
                    "op": _text(rb.column("_retl_op")),
                    "_retl_hash": _text(rb.column("_retl_hash")),
                    "_retl_match": _text(rb.column("_retl_match")),
                    "_retl_dest_id": [
                        answer.dest_ids.get(key, old)
                        for key, old in zip(keys, dest_ids.to_pylist(), strict=True)
                    ]
                    if answer.dest_ids
                    else dest_ids,
                    "status": statuses,
                    "error": errors,
                },
                schema=_RESULT_SCHEMA,
            )
        )
        unsaved_records += rb.num_rows
        if (
            unsaved_records >= COMMIT_EVERY_RECORDS
            or time.monotonic() - last_commit >= COMMIT_EVERY_S
        ):
            commit()
        done += rb.num_rows
        if progress:
            progress(done, result.planned)

    # Batches in flight, and their answers in the order they come: a batch waiting out a
    # backoff (a 429) holds only its own thread, not the next batch's hand-out.
    in_flight: dict[Future[BatchResult], _Sent] = {}
    answered: SimpleQueue[Future[BatchResult]] = SimpleQueue()
    failure: BaseException | None = None
    delivering = time.monotonic()
    with ThreadPoolExecutor(max_workers=destination.concurrency) as pool:
        try:
            # Read and map many destination batches at a time (fewer warehouse round trips,
            # column-wise mapping), then hand them out one destination batch each.
            per_read = batch_size * max(1, READ_ROWS // batch_size)
            source = (
                f"select {DIFF_COLUMNS}, {cols} from {t.diff} where _retl_run_id = ? {op_filter}"
            )
            encoding = _encoding_read(wh, encoder, source, run_id)
            reads = wh.detached_stream(encoding or source, [run_id], batch_size=per_read)
            # The read's rows as encoded rows: encoded by the read itself, or by the encoder
            # (None: the mapping or a column's type needs Records).
            encode = encoded_rows if encoding is not None else encoder.of if encoder else None
            while True:
                began = time.monotonic()
                read = next(reads, None)
                if read is None:
                    break
                encoded = encode(read) if encode else None
                mapped = mapper.records(read) if encoded is None else []
                result.stage_s["map"] += time.monotonic() - began
                for start in range(0, read.num_rows, batch_size):
                    rb = read.slice(start, batch_size)
                    batch = Batch(
                        config.name,
                        run_id,
                        config.mode,
                        config.object,
                        mapped[start : start + batch_size],
                        match_field,
                        salt,
                        fill_only,
                        rows=None if encoded is None else encoded.slice(start, batch_size),
                    )
                    answer = pool.submit(_deliver, destination, batch)
                    in_flight[answer] = _Sent(answer, rb, batch)
                    answer.add_done_callback(answered.put)
                    if len(in_flight) >= destination.concurrency:
                        settle(in_flight.pop(answered.get()))
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after what was acked is kept
            failure = exc
        # Batches already sent are answered and their acknowledgements kept, even when
        # delivery cannot go on: the next run must not resend what the destination has.
        while in_flight:
            sent = in_flight.pop(answered.get())
            try:
                settle(sent)
            except BaseException as exc:  # noqa: BLE001
                failure = failure or exc
        result.stage_s["send"] = time.monotonic() - delivering - result.stage_s["map"]
        try:
            commit(wait=True)
            if wh.single_writer:
                wh.close()  # the file is free for other syncs while this run finishes
        finally:
            committer.shutdown()
            if encoder:
                encoder.close()
    if failure is not None:
        raise failure
    if destination.reports_match:
        result.identified = result.identified or 0
        result.match_rate = destination.match_rate()
        if result.match_rate is None and result.matched is not None and result.identified:
            result.match_rate = result.matched / result.identified
    result.duration_s = time.monotonic() - started
    return result


def recommended_action(config: SyncConfig, error: str) -> str:
    """What a person should do about a rejected record, in words."""
    retry = (
        f"it is retried on every run for {config.retry_rejected_days} days, with the model's "
        "latest values"
    )
    lowered = error.lower()
    if any(w in lowered for w in ("auth", "token", "permission", "forbidden", "401", "403")):
        return f"check the destination's credentials and scopes; {retry}"
    if any(w in lowered for w in ("not found", "not_found", "does not exist", "never creates")):
        return (
            f"the record does not exist in the destination: create it there or use mode "
            f"upsert; {retry}"
        )
    if any(w in lowered for w in ("property", "column", "field")):
        return f"check the mapping and the value in the model; {retry}"
    return f"fix the value in the model (see the error); {retry}"


def delivered_before(wh: Warehouse, sync: str, run_id: str) -> bool:
    """Whether run `run_id` already sent records (so delivering it again is a replay)."""
    row = wh.fetchone(
        f"select count(*) from {RECORD_RESULTS} where sync = ? and run_id = ?", [sync, run_id]
    )
    return bool(row and row[0])
