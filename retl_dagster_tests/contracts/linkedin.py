"""Every request the LinkedIn fake receives, next to the one LinkedIn's official Python client
(`linkedin-api-client`, `linkedin_api.clients.restli.client.RestliClient`) prepares for the same
Rest.li call: the same method, URL path and query (Rest.li 2.0 encoding), the same protocol
headers (`X-RestLi-Method`, `X-RestLi-Protocol-Version`, `LinkedIn-Version`, `Authorization:
Bearer`, `Content-Type`) and the same JSON body (the `{"elements": [...]}` envelope of a
BATCH_CREATE). The client's HTTP session is swapped for a recorder, so nothing leaves the
machine.

The client is a generic Rest.li client: it has no models of a DMP segment user or a conversion
event. The elements' own rules (keys, id types, hashes, the 90-day window) therefore come from
LinkedIn's API reference ("DMP Segment Users", "Conversions API") and live in the fake
(fakes/linkedin.py), not here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from linkedin_api.clients.restli.client import RestliClient

REST_HEADERS = (
    "X-RestLi-Method",
    "X-RestLi-Protocol-Version",
    "LinkedIn-Version",
    "Authorization",
    "Content-Type",
)
"""Headers the client sets on every Rest.li call (besides User-Agent and Connection)."""

_SEGMENT_USERS = re.compile(r"^/rest/dmpSegments/(\d+)/users$")
_SEGMENT = re.compile(r"^/rest/dmpSegments/(\d+)$")
_RULE = re.compile(r"^/rest/conversions/(\d+)$")


class _Recorder(requests.Session):
    """A session that keeps the prepared request instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared: requests.PreparedRequest | None = None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.prepared = request
        response = requests.Response()
        response.status_code = 200
        response._content = b'{"elements": []}'
        response.headers["Content-Type"] = "application/json"
        response.url = request.url or ""
        return response


def sdk_request(
    method: str,
    resource_path: str,
    path_keys: dict[str, Any] | None,
    *,
    token: str,
    version: str | None,
    body: Any = None,
    query: dict[str, str] | None = None,
) -> requests.PreparedRequest:
    """The request RestliClient prepares for one call: BATCH_CREATE for a `{"elements": [...]}`
    body, CREATE for any other body, GET without one."""
    client = RestliClient()
    recorder = _Recorder()
    client.session = recorder
    common: dict[str, Any] = {
        "resource_path": resource_path,
        "path_keys": path_keys,
        "access_token": token,
        "version_string": version,
        "query_params": query,
    }
    try:
        if method == "GET":
            client.get(**common)
        elif isinstance(body, dict) and set(body) == {"elements"}:
            client.batch_create(entities=body["elements"], **common)
        else:
            client.create(entity=body, **common)
    except Exception:  # the recorder's answer need not please the response formatters
        pass
    assert recorder.prepared is not None, "the client prepared no request"
    return recorder.prepared


def _call(method: str, path: str) -> tuple[str, dict[str, Any] | None] | None:
    """The Rest.li resource (path template and keys) of a request the fake serves."""
    if method == "POST" and (m := _SEGMENT_USERS.match(path)):
        return "/dmpSegments/{id}/users", {"id": int(m[1])}
    if method == "POST" and path == "/rest/conversionEvents":
        return "/conversionEvents", None
    if method == "GET" and (m := _SEGMENT.match(path)):
        return "/dmpSegments/{id}", {"id": int(m[1])}
    if method == "GET" and (m := _RULE.match(path)):
        return "/conversions/{id}", {"id": int(m[1])}
    return None


def problems(
    method: str, path: str, query: str, headers: Mapping[str, str], body: Any
) -> list[str]:
    """How a request differs from the one the official client prepares for the same call (path
    as the fake sees it, `/rest/...`; `query` the raw query string); empty when it is the same."""
    call = _call(method, path)
    if call is None:
        return [f"{method} {path}: not a call this contract knows"]
    lower = {k.lower(): v for k, v in headers.items()}
    auth = lower.get("authorization", "")
    token = auth.removeprefix("Bearer ")
    params = dict(parse_qsl(query, keep_blank_values=True)) or None
    sdk = sdk_request(
        method,
        *call,
        token=token,
        version=lower.get("linkedin-version"),
        body=body,
        query=params,
    )
    out: list[str] = []
    if sdk.method != method:
        out.append(f"method {method}, the client's {sdk.method}")
    url = urlsplit(sdk.url or "")
    if url.path != path:
        out.append(f"path {path}, the client's {url.path}")
    if url.query != query:
        out.append(f"query '{query}', the client's '{url.query}'")
    for name in REST_HEADERS:
        ours, theirs = lower.get(name.lower()), sdk.headers.get(name)
        if name == "Authorization":  # never shown: it carries the token
            if ours != theirs:
                out.append("header Authorization is not `Bearer <access token>`")
        elif ours != theirs:
            out.append(f"header {name}: {ours!r}, the client's {theirs!r}")
    if method != "GET":
        sent = sdk.body.decode() if isinstance(sdk.body, bytes) else str(sdk.body or "null")
        if json.loads(sent) != body:
            out.append("the body is not the one the client sends for the same elements")
    return out
