"""Any REST API without code: each kind of change (added, changed, removed) becomes the request
its operation declares, rendered from the record with sandboxed Jinja2 templates (`templates`),
one request per record or one per batch; the answer says which records succeeded, their ids
(kept for later updates and deletes) and, for a batch, which records it refused."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx
import pydantic

from retl_dagster.common.encoding import dumps
from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.http import HttpClient, error_text, probe
from retl_dagster.destinations.impl.http import templates as t
from retl_dagster.destinations.impl.http.config import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    CheckRequest,
    HttpConfig,
    OAuth2ClientCredentials,
    Operation,
    Operations,
)
from retl_dagster.destinations.impl.http.exceptions import AuthRefused, CheckFailed, TokenRefused

OPERATION_OF = {"added": "added", "event": "added", "changed": "changed", "removed": "removed"}
TOKEN_MARGIN_S = 60.0
"""A cached OAuth2 token is renewed this long before it expires."""


def get_path(value: Any, path: str) -> Any:
    """`data.id` / `results.0.id` of a JSON value; None where a step is missing."""
    for step in path.split(".") if path else []:
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.lstrip("-").isdigit():
            i = int(step)
            value = value[i] if -len(value) <= i < len(value) else None
        else:
            return None
    return value


def _json(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def absolute(base_url: str, url: str) -> str:
    if url.startswith(("http://", "https://")):
        return url
    return f"{base_url.rstrip('/')}/{url.lstrip('/')}" if url else base_url


def _operations(options: Mapping[str, Any]) -> Operations | None:
    try:
        return Operations.model_validate(options.get("operations"))
    except pydantic.ValidationError:
        return None


class HttpDestination(Destination[HttpConfig]):
    type: ClassVar[str] = "http"
    config_class = HttpConfig
    modes = frozenset({"insert", "update", "upsert", "mirror", "events"})
    max_batch_size = 1000
    max_concurrency = 16  # httpx's Client, pyrate-limiter and the token cache are thread-safe

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[Problem]:
        """The operations' templates at load, before any run (secrets are not needed)."""
        problems: list[Problem] = []
        for key, model in (("operations", Operations), ("check", CheckRequest)):
            if key not in options and key == "check":
                continue
            try:
                model.model_validate(options.get(key))
            except pydantic.ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in (key, *err["loc"]))
                msg = str(err["msg"]).removeprefix("Value error, ")
                problem, _, fix = msg.partition(". Fix: ")
                problems.append(
                    (where, problem, fix or "see the README's `http` destination for its keys")
                )
        return problems

    @classmethod
    def check_declared(cls, options: Mapping[str, Any], sync: SyncShape) -> list[Problem]:
        """A sync's needs against the declared operations: an operation for each kind of change
        its mode sends, and templates reading only fields the sync maps."""
        ops = _operations(options)
        if ops is None:
            return []  # check_options names the problem
        problems: list[Problem] = []
        needed = {"added": "mode"}
        if sync.mode in ("update", "upsert", "mirror") or sync.delete_behavior == "clear":
            needed["changed"] = "mode" if sync.delete_behavior != "clear" else "delete_behavior"
        if sync.delete_behavior == "delete":
            needed["removed"] = "delete_behavior"
        for op, field in needed.items():
            if getattr(ops, op) is None:
                what = sync.mode if field == "mode" else f"{field} {sync.delete_behavior}"
                problems.append(
                    (
                        field,
                        f"it declares no `operations.{op}`, and {what} sends {op} records",
                        f"add operations.{op} (method, url, body) to the destination",
                    )
                )
        mapped = ", ".join(sync.fields)
        for op in ("added", "changed", "removed"):
            spec: Operation | None = getattr(ops, op)
            if spec is None:
                continue
            parts = [("url", spec.url), ("body", spec.body)]
            parts += [(f"headers.{h}", v) for h, v in spec.headers.items()]
            for part, source in parts:
                if source is None:
                    continue
                where = f"operations.{op}.{part}"
                for f in t.record_fields(source):
                    if f not in sync.fields:
                        problems.append(
                            (
                                "mappings",
                                f"{where} reads record.{f}, a field the sync does not map "
                                f"(it maps: {mapped})",
                                f"map a column to {f} (`- {{from: <column>, to: {f}}}`) or "
                                "correct the template",
                            )
                        )
                if sync.match_field is None and t.uses(source, "match_value"):
                    problems.append(
                        (
                            "match",
                            f"{where} uses match_value, but the sync declares no match",
                            "add `match: {column: <model column>, field: <identifier>}`",
                        )
                    )
            if (
                op != "added"
                and t.uses(spec.url, "dest_id")
                and (ops.added is None or ops.added.id_path is None)
            ):
                problems.append(
                    (
                        "destination",
                        f"operations.{op}.url uses dest_id, but operations.added has no id_path "
                        "to keep it from",
                        "set id_path on operations.added (e.g. data.id), or use key or "
                        "match_value in the URL",
                    )
                )
        return problems

    def __init__(self, name: str, config: HttpConfig) -> None:
        super().__init__(name, config)
        self.base_url = str(config.base_url)
        self.client = HttpClient(name, config, headers=config.headers)
        self._token_client: HttpClient | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()
        self.token_fetches = 0

    # -- auth ------------------------------------------------------------------------------

    def _fetch_token(self, auth: OAuth2ClientCredentials) -> str:
        # Its own client: `retl test-row` shows the destination client's exchanges, and a token
        # answer must not be among them.
        if self._token_client is None:
            self._token_client = HttpClient(self.name, self.config)
        form = {"grant_type": "client_credentials"}
        if auth.scope:
            form["scope"] = auth.scope
        headers = {"Accept": "application/json"}
        secret = auth.client_secret.get_secret_value()
        if auth.client_auth == "basic":
            pair = f"{auth.client_id}:{secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            form |= {"client_id": auth.client_id, "client_secret": secret}
        response = self._token_client.request(
            "POST", str(auth.token_url), data=form, headers=headers
        )
        answer = _json(response)
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not response.is_success or not isinstance(token, str):
            raise TokenRefused(
                f"destination '{self.name}': the token endpoint {auth.token_url} refused the "
                f"client credentials (HTTP {response.status_code}: "
                f"{str(get_path(answer, 'error') or response.text[:200])}). Fix: check "
                "auth.client_id, auth.client_secret and auth.scope"
            )
        expires_in = answer.get("expires_in") if isinstance(answer, dict) else None
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) else 3600.0
        self._token_expires = time.monotonic() + max(0.0, lifetime - TOKEN_MARGIN_S)
        self.token_fetches += 1
        return token

    def _oauth_token(self, auth: OAuth2ClientCredentials, stale: str | None = None) -> str:
        with self._token_lock:
            fresh = self._token is not None and time.monotonic() < self._token_expires
            if not fresh or (stale is not None and self._token == stale):
                self._token = self._fetch_token(auth)
            assert self._token is not None
            return self._token

    def _auth_headers(self, stale: str | None = None) -> dict[str, str]:
        auth = self.config.auth
        if isinstance(auth, BearerAuth):
            return {"Authorization": f"Bearer {auth.token.get_secret_value()}"}
        if isinstance(auth, BasicAuth):
            pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        if isinstance(auth, ApiKeyAuth):
            return {auth.header: auth.value.get_secret_value()}
        if isinstance(auth, OAuth2ClientCredentials):
            return {"Authorization": f"Bearer {self._oauth_token(auth, stale)}"}
        return {}

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: Any, has_body: bool
    ) -> httpx.Response:
        """One request with the auth's headers; a 401 with an OAuth2 token fetches a new one
        and tries once more; a 401 after that fails the run."""
        kwargs: dict[str, Any] = {}
        if has_body:
            kwargs["content"] = dumps(body)
            headers = {"Content-Type": "application/json", **headers}
        auth = self._auth_headers()
        response = self.client.request(method, url, headers={**auth, **headers}, **kwargs)
        if response.status_code == 401 and isinstance(self.config.auth, OAuth2ClientCredentials):
            stale = auth["Authorization"].removeprefix("Bearer ")
            auth = self._auth_headers(stale=stale)
            response = self.client.request(method, url, headers={**auth, **headers}, **kwargs)
        if response.status_code == 401:
            raise AuthRefused(
                f"destination '{self.name}': {method} {url} answered HTTP 401 "
                f"({response.text[:200]}): the API refused the credentials. Nothing more was "
                "sent. Fix: check the destination's auth (and that its env variables hold "
                "current secrets)"
            )
        return response

    # -- delivery --------------------------------------------------------------------------

    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult()
        groups: dict[str, list[Record]] = {}
        for r in batch.records:
            groups.setdefault(OPERATION_OF[r.op], []).append(r)
        for op, records in groups.items():
            spec: Operation | None = getattr(self.config.operations, op)
            if spec is None:
                reason = (
                    f"destination '{self.name}' declares no operations.{op}: add it, or change "
                    "the sync's mode / delete_behavior"
                )
                out.rejected |= {r.key: reason for r in records}
            elif spec.per == "record":
                for r in records:
                    self._one(batch, op, spec, r, out)
            else:
                self._batch(batch, op, spec, records, out)
        return out

    def _common(self, batch: Batch, op: str) -> dict[str, Any]:
        return {"op": op, "sync": batch.sync, "run_id": batch.run_id, "batch_id": batch.batch_id}

    @staticmethod
    def _record_vars(r: Record) -> dict[str, Any]:
        return {
            "record": r.fields,
            "key": r.key,
            "dest_id": r.dest_id,
            "match_value": r.match_value,
        }

    def _request(
        self, op: str, spec: Operation, context: dict[str, Any]
    ) -> tuple[str, dict[str, str], Any]:
        """(url, headers, body) of an operation; RenderProblem when a template cannot render."""
        where = f"operations.{op}"
        url = t.render(t.URL, f"{where}.url", spec.url, context)
        headers = {
            h: t.render(t.TEXT, f"{where}.headers.{h}", v, context) for h, v in spec.headers.items()
        }
        body = None if spec.body is None else t.render_json(spec.body, f"{where}.body", context)
        return absolute(self.base_url, url), headers, body

    def _reason(self, spec: Operation, response: httpx.Response) -> str:
        message = get_path(_json(response), spec.error_message)
        if isinstance(message, (str, int, float)) and str(message):
            return f"HTTP {response.status_code}: {message}"
        return error_text(response)

    def _one(self, batch: Batch, op: str, spec: Operation, r: Record, out: BatchResult) -> None:
        context = {**self._common(batch, op), **self._record_vars(r)}
        try:
            url, headers, body = self._request(op, spec, context)
        except t.RenderProblem as exc:
            out.rejected[r.key] = str(exc)
            return
        response = self._send(spec.method, url, headers, body, spec.body is not None)
        if response.status_code not in spec.success_codes:
            out.rejected[r.key] = self._reason(spec, response)
            return
        if spec.id_path:
            found = get_path(_json(response), spec.id_path)
            if isinstance(found, (str, int)) and not isinstance(found, bool):
                out.dest_ids[r.key] = str(found)
            else:
                out.warnings[r.key] = (
                    f"the answer has no id at {spec.id_path}, so later changes and deletes "
                    "cannot name this record by dest_id"
                )

    def _batch(
        self, batch: Batch, op: str, spec: Operation, records: Sequence[Record], out: BatchResult
    ) -> None:
        context = {**self._common(batch, op), "records": [self._record_vars(r) for r in records]}
        try:
            url, headers, body = self._request(op, spec, context)
        except t.RenderProblem as exc:
            out.rejected |= {r.key: str(exc) for r in records}
            return
        response = self._send(spec.method, url, headers, body, spec.body is not None)
        if response.status_code not in spec.success_codes:
            reason = self._reason(spec, response)
            out.rejected |= {r.key: reason for r in records}
            return
        if not spec.errors_path:
            return
        errors = get_path(_json(response), spec.errors_path)
        for item in errors if isinstance(errors, list) else []:
            ref = get_path(item, spec.error_key)
            message = get_path(item, spec.error_message)
            reason = str(message) if message not in (None, "") else dumps(item).decode()
            hit = self._named(spec, records, ref)
            if hit is None:
                # An error we cannot attribute: which record failed is unknown, so none of them
                # is marked synced (the next run sends them again).
                unknown = f"the answer lists an error naming no record of the batch: {reason}"
                for r in records:
                    out.rejected.setdefault(r.key, unknown)
            else:
                out.rejected[hit.key] = reason

    @staticmethod
    def _named(spec: Operation, records: Sequence[Record], ref: Any) -> Record | None:
        if ref is None:
            return None
        if spec.error_refers_to == "index":
            i = int(ref) if isinstance(ref, int) or str(ref).isdigit() else -1
            return records[i] if 0 <= i < len(records) else None
        for r in records:
            value = r.key if spec.error_refers_to == "key" else r.match_value
            if value is not None and str(value) == str(ref):
                return r
        return None

    # -- retl check --------------------------------------------------------------------------

    def check(self, object_: str | None = None) -> str:
        """With `check:` declared, that request with the credentials, which must answer one of
        its success codes; else an OPTIONS of base_url (any answer below 500: reachable, the
        credentials not verified). An OAuth2 token is fetched either way."""
        verified = ""
        if isinstance(self.config.auth, OAuth2ClientCredentials):
            self._oauth_token(self.config.auth)
            verified = "; the OAuth2 token endpoint accepted the client credentials"
        declared = self.config.check
        if declared is None:
            response = probe(self.name, self.config, "OPTIONS", self.base_url)
            return (
                f"{self.base_url} is reachable (OPTIONS answered HTTP {response.status_code})"
                f"{verified}; declare `check: {{method: GET, url: <a read-only path>}}` to "
                "verify the credentials too"
            )
        url = absolute(self.base_url, declared.url)
        response = probe(self.name, self.config, declared.method, url, headers=self._auth_headers())
        if response.status_code in (401, 403):
            raise AuthRefused(
                f"destination '{self.name}': {declared.method} {url} answered HTTP "
                f"{response.status_code}: the API refused the credentials. Fix: check auth"
            )
        if response.status_code not in declared.success_codes:
            raise CheckFailed(
                f"destination '{self.name}': {declared.method} {url} answered HTTP "
                f"{response.status_code}, not one of check.success_codes. Fix: check base_url "
                "and check.url"
            )
        return (
            f"{declared.method} {url} answered HTTP {response.status_code} with these "
            f"credentials{verified}"
        )

    def close(self) -> None:
        self.client.close()
        if self._token_client is not None:
            self._token_client.close()
