from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import pydantic

from retl_dagster.destinations.base import ConcurrencyConfig
from retl_dagster.destinations.http import HttpSettings
from retl_dagster.destinations.impl.http import templates as t

MAX_BATCH = 1000


def _codes(value: Any) -> Any:
    """`success_codes` as a list of ints; "2xx" stands for 200-299."""
    out: list[int] = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and len(item) == 3 and item.lower().endswith("xx"):
            base = int(item[0]) * 100
            out += range(base, base + 100)
        else:
            out.append(int(item))
    return out


class Operation(pydantic.BaseModel):
    """One request a record (or a batch) of one kind of change becomes."""

    model_config = pydantic.ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    per: Literal["record", "batch"] = "record"
    """`record`: one request per record; `batch`: one per batch, the body looping `records`.
    (Declared first: the templates' checks depend on it.)"""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str
    """A template, relative to `base_url` or absolute; every value it prints is percent-quoted."""
    headers: dict[str, str] = {}
    """Templates; added to (and overriding) the destination's `headers`."""
    body: str | None = None
    """A JSON template: what it renders is parsed as JSON (invalid JSON rejects the record or
    batch, never sent). None: no body."""
    success_codes: Annotated[list[int], pydantic.BeforeValidator(_codes)] = list(range(200, 300))
    id_path: str | None = None
    """Where a `per: record` answer holds the record's id (`data.id`), kept as its dest_id."""
    errors_path: str | None = None
    """Where a `per: batch` answer lists the records it refused (`errors`)."""
    error_key: str = "id"
    """In each error, the path of what names the record (compared with `error_refers_to`)."""
    error_refers_to: Literal["key", "match_value", "index"] = "key"
    """What `error_key` holds: the record's key, its match value, or its index in the batch."""
    error_message: str = "message"
    """In each error (and in a refused `per: record` answer), the path of the reason."""

    @pydantic.field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @pydantic.field_validator("url", "body", "headers")
    @classmethod
    def _templates(cls, value: Any, info: pydantic.ValidationInfo) -> Any:
        allowed = t.BATCH_VARS if info.data.get("per") == "batch" else t.RECORD_VARS
        env = {"url": t.URL, "body": t.BODY}.get(info.field_name or "", t.TEXT)
        for source in value.values() if isinstance(value, dict) else [value]:
            if source is not None:
                try:
                    t.compile_template(env, source, allowed)
                except t.TemplateProblem as exc:
                    raise ValueError(str(exc)) from None
        return value

    @pydantic.model_validator(mode="after")
    def _answer(self) -> Operation:
        if self.per == "batch" and self.id_path:
            raise ValueError(
                "id_path is read from a `per: record` answer. Fix: use per: record to keep "
                "each record's id, or remove id_path"
            )
        if self.per == "record" and self.errors_path:
            raise ValueError(
                "errors_path is read from a `per: batch` answer. Fix: remove it (a `per: "
                "record` answer outside success_codes rejects its record)"
            )
        return self


class Operations(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    added: Operation | None = None
    """New records (and every event, in mode events)."""
    changed: Operation | None = None
    """Changed records (and cleared ones, with `delete_behavior: clear`)."""
    removed: Operation | None = None
    """Records that left the model (`delete_behavior: delete`)."""


class CheckRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    method: Literal["GET", "HEAD", "OPTIONS", "POST"] = "GET"
    url: str = ""
    """Relative to `base_url` (or absolute); no templates."""
    success_codes: Annotated[list[int], pydantic.BeforeValidator(_codes)] = list(range(200, 300))


class BearerAuth(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    type: Literal["bearer"]
    token: pydantic.SecretStr


class BasicAuth(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    type: Literal["basic"]
    username: str
    password: pydantic.SecretStr


class ApiKeyAuth(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    type: Literal["api_key"]
    header: str = "X-API-Key"
    value: pydantic.SecretStr


class OAuth2ClientCredentials(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    type: Literal["oauth2_client_credentials"]
    token_url: pydantic.AnyHttpUrl
    client_id: str
    client_secret: pydantic.SecretStr
    scope: str | None = None
    client_auth: Literal["basic", "body"] = "basic"
    """How the client authenticates to the token endpoint: HTTP Basic (RFC 6749's default) or
    `client_id`/`client_secret` in the form body."""


Auth = Annotated[
    BearerAuth | BasicAuth | ApiKeyAuth | OAuth2ClientCredentials,
    pydantic.Field(discriminator="type"),
]


class HttpConfig(HttpSettings, ConcurrencyConfig):
    """Any REST API, declared in YAML: a request template per kind of change."""

    verbatim_fields: ClassVar[frozenset[str]] = frozenset({"operations"})

    base_url: pydantic.AnyHttpUrl
    operations: Operations
    headers: dict[str, str] = {}
    """Sent on every request (not templates); secrets go in `auth`."""
    auth: Auth | None = None
    check: CheckRequest | None = None
    """`retl check`: this request must answer one of its success_codes. None: an OPTIONS of
    `base_url`, any answer below 500 (credentials not verified, except an OAuth2 token)."""
    batch_size: int = pydantic.Field(default=100, ge=1, le=MAX_BATCH)
    concurrency: int = pydantic.Field(default=1, ge=1, le=16)
    """Batches in flight at once (a `per: record` batch sends its records one after another)."""
