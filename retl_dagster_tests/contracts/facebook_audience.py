"""Custom Audience `/{audience_id}/users` bodies checked against Meta's own Business SDK
(`facebook-business`, `facebook_business.adobjects.customaudience.CustomAudience`):

- the request's parameters are those the SDK's `create_user` and `delete_users` declare, plus the
  `access_token` (and `appsecret_proof`) the SDK's session adds to every call;
- `payload` holds only the keys `CustomAudience.format_params` builds, its `schema` only keys of
  the SDK's `Schema.MultiKeySchema`, and each row of `data` is as long as the schema (the
  SDK's own check, in its words);
- every value of a key the SDK hashes is a SHA-256 hex digest, or "" for an unknown key.

Each name is read from the SDK, not copied here, so a new SDK release changes it with it. Where
Meta's documentation and the SDK disagree, the documentation wins; each such place says so:
- `session` is a bare `Object` to the SDK; its keys and types are the documentation's (the users
  endpoint: `session_id`, `batch_seq`, `last_batch_flag`, `estimated_num_total`);
- MADID: the SDK's multi-key path hashes it, the documentation's table says it needs no hashing
  (and the SDK's single-key MOBILE_ADVERTISER_ID path does not hash it): either is accepted;
- at most 10,000 rows a request: the documentation's limit; the SDK checks none.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from facebook_business.adobjects.customaudience import CustomAudience
from facebook_business.api import FacebookAdsApi
from facebook_business.session import FacebookSession

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MADID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_ROWS = 10_000
"""Users one request may carry (Meta: "only a maximum of 10000 at a time")."""
SESSION_KEYS: dict[str, type] = {
    "session_id": int,
    "batch_seq": int,
    "last_batch_flag": bool,
    "estimated_num_total": int,
}
"""The documentation's session object (the SDK types `session` as a bare Object)."""
DOCUMENTED_UNHASHED = frozenset({"MADID"})
"""Keys the documentation's table says need no hashing, where the SDK hashes them anyway."""


@functools.cache
def request_params() -> frozenset[str]:
    """Parameters of `POST` and `DELETE /{audience_id}/users`, as the SDK declares them, and
    the credentials its session adds to every call."""
    api = FacebookAdsApi(FacebookSession(access_token="x"))  # never sends: requests stay pending
    audience = CustomAudience("1", api=api)
    names: set[str] = set()
    for build in (audience.create_user, audience.delete_users):
        request = build(params={}, pending=True)
        names |= set(request._param_checker._type_check_info)
    return frozenset(names | {"access_token", "appsecret_proof"})


@functools.cache
def multi_keys() -> tuple[str, ...]:
    """The multi-key schema's keys, in the SDK's order."""
    schema = CustomAudience.Schema.MultiKeySchema
    return tuple(v for k, v in vars(schema).items() if not k.startswith("_"))


@functools.cache
def payload_keys() -> frozenset[str]:
    """The keys `format_params` puts in `payload` (with every option it takes given)."""
    params = CustomAudience.format_params(
        [multi_keys()[0]], [["x"]], is_raw=True, app_ids=["1"], session={"session_id": 1}
    )
    return frozenset(params["payload"])


@functools.cache
def sdk_unhashed() -> frozenset[str]:
    """Keys whose values `format_params` sends without hashing them."""
    keys = list(multi_keys())
    params = CustomAudience.format_params(keys, [["x"] * len(keys)], is_raw=True)
    row = params["payload"]["data"][0]
    return frozenset(k for k, v in zip(keys, row, strict=True) if not _SHA256.match(v))


def sdk_value(key: str, raw: str) -> str:
    """What the SDK's `format_params` sends for one raw value of `key` (normalised, hashed)."""
    return str(CustomAudience.format_params([key], [[raw]], is_raw=True)["payload"]["data"][0][0])


def unhashed_keys() -> frozenset[str]:
    return sdk_unhashed() | DOCUMENTED_UNHASHED


def _decoded(value: Any) -> Any:
    """A parameter as the SDK encodes it in a form or query string: JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def entry_problem(schema: list[str], row: list[Any]) -> str | None:
    """What is wrong with one row's values (given a valid schema and length), or None."""
    unhashed = unhashed_keys()
    if not any(v not in ("", None) for v in row):
        return "every value is empty"
    for key, value in zip(schema, row, strict=True):
        if not isinstance(value, str):
            return f"{key}: must be a string, as the SDK sends it"
        if value == "":
            continue
        if key == "MADID":
            if not (_SHA256.match(value) or _MADID.match(value)):
                return "MADID: must be a lower-case advertising id or its SHA-256 hex digest"
        elif key not in unhashed and not _SHA256.match(value):
            return f"{key}: must be a SHA-256 hex digest of the normalised value"
    return None


def shape_problems(body: Any) -> list[str]:
    """What in a `/users` body's structure the SDK (or the documentation) never sends."""
    if not isinstance(body, dict):
        return ["the body must be an object of parameters"]
    out = [f"{k}: not a parameter of the users endpoint" for k in body if k not in request_params()]
    payload = _decoded(body.get("payload"))
    if not isinstance(payload, dict):
        return [*out, "payload: must be an object"]
    out += [f"payload.{k}: not a key the SDK builds" for k in payload if k not in payload_keys()]
    schema = payload.get("schema")
    if not isinstance(schema, list) or not schema:
        out.append("payload.schema: must be a list of multi-key schema keys")
        schema = []
    else:
        out += [
            f"payload.schema: '{k}' is not a multi-key schema key"
            for k in schema
            if k not in multi_keys()
        ]
        if len(set(schema)) != len(schema):
            out.append("payload.schema: a key appears twice")
    if payload.get("is_raw") is not True:
        out.append("payload.is_raw: must be true for a multi-key schema, as the SDK requires")
    data = payload.get("data")
    if not isinstance(data, list) or not data:
        out.append("payload.data: must be a non-empty list of rows")
    else:
        if len(data) > MAX_ROWS:
            out.append(f"payload.data: {len(data)} rows, over the {MAX_ROWS} a request takes")
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(schema):
                out.append(
                    f"payload.data[{i}]: Number of keys in each list in the data should match "
                    "the number of keys specified in scheme"
                )
                break
    session = _decoded(body.get("session"))
    if session is not None:
        if not isinstance(session, dict):
            out.append("session: must be an object")
        else:
            for key, value in session.items():
                kind = SESSION_KEYS.get(key)
                if kind is None:
                    out.append(f"session.{key}: not a key of the session object")
                elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                    out.append(f"session.{key}: must be {kind.__name__}")
            out += [
                f"session.{k}: required" for k in ("session_id", "batch_seq") if k not in session
            ]
    return out


def problems(body: Any) -> list[str]:
    """Everything in a `/users` body the SDK would not send; empty when it conforms."""
    out = shape_problems(body)
    if out:
        return out
    payload = _decoded(body["payload"])
    for i, row in enumerate(payload["data"]):
        if (problem := entry_problem(payload["schema"], row)) is not None:
            out.append(f"payload.data[{i}]: {problem}")
    return out
