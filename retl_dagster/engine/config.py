"""Sync configuration: the typed shape of a sync's `defs.yaml` attributes.

Plain pydantic, no Dagster: the `Sync` component, `retl validate` and the tests share it.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal

import pydantic

from retl_dagster.common.errors import invalid
from retl_dagster.engine.kinds import MappingKind, Static, kind_of
from retl_dagster.engine.warehouse import quote_ident, quote_relation

SyncMode = Literal["insert", "update", "upsert", "mirror", "events"]
DeleteBehavior = Literal["nothing", "clear", "delete"]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ConfigError(ValueError):
    """A declaration is wrong; the message names the sync, the field and the fix."""

    def __init__(self, sync: str, field: str, problem: str, fix: str) -> None:
        self.sync, self.field, self.problem, self.fix = sync, field, problem, fix
        super().__init__(f"sync '{sync}', field '{field}': {problem}. Fix: {fix}")


class SyncDeclarationError(ValueError):
    """A sync's YAML is wrong: each line (explain's) names the sync, the field and the fix."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


class _Strict(pydantic.BaseModel):
    # Unknown keys are typos far more often than intent: refuse them.
    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)


class ModelSource(_Strict):
    """Where the rows come from: exactly one of `sql`, `table` or `dbt`."""

    sql: str | None = None
    """An inline SELECT run in the warehouse."""
    table: str | None = None
    """A table or view in the warehouse, optionally schema-qualified (`analytics.users`)."""
    dbt: str | None = None
    """The name of a dbt model in `dbt_models/`."""

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        given = [k for k in ("sql", "table", "dbt") if getattr(self, k)]
        if len(given) != 1:
            raise invalid(
                f"model needs exactly one of sql, table or dbt (got {', '.join(given) or 'none'})",
                "give one, e.g. `model: {dbt: users}` or `model: {table: analytics.users}`",
            )
        return self

    @property
    def kind(self) -> str:
        return "sql" if self.sql else "table" if self.table else "dbt"


class FieldMapping(_Strict):
    """One destination field and what feeds it: a column, a static value, an object built from
    columns, or an array (as is, or with chosen properties of each element)."""

    source: str | None = pydantic.Field(default=None, alias="from")
    """Model column (for `object: select` and arrays: the STRUCT / JSON / LIST column)."""
    to: str
    """Destination field name."""
    static: str | int | float | bool | None = None
    """A constant sent as the field's value on every record."""
    object: Literal["select"] | dict[str, str] | None = None
    """`select`: send the object column `from` as is. A mapping `{property: path}`: build an
    object; a path is a column or a property inside one (`address.city`)."""
    array: Literal["select"] | dict[str, str] | None = None
    """`select`: send the list column `from` as is. A mapping `{property: element property}`:
    keep those properties of each element (an element that lacks one simply lacks it)."""
    sync_nulls: bool = True
    """False: a null in the model leaves the destination's value alone (the field is omitted)."""
    overwrite: bool = True
    """False: the field is filled only where the destination's value is empty, so a value
    someone typed in the destination is never replaced (destinations that can read a record's
    current values: HubSpot, Salesforce)."""

    _kind: MappingKind | None = pydantic.PrivateAttr(default=None)

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> FieldMapping:
        self._kind = kind_of(self.source, self.static, self.object, self.array, self.to)
        return self

    @property
    def kind(self) -> MappingKind:
        """What feeds the field (engine/kinds.py): decided once, when the mapping is read."""
        if self._kind is None:  # built without validation (model_construct)
            self._kind = kind_of(self.source, self.static, self.object, self.array, self.to)
        return self._kind

    def columns(self) -> list[str]:
        """Model columns this mapping reads (a path's first part names its column)."""
        return self.kind.columns()

    def hash_parts(self) -> list[tuple[str, str | None]]:
        """(tag, column) pairs hashed for the diff; the tag carries everything but the column's
        value, so changing the mapping itself (a rename, a static value, a path) resends."""
        shape = f"{self.to}{self.kind.hash_shape()}"
        if isinstance(self.kind, Static):
            return [(f"{shape}={self.static!r}", None)]
        return [(shape, c) for c in self.columns()]


# `from` is a Python keyword, so the field is `source` with alias `from`; Dagster's YAML loader
# reads attributes by their YAML key (for error positions), so expose `from` as well.
setattr(FieldMapping, "from", property(lambda self: self.source))  # noqa: B010


class RecordMatch(_Strict):
    """Which model column identifies the destination record, and as which destination field."""

    column: str
    field: str


class SyncAlerts(_Strict):
    """Who hears about this sync's failed and partly failed runs."""

    on: list[Literal["failed", "partial", "guardrails"]] = ["failed", "partial", "guardrails"]
    """`guardrails`: when the rejected share crosses a guardrail, and when it recovers."""
    slack: str | None = None
    """A Slack channel declared by the Alerts component (its incoming webhook)."""
    email: list[str] = []
    """Addresses, sent through the Alerts component's SMTP server."""

    @pydantic.model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 reads an unquoted `on:` key as the boolean true.
        if isinstance(data, dict) and True in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    def __getitem__(self, key: Any) -> Any:
        # Dagster's YAML loader looks keys up for error positions, `on` (read as true) included.
        return getattr(self, "on" if key is True else str(key))


class Guardrails(_Strict):
    """Limits a run is held to, in percent (0-100): the share of records sent that the
    destination rejected (a warning, then an error), and the share of synced records one run
    may remove."""

    warn_rejected_percent: float | None = None
    """Above this, the load's `rejected_records` check fails as a warning."""
    max_rejected_percent: float | None = None
    """Above this, the check fails as an error and a sequence stops after this sync."""
    max_removed_percent: float | None = None
    """A run removing more than this share of the synced records stops before sending."""

    @pydantic.field_validator(
        "warn_rejected_percent", "max_rejected_percent", "max_removed_percent", mode="before"
    )
    @classmethod
    def _percent(cls, v: Any, info: pydantic.ValidationInfo) -> Any:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 100:
            raise invalid(
                f"{info.field_name} is {v!r}, not a percentage",
                f"give a number from 0 to 100, e.g. `{info.field_name}: 5`",
            )
        return v

    @pydantic.model_validator(mode="after")
    def _warn_below_max(self) -> Guardrails:
        warn, top = self.warn_rejected_percent, self.max_rejected_percent
        if warn is not None and top is not None and warn > top:
            raise invalid(
                f"warn_rejected_percent ({warn:g}) is above max_rejected_percent ({top:g})",
                "make the warning threshold at most the maximum",
                "warn_rejected_percent",
            )
        return self

    @property
    def checks_rejected(self) -> bool:
        """Whether a rejected-share threshold is declared (the load then has its check)."""
        return self.warn_rejected_percent is not None or self.max_rejected_percent is not None


_DAYS = {
    "sunday": 0,
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
}


_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)


def cron_problem(cron: str) -> str | None:
    """Why a cron expression cannot be a schedule (None when it can): Dagster's own rule (five
    fields that croniter reads), and steps no longer than their field, which cron accepts but
    fire once (`*/61 * * * *` runs at minute 0 only, not every 61 minutes)."""
    import croniter

    fields = cron.split()
    if len(fields) != 5 or not croniter.croniter.is_valid(cron):
        return (
            f"cron {cron!r} is not a cron expression of five fields (minute hour day-of-month "
            "month day-of-week)"
        )
    for text, (what, low, high) in zip(fields, _CRON_FIELDS, strict=True):
        for part in text.split(","):
            _, slash, step = part.partition("/")
            if slash and step.isdigit() and int(step) > high - low:
                return (
                    f"cron {cron!r}: a step of {step} in the {what} field is longer than the "
                    f"field ({low}-{high}), so it fires once, not every {step}"
                )
    return None


_SCHEDULE_FIXES = {
    "days": f"name weekdays ({', '.join(_DAYS)}) and `at: HH:MM`",
    "interval": "use minutes dividing an hour (15m), hours dividing a day (6h) or 1d; "
    "anything else as `cron:`",
}


class SyncSchedule(_Strict):
    """When the sync runs by itself: exactly one of `cron`, `interval` or `days` + `at`."""

    cron: str | None = None
    """A cron expression, e.g. `*/15 * * * *`."""
    interval: str | None = None
    """`15m`, `1h`, `6h`, `1d`: minutes dividing an hour, hours dividing a day, or days."""
    days: list[str] | None = None
    """Custom recurrence: weekdays (`monday`...) at `at`."""
    at: str = "00:00"
    timezone: str = "UTC"

    @pydantic.field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str | None) -> str | None:
        problem = cron_problem(v) if v is not None else None
        if problem:
            raise invalid(
                problem,
                "write five fields with steps that divide their field (e.g. `*/15 * * * *`), "
                "or use `interval: 15m`",
            )
        return v

    @pydantic.field_validator("at")
    @classmethod
    def _valid_at(cls, v: str) -> str:
        m = re.fullmatch(r"(\d{1,2}):(\d{2})", v.strip())
        if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            raise invalid(f"at {v!r} is not a time of day", 'write HH:MM, e.g. `at: "09:30"`')
        return v.strip()

    @pydantic.field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, v: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise invalid(
                f"unknown time zone {v!r}", "use an IANA name such as Europe/Paris or UTC"
            ) from None
        return v

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> SyncSchedule:
        given = [k for k in ("cron", "interval", "days") if getattr(self, k)]
        if len(given) != 1:
            raise invalid(
                f"schedule needs exactly one of cron, interval or days (got "
                f"{', '.join(given) or 'none'})",
                "give one, e.g. `schedule: {interval: 15m}` or `schedule: {cron: '0 6 * * *'}`",
            )
        try:  # refuse what cannot be expressed now, not at the first tick
            self.as_cron()
        except ValueError as exc:
            raise invalid(str(exc), _SCHEDULE_FIXES[given[0]], given[0]) from None
        return self

    def as_cron(self) -> str:
        if self.cron:
            return self.cron
        if self.days:
            unknown = [d for d in self.days if d.lower() not in _DAYS]
            if unknown:
                raise ValueError(f"unknown day(s) {', '.join(unknown)}")
            hour, _, minute = self.at.partition(":")
            dows = ",".join(str(_DAYS[d.lower()]) for d in self.days)
            return f"{int(minute or 0)} {int(hour)} * * {dows}"
        assert self.interval
        m = re.fullmatch(r"(\d+)\s*([mhd])", self.interval.strip())
        n, unit = (int(m.group(1)), m.group(2)) if m else (0, "")
        if unit == "m" and 0 < n < 60 and 60 % n == 0:
            return f"*/{n} * * * *"
        if unit == "h" and 0 < n <= 24 and 24 % n == 0:
            return "0 * * * *" if n == 1 else f"0 */{n} * * *"
        if unit == "d" and n == 1:
            return "0 0 * * *"
        raise ValueError(f"interval {self.interval!r} cannot be a schedule")


class TableChange(_Strict):
    """Run when a warehouse table changes, seen by a cheap query a sensor polls."""

    table: str | None = None
    """The table to watch; defaults to the model's `table`."""
    column: str | None = None
    """Watch `max(column)` (e.g. `updated_at`); without it, the row count."""
    query: str | None = None
    """Or any cheap SQL returning one value (e.g. a load audit table's last batch id)."""
    every_s: int = 60
    """How often the sensor asks (5 s to a day)."""

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> TableChange:
        if not 5 <= self.every_s <= 86_400:
            raise invalid(f"every_s is {self.every_s}", "ask every 5 to 86400 seconds", "every_s")
        if self.query and (self.table or self.column):
            raise invalid(
                "it takes either `query` or `table` (+ `column`), not both",
                "keep one of them",
                "query",
            )
        return self


class RunAfter(_Strict):
    """Run when a job outside Dagster finishes: a dbt Cloud job or a Fivetran connector's sync
    (the accounts are declared by a `retl_dagster.components.Upstreams` component)."""

    dbt_cloud_job: int | None = None
    """The dbt Cloud job id (the number in its URL: .../jobs/<id>)."""
    fivetran_connector: str | None = None
    """The Fivetran connector id (its connection's setup tab, e.g. `warn_enormous`)."""

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> RunAfter:
        given = [k for k in ("dbt_cloud_job", "fivetran_connector") if getattr(self, k)]
        if len(given) != 1:
            raise invalid(
                "run_after needs exactly one of dbt_cloud_job or fivetran_connector "
                f"(got {', '.join(given) or 'none'})",
                "write `run_after: {dbt_cloud_job: 12345}` or "
                "`run_after: {fivetran_connector: <connector id>}`; a second trigger needs a "
                "second sync",
            )
        return self


_DURATION = re.compile(r"(\d+)\s*([mhd])")
_DURATION_S = {"m": 60, "h": 3600, "d": 86400}


class Incremental(_Strict):
    """Opt-in incremental diff: a run reads only the model rows whose `cursor` is at or past the
    highest value the last finished run saw (plus rows still rejected), and a full diff every
    `full_every` catches what an incremental one cannot see (deleted rows, rows whose cursor
    did not move)."""

    cursor: str
    """Model column that grows whenever a row changes (e.g. `updated_at`, a version number)."""
    full_every: str = "24h"
    """How often a full diff runs anyway: minutes, hours or days (`30m`, `24h`, `7d`)."""

    @pydantic.field_validator("full_every")
    @classmethod
    def _duration(cls, v: str) -> str:
        m = _DURATION.fullmatch(str(v).strip())
        if not m or int(m.group(1)) == 0:
            raise invalid(
                f"full_every is {v!r}, not a duration",
                "give minutes, hours or days, e.g. `full_every: 24h` or `full_every: 7d`",
            )
        return v

    @property
    def full_every_s(self) -> int:
        m = _DURATION.fullmatch(self.full_every.strip())
        assert m
        return int(m.group(1)) * _DURATION_S[m.group(2)]


class SyncConfig(_Strict):
    """A sync: model -> diff -> destination."""

    name: str
    """Unique sync name: lower-case letters, digits and underscores."""
    model: ModelSource
    primary_key: str
    """Model column that identifies a row across runs; must be unique and never null."""
    destination: str
    """Name of a destination declared by a `retl_dagster.components.Destinations` component."""
    object: str | None = None
    """Destination object or event name, where the destination has several."""
    mode: SyncMode = "upsert"
    match: RecordMatch | None = None
    mappings: list[FieldMapping]
    delete_behavior: DeleteBehavior = "nothing"
    """What happens at the destination when a row leaves the model."""
    batch_size: int | None = pydantic.Field(default=None, ge=1, le=100_000)
    """Records per destination request; defaults to the destination's own limit."""
    enabled: bool = True
    description: str | None = None
    retry_rejected_days: int = pydantic.Field(default=14, ge=0, le=3650)
    """A rejected record is retried on every run for this long (with the model's latest values);
    after that it waits until its row changes."""
    alerts: SyncAlerts | None = None
    guardrails: Guardrails | None = None
    """Rejected-share thresholds (an asset check on the load) and a removal guard."""
    schedule: SyncSchedule | None = None
    """None: manual (runs only when started)."""
    run_on_model_update: bool = False
    """Also run whenever the model asset is materialised (e.g. by dbt in the same Dagster)."""
    run_on_table_change: TableChange | None = None
    """Also run when a warehouse table changes (loaded outside Dagster, e.g. by Fivetran)."""
    run_after: RunAfter | None = None
    """Also run when a dbt Cloud job or a Fivetran connector sync finishes (seen by
    dagster-dbt's / dagster-fivetran's polling sensor)."""
    after: list[str] = pydantic.Field(default_factory=list)
    """Sequences: run when each of these syncs finished successfully in the same sequence run
    (started by the sequence's first sync); a failure stops the sequence."""
    retention_days: int = pydantic.Field(default=30, ge=1, le=3650)
    """Run partitions, stored diffs and record logs older than this are pruned."""
    incremental: Incremental | None = None
    """Opt-in: diff only the rows past the last run's cursor, with a periodic full diff."""

    @pydantic.field_validator("object", mode="before")
    @classmethod
    def _object_is_text(cls, v: Any) -> Any:
        # YAML (and Dagster's templating, even for a quoted value) reads an all-digit id (a
        # Meta or TikTok audience, a LinkedIn segment) as a number: it is still a name.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @pydantic.field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise invalid(
                f"sync name {v!r} is not lower-case letters, digits and underscores starting "
                "with a letter (it names warehouse tables and Dagster assets)",
                "rename it, e.g. `hubspot_contacts`",
            )
        return v

    @pydantic.model_validator(mode="after")
    def _mappings_make_sense(self) -> SyncConfig:
        if not self.mappings:
            raise invalid(
                "mappings is empty",
                "add at least one `- {from: <model column>, to: <destination field>}`",
                "mappings",
            )
        if self.mode == "events" and self.delete_behavior != "nothing":
            raise invalid(
                "events are insert-only and cannot be deleted or cleared",
                "set delete_behavior: nothing",
                "delete_behavior",
            )
        if self.mode == "mirror" and self.delete_behavior != "delete":
            raise invalid(
                "mode mirror deletes what leaves the model",
                "set delete_behavior: delete (or use mode upsert)",
                "delete_behavior",
            )
        seen: dict[str, int] = {}
        for i, m in enumerate(self.mappings, start=1):
            if m.to in seen:
                raise invalid(
                    f"field '{m.to}' is already fed by mappings[{seen[m.to]}]",
                    "map each destination field once",
                    f"mappings[{i}].to",
                )
            seen[m.to] = i
        watch = self.run_on_table_change
        if watch and not (watch.query or watch.table or self.model.table):
            raise invalid(
                "no table to watch (the model is not a `table`)",
                "set `table:` (+ `column: updated_at`) or `query:`",
                "run_on_table_change",
            )
        if self.name in self.after:
            raise invalid("a sync cannot follow itself", "remove it from `after`", "after")
        return self

    def freshness_sql(self) -> str | None:
        """The cheap query whose answer changes when the watched table does."""
        watch = self.run_on_table_change
        if watch is None:
            return None
        if watch.query:
            return watch.query.strip().rstrip(";")
        table = quote_relation(watch.table or self.model.table or "")
        if watch.column:
            return f"select cast(max({quote_ident(watch.column)}) as varchar) from {table}"
        return f"select cast(count(*) as varchar) from {table}"

    def reset_warnings(self) -> list[str]:
        """Why resending everything could harm the destination (Hightouch's prerequisites for a
        full resync): duplicates in insert/events mode; deletes that will not happen."""
        warnings = []
        if self.mode in ("insert", "events"):
            warnings.append(
                f"mode {self.mode}: every row is sent again as new, which can create duplicates "
                "in the destination"
            )
        if self.delete_behavior != "nothing":
            warnings.append(
                f"delete_behavior {self.delete_behavior}: rows that left the model before the "
                "reset are no longer known, so they will never be deleted or cleared"
            )
        return warnings

    def fill_only(self) -> frozenset[str]:
        """Fields mapped with `overwrite: false`: filled only where the destination is empty."""
        return frozenset(m.to for m in self.mappings if not m.overwrite)

    def source_columns(self) -> list[str]:
        """The model columns the sync reads: the primary key first, then mapped columns."""
        cols = [self.primary_key]
        for m in self.mappings:
            for c in m.columns():
                if c not in cols:
                    cols.append(c)
        if self.match and self.match.column not in cols:
            cols.append(self.match.column)
        return cols

    def check_columns(self, available: list[str]) -> None:
        """Raise ConfigError if the sync reads a column the model lacks."""
        have = {c.lower(): c for c in available}
        listing = ", ".join(available)
        if self.primary_key.lower() not in have:
            raise ConfigError(
                self.name,
                "primary_key",
                f"column '{self.primary_key}' is not in the model (columns: {listing})",
                "set primary_key to one of the model's columns",
            )
        for i, m in enumerate(self.mappings, start=1):
            for c in m.columns():
                if c.lower() not in have:
                    where = "from" if m.source is not None else f"object.{c}"
                    raise ConfigError(
                        self.name,
                        f"mappings[{i}].{where}",
                        f"column '{c}' is not in the model (columns: {listing})",
                        "map an existing column or add it to the model",
                    )
        if self.incremental and self.incremental.cursor.lower() not in have:
            raise ConfigError(
                self.name,
                "incremental.cursor",
                f"column '{self.incremental.cursor}' is not in the model (columns: {listing})",
                "name a model column that grows when a row changes, e.g. `updated_at`",
            )
        if self.match and self.match.column.lower() not in have:
            raise ConfigError(
                self.name,
                "match.column",
                f"column '{self.match.column}' is not in the model (columns: {listing})",
                "match on an existing column",
            )


_FIXES = {
    "extra_forbidden": "remove it or fix its spelling; {where} accepts: {fields}",
    "missing": 'add it (README.md, "Declaring a sync", shows the shape of a sync)',
    "literal_error": "use one of the values listed",
}
_DEFAULT_FIX = 'give a value of the right type (README.md, "Declaring a sync", lists each key)'


def field_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's location as the YAML spells it, positions counted from 1: `mappings[4].to`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _accepted_keys(loc: tuple[int | str, ...]) -> tuple[str, str]:
    """(what, its keys) for an unknown key at `loc`: the sync's, or a nested block's."""
    model: type[pydantic.BaseModel] = SyncConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        options = [annotation, *getattr(annotation, "__args__", ())]
        nested = [o for o in options if isinstance(o, type) and issubclass(o, pydantic.BaseModel)]
        if not nested:
            break
        model = nested[0]
    where = "a sync" if model is SyncConfig else f"`{field_path(loc[:-1])}`"
    return where, ", ".join(f.alias or n for n, f in model.model_fields.items())


def explain(exc: pydantic.ValidationError, sync: str, source: str = "") -> list[str]:
    """pydantic's errors as sentences that name the sync, the field and the fix."""
    where = f" ({source})" if source else ""
    out = []
    errors = exc.errors()
    for err in errors:
        # Dagster's resolved model wraps blocks in validators (`function-after[...]`) and
        # accepts a templated string in their place (`str`): not the YAML's path.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        if loc and loc[-1] == "str" and err["type"] == "string_type" and len(errors) > 1:
            continue  # the block was not a template either: the other error says why
        loc = tuple(loc)
        ctx = err.get("ctx") or {}
        path = field_path(loc)
        if ctx.get("field"):
            path = f"{path}.{ctx['field']}" if path else str(ctx["field"])
        fix = ctx.get("fix")
        msg = err["msg"].removeprefix("Value error, ")
        if fix is None:
            what, keys = _accepted_keys(loc)
            fix = _FIXES.get(err["type"], _DEFAULT_FIX).format(where=what, fields=keys)
            if err["type"] == "extra_forbidden" and loc:
                msg = f"unknown key '{loc[-1]}'"
                close = difflib.get_close_matches(str(loc[-1]), keys.split(", "), n=1)
                if close:
                    fix = f"rename it to `{close[0]}` ({what} accepts: {keys})"
        out.append(f"sync '{sync}'{where}, field '{path or 'attributes'}': {msg}. Fix: {fix}")
    return out
