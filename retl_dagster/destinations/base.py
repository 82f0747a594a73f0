"""What every destination implements. No Dagster here: a destination knows one API only."""

from __future__ import annotations

import builtins
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pydantic

Op = Literal["added", "changed", "removed", "event"]


@dataclass(frozen=True)
class Record:
    """One row to deliver. A `removed` record carries only its key."""

    op: Op
    key: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    sync: str
    run_id: str
    mode: str
    object: str | None
    records: list[Record]

    @property
    def batch_id(self) -> str:
        """Stable for the same records, across retries and across runs that resend them after
        a crash, so a destination that honours idempotency keys drops the duplicate."""
        h = hashlib.sha256(self.sync.encode())
        for r in self.records:
            h.update(f"\x1f{r.op}\x1e{r.key}\x1e".encode())
            h.update(repr(sorted(r.fields.items())).encode())
        return h.hexdigest()[:32]


@dataclass
class BatchResult:
    """The destination's answer: every record not in `rejected` was acknowledged."""

    rejected: dict[str, str] = field(default_factory=dict)
    """key -> the destination's own reason."""


class DestinationError(RuntimeError):
    """Delivery cannot go on (bad credentials, retries exhausted): the run fails and nothing
    unacknowledged is marked synced."""


class DestinationConfigError(ValueError):
    """A destination's declaration is wrong; names the destination, the field and the fix."""

    def __init__(self, destination: str, field: str, problem: str, fix: str) -> None:
        super().__init__(f"destination '{destination}', field '{field}': {problem}. Fix: {fix}")


class DestinationConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class Destination(ABC):
    """An API client that delivers batches of records."""

    type: ClassVar[str]
    # builtins.type: the class attribute `type` above shadows the builtin in this scope.
    config_class: ClassVar[builtins.type[DestinationConfig]]
    modes: ClassVar[frozenset[str]]
    """Sync modes this destination supports."""
    delete_behaviors: ClassVar[frozenset[str]] = frozenset({"nothing", "clear", "delete"})
    max_batch_size: ClassVar[int]
    """Records per request the API accepts."""

    def __init__(self, name: str, config: DestinationConfig) -> None:
        self.name = name
        self.config = config

    @abstractmethod
    def deliver(self, batch: Batch) -> BatchResult:
        """Send one batch; return which records were rejected. Raise DestinationError when the
        batch's fate is unknown or delivery cannot continue."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
