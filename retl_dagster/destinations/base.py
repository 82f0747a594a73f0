"""What every destination implements. No Dagster here: a destination knows one API only."""

from __future__ import annotations

import builtins
import datetime as dt
import functools
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar

import orjson
import pyarrow as pa
import pydantic

from retl_dagster.common.encoding import run_time
from retl_dagster.destinations.bisect import DEFAULT_BUDGET, RequestBudget

Op = Literal["added", "changed", "removed", "event"]


@dataclass(slots=True)
class Record:
    """One row to deliver. A `removed` record carries only its key. (Slots, not frozen: a load
    builds one per row, and a frozen dataclass's __init__ costs twice as much.)"""

    op: Op
    key: str
    fields: dict[str, Any] = field(default_factory=dict)
    match_value: Any = None
    """Value of the sync's `match.column` (for a removed record: the one last synced)."""
    dest_id: str | None = None
    """The destination's own id for this record, as it answered on an earlier run."""
    hash: str | None = None
    """The diff's hash of the record's mapped values (and mapping), where it came from a diff."""


ItemT = TypeVar("ItemT")


def build_items(
    records: Sequence[Record],
    out: BatchResult,
    build: Callable[[Record, list[str]], ItemT],
    invalid: builtins.type[Exception],
) -> list[tuple[Record, ItemT]]:
    """Each record's request item, as `build(record, notes)` makes it. A record whose value
    `build` refuses (raising `invalid`) is rejected with the message and left out; what it
    wrote in `notes` (an identifier left out, the item still going) becomes the record's
    warning."""
    items: list[tuple[Record, ItemT]] = []
    for record in records:
        notes: list[str] = []
        try:
            items.append((record, build(record, notes)))
        except invalid as exc:
            out.rejected[record.key] = str(exc)
            continue
        if notes:
            out.warnings[record.key] = "; ".join(notes)
    return items


@dataclass(frozen=True, slots=True)
class EncodedRows:
    """A batch's records column by column, written by DuckDB: what a destination with
    `Destination.encoded_rows` gets instead of Records where the sync's mapping is plain
    (columns and statics), so nothing is built per row in Python. Entry i of each Arrow array
    is one record. Read whole runs of entries with `concatenated`, not Arrow's compute
    functions: those release the GIL, and a load's delivering threads then fight over it (at
    batch 100 a body cost ten times its single-threaded time)."""

    ops: pa.StringArray
    """As `Record.op`."""
    keys: pa.StringArray
    idents: pa.StringArray
    """What `Batch.batch_id` hashes for the record, where it has a hash (null elsewhere)."""
    fields_json: pa.StringArray | None
    """The JSON object of the record's fields (a Record's `fields`, encoded); null for a
    removed record. None where the destination has `item_sql`: its items carry them."""
    items: pa.StringArray | None
    """`Destination.item_sql`'s text for each record, after a comma (None without one)."""

    def slice(self, start: int, length: int) -> EncodedRows:
        """Rows `start` to `start + length` (no copy)."""
        return EncodedRows(
            self.ops.slice(start, length),
            self.keys.slice(start, length),
            self.idents.slice(start, length),
            None if self.fields_json is None else self.fields_json.slice(start, length),
            None if self.items is None else self.items.slice(start, length),
        )

    def fields(self, i: int) -> dict[str, Any]:
        """Record i's fields as values (for messages and samples, not the hot path): from its
        item's `fields` member where items carry them."""
        if self.fields_json is None:
            assert self.items is not None
            item: dict[str, Any] = orjson.loads(self.items[i].as_py()[1:])
            return dict(item.get("fields") or {})
        text = self.fields_json[i].as_py()
        return orjson.loads(text) if text is not None else {}


def concatenated(texts: pa.StringArray) -> bytes:
    """The array's strings end to end, as bytes, copied out of its buffers. It must hold no
    null (Arrow lets a null's slot hold bytes)."""
    if not len(texts):
        return b""
    if texts.null_count:
        raise ValueError("concatenated: the array holds nulls")
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        texts = texts.cast(pa.string())  # another layout (string views): not DuckDB's default
    _, offsets, data = texts.buffers()
    if data is None:
        return b""
    ends = memoryview(offsets).cast("q" if pa.types.is_large_string(texts.type) else "i")
    return memoryview(data)[ends[texts.offset] : ends[texts.offset + len(texts)]].tobytes()


@dataclass(frozen=True)
class Batch:
    sync: str
    run_id: str
    mode: str
    object: str | None
    records: list[Record]
    """Empty where `rows` carries the batch."""
    match_field: str | None = None
    """Destination identifier that `Record.match_value` is matched against (e.g. `email`)."""
    salt: str = ""
    """Set by a replay, so its batches get new ids and are not dropped as duplicates."""
    fill_only: frozenset[str] = frozenset()
    """Fields mapped with `overwrite: false`: sent only where the destination's value is empty
    (destinations with `reads_current_values`)."""
    rows: EncodedRows | None = None
    """The batch's records column by column, for destinations with `encoded_rows`."""

    @property
    def keys(self) -> list[str]:
        """The records' keys, in order."""
        if self.rows is not None:
            keys: list[str] = self.rows.keys.to_pylist()
            return keys
        return [r.key for r in self.records]

    @property
    def run_time(self) -> dt.datetime:
        """When the run started: the event time of records whose sync maps none (stable across
        retries and replays of the run, unlike the time of sending)."""
        return run_time(self.run_id)

    @functools.cached_property
    def batch_id(self) -> str:
        """Stable for the same records, across retries and across runs that resend them after
        a crash, so a destination that honours idempotency keys drops the duplicate. A record
        from a diff is named by its hash (which covers its values); others by their fields."""
        h = hashlib.sha256(f"{self.sync}\x1f{self.salt}".encode())
        if self.rows is not None:
            rows = self.rows
            if not rows.idents.null_count:
                # Every record has a hash: the text the loop below hashes, written by DuckDB.
                h.update(concatenated(rows.idents))
                return h.hexdigest()[:32]
            for i, (op, key, ident) in enumerate(
                zip(
                    rows.ops.to_pylist(),
                    rows.keys.to_pylist(),
                    rows.idents.to_pylist(),
                    strict=True,
                )
            ):
                if ident is None:  # a removed record, or one `clear` empties: named by fields
                    ident = f"\x1f{op}\x1e{key}\x1e{sorted(rows.fields(i).items())!r}"
                h.update(ident.encode())
            return h.hexdigest()[:32]
        for r in self.records:
            content = r.hash if r.hash is not None else repr(sorted(r.fields.items()))
            h.update(f"\x1f{r.op}\x1e{r.key}\x1e{content}".encode())
        return h.hexdigest()[:32]


@dataclass
class BatchResult:
    """The destination's answer: every record not in `rejected` was acknowledged."""

    rejected: dict[str, str] = field(default_factory=dict)
    """key -> the destination's own reason."""
    dest_ids: dict[str, str] = field(default_factory=dict)
    """key -> the destination's id of an acknowledged record, kept in state for later
    updates and deletes."""
    identified: int | None = None
    """Audience and conversion destinations: records in the batch that carried at least one
    usable identifier (email, phone, click id...). None elsewhere."""
    matched: int | None = None
    """Records the platform says it matched to a person, where it says so per request."""
    warnings: dict[str, str] = field(default_factory=dict)
    """key -> what an acknowledged record was sent without, and why (e.g. a phone number that
    could not be read, left out while the record's other identifiers went)."""


@dataclass(frozen=True)
class SyncShape:
    """What a sync asks of its destination, for checks before anything is sent."""

    mode: str
    object: str | None
    delete_behavior: str
    match_field: str | None
    fields: list[str]
    kinds: tuple[str, ...] = ()
    """Each field's mapping kind (`column`, `static`, `object_select`, `object_build`,
    `array_select`, `array_pick`), in the order of `fields`."""

    fill_only: tuple[str, ...] = ()
    """Fields mapped with `overwrite: false`."""

    def kind(self, index: int) -> str:
        return self.kinds[index] if index < len(self.kinds) else "column"


NESTED_KINDS = frozenset({"object_select", "object_build", "array_select", "array_pick"})
"""Mapping kinds that send an object or an array."""


Problem = tuple[str, str, str]
"""(field, problem, fix) of a sync's declaration."""


class DestinationError(RuntimeError):
    """Delivery cannot go on (bad credentials, retries exhausted): the run fails and nothing
    unacknowledged is marked synced."""


class DestinationConfigError(ValueError):
    """A destination's declaration is wrong; names the destination, the field and the fix."""

    def __init__(
        self, destination: str, field: str, problem: str, fix: str, source: str = ""
    ) -> None:
        self.destination, self.field, self.problem, self.fix = destination, field, problem, fix
        where = f" (at {source})" if source else ""
        super().__init__(
            f"destination '{destination}', field '{field}': {problem}. Fix: {fix}{where}"
        )


class DestinationConfig(pydantic.BaseModel):
    # Numeric-looking ids in YAML (`project_id: 123`) are still ids.
    model_config = pydantic.ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    batch_size: int | None = None
    """Records per batch, within the destination's `max_batch_size` (None: that maximum). Every
    config declares its own, with the API's bounds and default."""
    pool_limit: int | None = pydantic.Field(default=None, ge=1, le=64)
    """Syncs delivering to this destination at once (its Dagster pool's limit); None: the
    destination type's `pool_limit`."""

    verbatim_fields: ClassVar[frozenset[str]] = frozenset()
    """Options kept as written: Dagster's templating does not render them (they hold the
    destination's own templates, e.g. the `http` type's `operations`)."""

    @classmethod
    def field_names(cls) -> list[str]:
        """The fields in the order the config's classes declare them, a field a subclass declares
        again (e.g. `batch_size`, with its own bounds) where the subclass declares it."""
        order: dict[str, None] = {}
        for klass in reversed(cls.__mro__):
            for name in vars(klass).get("__annotations__", {}):
                if name in cls.model_fields:
                    order.pop(name, None)
                    order[name] = None
        return [*order, *(n for n in cls.model_fields if n not in order)]


class ConcurrencyConfig(DestinationConfig):
    """For configs whose destination may have several batches in flight at once; a config
    without it refuses the key."""

    concurrency: int = pydantic.Field(default=1, ge=1)
    """Batches in flight at once, within the destination's `max_concurrency`."""


ConfigT = TypeVar("ConfigT", bound=DestinationConfig)


class Destination(ABC, Generic[ConfigT]):
    """An API client that delivers batches of records, configured by a `ConfigT`."""

    type: ClassVar[str]
    # builtins.type: the class attribute `type` above shadows the builtin in this scope.
    config_class: ClassVar[builtins.type[DestinationConfig]]
    """The pydantic model of this destination's options (the `ConfigT` its __init__ takes)."""
    config: ConfigT
    modes: ClassVar[frozenset[str]]
    """Sync modes this destination supports."""
    delete_behaviors: ClassVar[frozenset[str]] = frozenset({"nothing", "clear", "delete"})
    max_batch_size: ClassVar[int]
    """Records per request the API accepts."""
    accepts_nulls: ClassVar[bool] = True
    """False: the API refuses nulls, so `sync_nulls` is forced off (and such a destination
    leaves `clear` out of its delete behaviours)."""
    objects: ClassVar[Mapping[str, tuple[str, ...] | None] | None] = None
    """None: `object` is free (or unused). Otherwise the valid objects, each with its fixed
    property list, or None where the object takes any property (custom properties)."""
    native_values: ClassVar[bool] = False
    """True: fields arrive as Python values (Decimal, datetime, bytes...) instead of JSON-ready
    ones, for destinations that store types (databases)."""
    requires_object: ClassVar[bool] = False
    requires_match: ClassVar[frozenset[str]] = frozenset()
    """Modes in which the sync must declare `match`."""
    pool_limit: ClassVar[int] = 4
    """Syncs that may deliver to one destination at once (the limit of its Dagster pool,
    `retl_dest_<name>`), unless its config sets `pool_limit`. They share the destination's one
    request budget, so more of them split its rate rather than exceed it; 1 where two writers
    would undo each other."""
    max_concurrency: ClassVar[int] = 1
    """Batches this client may have in flight at once: above 1 only where `deliver` is safe
    to call from several threads (an httpx client and a thread-safe rate limiter)."""
    reads_current_values: ClassVar[bool] = False
    """True: `deliver` reads a record's current values first where a batch has `fill_only`
    fields, so `overwrite: false` mappings fill only empty fields."""
    encoded_rows: ClassVar[bool] = False
    """True: where a sync's mapping is plain, `deliver` gets `Batch.rows` (fields already JSON,
    encoded by DuckDB) instead of `Batch.records`; it must handle both."""
    item_sql: ClassVar[str | None] = None
    """With `encoded_rows`: DuckDB SQL of one record's request item, a JSON object, over the
    encoded record's `op`, `key` and `fields` (JSON text; null for a removed record). The load
    writes it for every row into `EncodedRows.items`, instead of the fields alone: the item's
    `fields` member, if any, is what a rejected record's sample shows."""
    reports_match: ClassVar[bool] = False
    """Audience and conversion destinations: runs show identified rows and the match rate."""
    event_time_field: ClassVar[str | None] = None
    """Events destinations: the field a sync maps its event-time column to (Mixpanel `time`,
    Segment `timestamp`...). The client sends it in its API's own time format, never among the
    event's properties; see `encoding.parse_event_time` for what it accepts."""
    bisect_budget: ClassVar[int] = DEFAULT_BUDGET
    """Extra requests one delivered batch may spend isolating records an API refused a whole
    request for (see `bisect.send_isolating`)."""

    @classmethod
    def check_sync(cls, sync: SyncShape) -> list[Problem]:
        """Each way a sync asks what this API cannot do: the generic rules, then the API's."""
        mode, object_, delete_behavior = sync.mode, sync.object, sync.delete_behavior
        match_field = sync.match_field
        problems: list[Problem] = []
        if mode not in cls.modes:
            problems.append(
                (
                    "mode",
                    f"{cls.type} does not support mode '{mode}'",
                    f"use one of {sorted(cls.modes)}",
                )
            )
        if delete_behavior not in cls.delete_behaviors:
            problems.append(
                (
                    "delete_behavior",
                    f"{cls.type} cannot '{delete_behavior}'",
                    f"use one of {sorted(cls.delete_behaviors)}",
                )
            )
        if mode == "events" and delete_behavior != "nothing":
            problems.append(
                (
                    "delete_behavior",
                    "events are insert-only and cannot be deleted",
                    "set delete_behavior: nothing",
                )
            )
        if mode in cls.requires_match and match_field is None:
            problems.append(
                (
                    "match",
                    f"{cls.type} needs record matching in mode '{mode}'",
                    "add `match: {column: <model column>, field: <identifier>}`",
                )
            )
        if sync.fill_only and not cls.reads_current_values:
            i = sync.fields.index(sync.fill_only[0])
            problems.append(
                (
                    f"mappings[{i + 1}].overwrite",
                    f"{cls.type} cannot read a record's current values, so it cannot fill "
                    f"'{sync.fill_only[0]}' only where it is empty",
                    "remove `overwrite: false` (every run then writes the model's value), or "
                    "sync to a destination that can (hubspot, salesforce)",
                )
            )
        if sync.fill_only and mode in ("insert", "events"):
            problems.append(
                (
                    "mode",
                    f"`overwrite: false` has nothing to protect in mode '{mode}', which never "
                    "touches existing records",
                    "remove `overwrite: false`, or use mode update or upsert",
                )
            )
        if cls.requires_object and not object_:
            listing = sorted(cls.objects) if cls.objects else "the API's object names"
            problems.append(("object", "missing", f"set object to one of {listing}"))
        if cls.objects is not None and object_:
            if object_ not in cls.objects and "*" not in cls.objects:
                problems.append(
                    (
                        "object",
                        f"{cls.type} has no object '{object_}'",
                        f"use one of {sorted(cls.objects)}",
                    )
                )
            else:
                allowed = cls.objects.get(object_, cls.objects.get("*"))
                if allowed is not None:
                    problems += cls.unknown_properties(sync, allowed)
        time_field = cls.event_time_field
        if mode == "events" and time_field in sync.fields:
            i = sync.fields.index(time_field)
            if sync.kind(i) in NESTED_KINDS:
                problems.append(
                    (
                        f"mappings[{i + 1}]",
                        f"'{time_field}' is the event's time, one timestamp",
                        f"map a timestamp column to {time_field} with `from:`",
                    )
                )
        return problems + cls.check_specific(sync)

    @classmethod
    def unknown_properties(cls, sync: SyncShape, allowed: Sequence[str]) -> list[Problem]:
        """Mapped fields that are not among the object's `allowed` properties."""
        listing = ", ".join(sorted(allowed))
        return [
            (
                f"mappings[{i}].to",
                f"'{f}' is not a property of {cls.type} {sync.object}",
                f"use one of {listing}",
            )
            for i, f in enumerate(sync.fields, start=1)
            if f not in allowed
        ]

    @classmethod
    def aliased_fields(
        cls, sync: SyncShape, aliases: Mapping[str, str], name_for: str, after: str = ""
    ) -> list[Problem]:
        """Mapped fields the API knows by another name: `<name_for> <field> is <its name>`,
        fixed by mapping to that name (`after`: what then happens to it)."""
        return [
            (
                f"mappings[{i}].to",
                f"{name_for} {f} is {aliases[f]}",
                f"map it to {aliases[f]}{after}",
            )
            for i, f in enumerate(sync.fields, start=1)
            if f in aliases
        ]

    def remote_properties(self, object_: str) -> list[str] | None:
        """The object's property names as the live API lists them (for `retl validate`), or
        None where the API has no such list."""
        return None

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        """This API's own rules (override)."""
        return []

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[Problem]:
        """Rules of the destination's declared options checked at load, before any run (its
        secrets are still environment references): e.g. templates' syntax. (field, problem,
        fix) with the option's dotted path as field."""
        return []

    @classmethod
    def check_declared(cls, options: Mapping[str, Any], sync: SyncShape) -> list[Problem]:
        """Rules joining the destination's declared options and a sync (e.g. templates reading
        only fields the sync maps), at load like `check_sync`."""
        return []

    def __init__(self, name: str, config: ConfigT) -> None:
        self.name = name
        self.config = config
        # Every destination's config may set batch_size (within max_batch_size).
        self.batch_size: int = config.batch_size or self.max_batch_size
        # A config that accepts concurrency may set it (within max_concurrency).
        concurrency = config.concurrency if isinstance(config, ConcurrencyConfig) else 1
        self.concurrency: int = min(concurrency, self.max_concurrency)

    def request_budget(self) -> RequestBudget:
        """A fresh budget for isolating refused records: one per delivered batch."""
        return RequestBudget(self.bisect_budget)

    def prepare(  # noqa: B027 - optional hook
        self,
        object_: str | None,
        match_field: str | None,
        field_types: dict[str, str],
        match_type: str | None,
    ) -> None:
        """Called once per run before the first batch with the warehouse type of each mapped
        field (and of the match column), for destinations that create or check a schema."""

    @abstractmethod
    def deliver(self, batch: Batch) -> BatchResult:
        """Send one batch; return which records were rejected. Raise DestinationError when the
        batch's fate is unknown or delivery cannot continue."""

    def check(self, object_: str | None = None) -> str:
        """`retl check`: the cheapest read-only call that proves the credentials work and the
        target exists (of `object_`, a sync's object, where given). Returns a short sentence of
        what was verified; raises DestinationError (or DestinationConfigError) saying what is
        wrong and how to fix it. Never sends a record."""
        raise NotImplementedError(f"destination type '{self.type}' has no connection check")

    def match_rate(self) -> float | None:
        """After the last batch: the match rate (0-1) the platform itself reports (e.g. an
        audience's), or None where it reports none."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


AnyDestination = Destination[Any]
"""A destination of any type (the engine drives them all alike)."""
