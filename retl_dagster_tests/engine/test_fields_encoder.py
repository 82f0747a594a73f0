"""The load's fast path: DuckDB writes each row's fields as JSON over the Arrow batch. It must
send exactly what the Python path (Mapper.records + to_json_value) sends."""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pytest

from retl_dagster.common.encoding import json_text_sql, to_json_value
from retl_dagster.destinations.base import Batch, BatchResult, concatenated
from retl_dagster.destinations.impl.webhook import WebhookConfig, WebhookDestination
from retl_dagster.engine import diff
from retl_dagster.engine.config import SyncConfig
from retl_dagster.engine.delivery import load
from retl_dagster.engine.mapping import FieldsEncoder, Mapper
from retl_dagster.engine.warehouse import Warehouse
from retl_dagster_tests.engine.test_mapping import config as mapping_config

rng = random.Random(21)
TIMES = [
    dt.datetime(1970, 1, 1)
    + dt.timedelta(microseconds=rng.randint(-62_135_596_800 * 10**6, 253_402_300_799 * 10**6))
    for _ in range(2000)
] + [
    dt.datetime(1, 1, 1),
    dt.datetime(999, 5, 5, 1, 2, 3),
    dt.datetime(1969, 12, 31, 23, 59, 59, 500_000),
    dt.datetime(2026, 1, 2, 3, 4, 5),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999_999),
]
COLUMNS: dict[str, pa.Array] = {
    "text": pa.array(["a", "", "é漢字🎉", 'q"uote\\back', "\x00\x01\n\t\x1f\x7f", "\u2028", None]),
    "large_text": pa.array(["x", None, "ü"], pa.large_string()),
    "int64": pa.array([0, -1, 2**63 - 1, -(2**63), None], pa.int64()),
    "uint64": pa.array([2**64 - 1, 0, None], pa.uint64()),
    "int8": pa.array([-128, 127, None], pa.int8()),
    "bool": pa.array([True, False, None]),
    "double": pa.array(
        [rng.uniform(-1e6, 1e6) for _ in range(2000)]
        + [rng.random() * 10 ** rng.randint(-320, 308) for _ in range(2000)]
        + [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 5e-324, 1e16, 1e22, 0.1, None],
        pa.float64(),
    ),
    "float32": pa.array([rng.uniform(-1e6, 1e6) for _ in range(2000)] + [0.1, None], pa.float32()),
    **{
        f"decimal_{p}_{s}": pa.array(
            [Decimal(rng.randint(-(10**p - 1), 10**p - 1)).scaleb(-s) for _ in range(2000)]
            + [Decimal(0), Decimal(10 ** (p - s) - 1) if p > s else Decimal(0), None],
            pa.decimal128(p, s),
        )
        for p, s in [(12, 2), (15, 5), (15, 0), (10, 10), (3, 1)]
    },
    # More digits than a float carries (Snowflake's NUMBER(38,0) among them): per value, a
    # number or text.
    **{
        f"decimal_{p}_{s}": pa.array(
            [
                Decimal(rng.randint(-(10 ** rng.randint(1, p) - 1), 10**p - 1)).scaleb(-s)
                for _ in range(3000)
            ]
            + [
                Decimal(10**15 - 1).scaleb(-s),
                Decimal(10**15).scaleb(-s),
                Decimal(-(10**15)).scaleb(-s),
            ]
            + [Decimal(0), None],
            pa.decimal128(p, s),
        )
        for p, s in [(38, 0), (38, 2), (38, 21), (20, 5)]
    },
    "timestamp": pa.array(TIMES + [None], pa.timestamp("us")),
    "timestamp_utc": pa.array(TIMES + [None], pa.timestamp("us")).cast(pa.timestamp("us", "UTC")),
    "timestamp_offset": pa.array(TIMES, pa.timestamp("us")).cast(pa.timestamp("us", "+00:00")),
    "date32": pa.array([t.date() for t in TIMES] + [None], pa.date32()),
    "date64": pa.array([t.date() for t in TIMES], pa.date64()),
}


def same(a: Any, b: Any) -> bool:
    """Equal JSON values of the same JSON types (1 and 1.0 differ on the wire)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("name", list(COLUMNS))
def test_duckdb_writes_every_value_as_to_json_value_does(name: str) -> None:
    arr = COLUMNS[name]
    sql = json_text_sql('"c"', arr.type)
    assert sql is not None
    con = duckdb.connect()
    # The SQL must not depend on the session's zone (the load runs it on the warehouse's).
    con.execute("set TimeZone = 'Asia/Kathmandu'")
    con.register("batch", pa.record_batch([arr], names=["c"]))
    got = [r[0] for r in con.execute(f"select {sql} from batch").fetchall()]
    wrong = [
        (v, g)
        for v, g in zip(arr.to_pylist(), got, strict=True)
        if not same(None if g is None else json.loads(g), to_json_value(v))
    ]
    assert wrong == []


@pytest.mark.parametrize(
    "type_",
    [
        pa.decimal128(38, 22),  # str(Decimal) writes some of these in scientific notation
        pa.decimal256(40, 2),
        pa.decimal128(16, 16),  # DuckDB writes ".5", Python "0.5"
        pa.timestamp("us", "Europe/Paris"),  # the offset depends on the date
        pa.timestamp("ns"),
        pa.time64("us"),
        pa.binary(),
        pa.list_(pa.int64()),
        pa.struct([("a", pa.int64())]),
    ],
)
def test_types_only_python_encodes_take_the_python_path(type_: pa.DataType) -> None:
    assert json_text_sql('"c"', type_) is None


MAPPINGS = [
    {"from": "email", "to": "Email"},
    {"from": "city", "to": "City", "sync_nulls": False},
    {"from": "ltv", "to": "LTV"},
    {"from": "seen", "to": "seen_at"},
    {"to": "source", "static": "warehouse"},
]


def config(**over: Any) -> SyncConfig:
    return mapping_config(**{"mappings": MAPPINGS, **over})


def diff_rows(extra: dict[str, pa.Array] | None = None) -> pa.RecordBatch:
    ops = ["added", "changed", "removed", "added"]
    return pa.record_batch(
        {
            "_retl_op": pa.array(ops),
            # a key JSON must escape: quote, backslash, tab, a control character, an emoji
            "_retl_key": pa.array(["1", "2", "3", 'k"4\\\t\x01😀']),
            "_retl_hash": pa.array(["h1", "h2", "h3", "h4"]),
            "_retl_match": pa.array([None, None, "old@x", None], pa.string()),
            "_retl_dest_id": pa.array([None, "d2", "d3", None], pa.string()),
            "email": pa.array(["a@x", None, None, "é@x"]),
            "city": pa.array([None, "Paris", None, "Lyon"]),
            "ltv": pa.array([Decimal("12.00"), Decimal("0.10"), None, None], pa.decimal128(12, 2)),
            "seen": pa.array(
                [dt.datetime(2026, 1, 2, 3, 4, 5), dt.datetime(2026, 1, 2, 3, 4, 5, 6), None, None],
                pa.timestamp("us"),
            ),
            **(extra or {}),
        }
    )


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"delete_behavior": "delete"},
        {"delete_behavior": "clear"},
        {"mode": "events"},
    ],
    ids=["upsert", "delete", "clear", "events"],
)
def test_encoded_rows_are_the_records_the_python_path_builds(over: dict[str, Any]) -> None:
    cfg = config(**over)
    mapper = Mapper(cfg)
    rb = diff_rows()
    records = mapper.records(rb)
    rows = FieldsEncoder(mapper, WebhookDestination.item_sql).of(rb)
    assert rows is not None
    assert rows.ops.to_pylist() == [r.op for r in records]
    assert rows.keys.to_pylist() == [r.key for r in records]
    assert [rows.fields(i) for i in range(len(records))] == [r.fields for r in records]
    # A null the sync does not send is left out, not sent as null.
    assert "City" not in rows.fields(0)
    # Same records, same batch id: a destination honouring idempotency keys drops a resend
    # whichever path built it.
    as_records = Batch("s", "r1", cfg.mode, None, records)
    as_rows = Batch("s", "r1", cfg.mode, None, [], rows=rows)
    assert as_rows.batch_id == as_records.batch_id
    # The webhook's wire format is the same either way.
    hook = WebhookDestination("hook", WebhookConfig(url="http://127.0.0.1:9/hook"))
    try:
        assert orjson.loads(hook.body(as_rows)) == orjson.loads(hook.body(as_records))
        # Slices of a read, as the load hands batches out: from its start, from its middle
        # (with and without a removed record, whose id is built differently).
        for start, length in ((0, 2), (1, 3), (3, 1)):
            end = start + length
            part = Batch("s", "r1", cfg.mode, None, [], rows=rows.slice(start, length))
            assert part.keys == [r.key for r in records[start:end]]
            assert part.batch_id == Batch("s", "r1", cfg.mode, None, records[start:end]).batch_id
            assert (
                orjson.loads(hook.body(part))["records"]
                == (orjson.loads(hook.body(as_records))["records"][start:end])
            )
    finally:
        hook.close()


def test_a_column_only_python_encodes_keeps_the_python_path() -> None:
    cfg = config(mappings=[{"from": "email", "to": "Email"}, {"from": "tags", "to": "tags"}])
    rb = diff_rows({"tags": pa.array([["a"], None, None, []], pa.list_(pa.string()))})
    assert FieldsEncoder(Mapper(cfg)).of(rb) is None


def test_encoded_rows_keep_the_batch_order_in_a_large_read() -> None:
    """The load pairs encoded rows with the diff's by position (statuses, state), so DuckDB's
    threads must not reorder them."""
    n = 300_000
    rb = pa.record_batch(
        {
            "_retl_op": pa.array(["added"] * n),
            "_retl_key": pa.array([str(i) for i in range(n)]),
            "_retl_hash": pa.array([f"h{i}" for i in range(n)]),
            "_retl_match": pa.nulls(n, pa.string()),
            "_retl_dest_id": pa.nulls(n, pa.string()),
            "email": pa.array([f"u{i}@x" for i in range(n)]),
        }
    )
    encoder = FieldsEncoder(Mapper(config(mappings=[{"from": "email", "to": "Email"}])))
    rows = encoder.of(rb)
    encoder.close()
    assert rows is not None
    assert rows.keys.to_pylist() == rb.column("_retl_key").to_pylist()
    assert rows.fields(n - 1) == {"Email": f"u{n - 1}@x"}


class _Captured(WebhookDestination):
    """The webhook's bodies, kept instead of posted (everything acknowledged)."""

    def __init__(self, encoded: bool) -> None:
        super().__init__("hook", WebhookConfig(url="http://127.0.0.1:9/hook", batch_size=3))
        self.encoded_rows = encoded  # type: ignore[misc]
        self.bodies: list[dict[str, Any]] = []
        self.batches: list[Batch] = []

    def deliver(self, batch: Batch) -> BatchResult:
        self.batches.append(batch)
        self.bodies.append(orjson.loads(self.body(batch)))
        return BatchResult()


def test_a_duckdb_warehouse_encodes_as_it_reads_and_sends_what_records_send(
    tmp_path: Any,
) -> None:
    """On DuckDB the load's read of the diff encodes the fields itself (no second pass over
    Arrow). Columns whose DuckDB type differs from what Arrow carries (JSON, UUID, TIMESTAMPTZ
    read in another session zone) must still go out as the Records path sends them."""
    cfg = mapping_config(
        mappings=[
            {"from": c, "to": c.upper()}
            for c in ("email", "meta", "uid", "seen", "amount", "day", "score", "n")
        ],
        delete_behavior="delete",
    )
    sent: dict[bool, list[dict[str, Any]]] = {}
    for encoded in (True, False):
        with Warehouse(str(tmp_path / f"w{encoded}.duckdb")) as wh:
            wh.execute(
                """create table t as select i as id,
                    case when i % 4 = 0 then null else 'u' || i || '@x"é' end as email,
                    ('{"a": [' || i || ']}')::json as meta,
                    ('00000000-0000-0000-0000-' || lpad(i::varchar, 12, '0'))::uuid as uid,
                    timestamptz '2026-03-04 05:06:07.25+00' + to_seconds(i) as seen,
                    (i * 1.25)::decimal(12, 2) as amount,
                    date '0999-01-01' + i::integer as day,
                    i / 3.0 as score, i::hugeint * 10000000000000000 as n
                from range(10) r(i)"""
            )
            diff.compute_diff(wh, cfg, "select * from t", "r1", 10)
            dest = _Captured(encoded)
            result = load(wh, cfg, dest, "r1")
            assert result.total_succeeded == 10
            # A TIMESTAMPTZ reads in the session's zone: only UTC's is written in SQL (other
            # zones' offsets depend on the date), so elsewhere the batch takes Records.
            zone = wh.fetchone("select current_setting('TimeZone')")
            fast = encoded and zone is not None and zone[0] in ("UTC", "Etc/UTC")
            assert all((b.rows is not None) is fast for b in dest.batches)
            sent[encoded] = sorted(
                (r for body in dest.bodies for r in body["records"]), key=lambda r: r["id"]
            )
    assert len(sent[True]) == 10
    assert all(same(a, b) for a, b in zip(sent[True], sent[False], strict=True)), sent
    some = next(r for r in sent[True] if r["id"] == "1")["fields"]
    assert some["META"] == '{"a": [1]}' and some["UID"] == "00000000-0000-0000-0000-000000000001"


def test_concatenated_reads_a_slice_s_own_bytes_in_every_string_layout() -> None:
    texts = pa.array(["ab", "", "c", "dé"])
    for layout in (pa.string(), pa.large_string(), pa.string_view()):
        arr = texts.cast(layout)
        assert concatenated(arr) == "abcdé".encode()
        assert concatenated(arr.slice(2, 2)) == "cdé".encode()
        assert concatenated(arr.slice(4, 0)) == b""
    # A null's slot may hold bytes in Arrow: refused rather than read.
    with pytest.raises(ValueError, match="nulls"):
        concatenated(pa.array(["a", None]))
