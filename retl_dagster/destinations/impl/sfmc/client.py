"""Salesforce Marketing Cloud (Engagement): rows of a data extension, written by its primary key.

Authentication: OAuth 2.0 client credentials of an installed package's Server-to-Server API
Integration (`POST https://{subdomain}.auth.marketingcloudapis.com/v2/token` with `client_id`,
`client_secret`, `grant_type: client_credentials` and the business unit's `account_id`). The token
answer names the tenant's REST and SOAP base URLs; the token is kept until shortly before its
`expires_in` (Marketing Cloud asks for no more than one token request per 20 minutes) and requested
again on a 401 or a SOAP `Security` fault.

The sync's `object` is the data extension's external key (`Customers`, or as Salesforce writes it,
`key:Customers`); its `match.field` is the data extension's primary-key field, whose value goes in
every row.
- upsert / mirror: `PUT /data/v1/async/dataextensions/key:{key}/rows` with `{"items": [...]}`;
  insert: `POST` to the same path (a row whose primary key exists is refused by Marketing Cloud).
  Each answers 202 with a `requestId`; the client reads `GET /data/v1/async/{id}/status` until the
  request is no longer Pending, then, where it `hasErrors`, every page of
  `GET /data/v1/async/{id}/results`: each failed row is rejected with Marketing Cloud's own
  `errorCode: message`, and only rows the request acknowledged are marked synced. A row's result
  is found by its position where the results list every row, else by its primary-key value in the
  message; where neither names the row, an upsert request is halved and resent (an upsert is
  idempotent) until the failing rows are alone; an insert request is not resent, its rows are
  rejected saying so.
- delete (`delete_behavior: delete`, mode mirror): the REST API has no delete of rows, so the
  SOAP API's `Delete` of `DataExtensionObject`s by primary key, 50 a call (the documented batch
  size of synchronous requests), one result per row.
- Before the first batch, the data extension's fields are read (SOAP `Retrieve` of
  `DataExtensionField`): an unknown external key, a mapped field the data extension lacks, or a
  `match.field` that is not its primary key fails the run before anything is sent.

Limits: 32,000 objects per asynchronous request (a hard limit; the default batch is 5,000) and at
most 4.5 MB a request (under the 5 MB Salesforce documents for data extension row payloads).
Marketing Cloud publishes no request rate; its throttling answers 429 with `Retry-After` (REST)
or HTTP 500 (SOAP), both waited out and retried; the shared budget defaults to 2,000 requests a
minute, the rate Salesforce recommends not to exceed for SOAP calls.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pyrate_limiter import Duration, Rate

from retl_dagster.destinations.base import (
    NESTED_KINDS,
    Batch,
    BatchResult,
    Destination,
    DestinationConfigError,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.bisect import RequestBudget, send_isolating
from retl_dagster.destinations.http import HttpClient, error_text
from retl_dagster.destinations.impl.sfmc import soap
from retl_dagster.destinations.impl.sfmc.config import (
    MAX_ASYNC_OBJECTS,
    MAX_SYNC_OBJECTS,
    SfmcConfig,
)
from retl_dagster.destinations.impl.sfmc.exceptions import (
    SfmcApiError,
    SfmcAuthError,
    SfmcDataExtensionError,
    SfmcJobError,
)

RATE = Rate(2_000, Duration.MINUTE)
"""The shared budget: Marketing Cloud publishes no REST rate; Salesforce advises at most 2,000 SOAP
calls a minute, and the destination's REST and SOAP calls share it."""
MAX_REQUEST_BYTES = 4_500_000
"""An asynchronous request's body stays under 5 MB, with room for the envelope."""
TOKEN_MARGIN_S = 60.0
"""A token is renewed this long before Marketing Cloud said it expires."""
RESULTS_PAGE = 50
"""Results one page holds (the endpoint's default `pageSize`)."""
MAX_RESULT_PAGES = 1_000
KEY_PREFIX = "key:"
SCOPES = "data_extensions_read and data_extensions_write"
_PARENS = re.compile(r"\(([^()]*)\)")

Row = tuple[Record, dict[str, Any]]


def data_extension_key(object_: str | None) -> str:
    """The external key a sync's `object` names (`key:Customers` or `Customers`)."""
    return (object_ or "").strip().removeprefix(KEY_PREFIX).strip()


def _is_transient(response: httpx.Response) -> bool:
    """429, and 5xx except a SOAP Security or Client fault (answered with HTTP 500 too, but no
    retry changes them; a throttled SOAP call is a 500 without one)."""
    if response.status_code == 429:
        return True
    if response.status_code < 500:
        return False
    text = response.text
    return "faultcode" not in text or not re.search(r"faultcode[^>]*>[^<]*(Security|Client)", text)


def sfmc_error(response: httpx.Response) -> str:
    """Marketing Cloud's own words: a REST error's `message` (and `errorcode`), a token error's
    `error_description`, a request's `resultMessages`; else the raw answer."""
    try:
        body = response.json()
    except ValueError:
        return error_text(response)
    if not isinstance(body, dict):
        return error_text(response)
    messages = result_messages(body)
    if messages:
        return f"HTTP {response.status_code}: " + "; ".join(messages)
    if "error" in body:
        said = str(body.get("error_description") or body["error"])
        return f"HTTP {response.status_code}: {said} ({body['error']})"
    if "message" in body:
        code = body.get("errorcode")
        return f"HTTP {response.status_code}: {body['message']}" + (
            f" (errorcode {code})" if code not in (None, "") else ""
        )
    return error_text(response)


def result_messages(body: dict[str, Any]) -> list[str]:
    """An asynchronous answer's error `resultMessages` as `resultCode: message`."""
    out = []
    for msg in body.get("resultMessages") or []:
        if not isinstance(msg, dict) or str(msg.get("resultClass", "Error")) != "Error":
            continue
        code = msg.get("resultCode")
        text = str(msg.get("message") or "")
        out.append(f"{code}: {text}" if code else text)
    return out


def _result_codes(body: dict[str, Any]) -> set[str]:
    return {
        str(m.get("resultCode")) for m in body.get("resultMessages") or [] if isinstance(m, dict)
    }


def _is_error(item: dict[str, Any]) -> bool:
    status = str(item.get("status") or "").lower()
    return status == "error" or (status not in ("ok", "success") and bool(item.get("errorCode")))


def _item_message(item: dict[str, Any]) -> str:
    code, message = item.get("errorCode"), str(item.get("message") or "").strip()
    return f"{code}: {message}" if code and message else message or str(code or "error")


def _by_size(items: list[Row], most: int) -> list[list[Row]]:
    """`items` in requests of at most `most` rows whose JSON stays under MAX_REQUEST_BYTES."""
    chunks: list[list[Row]] = []
    current: list[Row] = []
    used = 0
    for item in items:
        n = len(json.dumps(item[1], default=str)) + 1
        if current and (len(current) >= most or used + n > MAX_REQUEST_BYTES):
            chunks.append(current)
            current, used = [], 0
        current.append(item)
        used += n
    if current:
        chunks.append(current)
    return chunks


class SfmcDestination(Destination[SfmcConfig]):
    type: ClassVar[str] = "sfmc"
    config_class = SfmcConfig
    modes = frozenset({"insert", "upsert", "mirror"})
    max_batch_size = MAX_ASYNC_OBJECTS
    requires_object = True
    requires_match = frozenset({"insert", "upsert", "mirror"})

    def __init__(self, name: str, config: SfmcConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(name, config, api_window=RATE, is_transient=_is_transient)
        self.token: str | None = None
        self.expires_at = 0.0
        self.rest_url = ""
        self.soap_url = ""
        self.token_requests = 0
        self.issued: set[str] = set()
        """Every access token this client was given (scrubbed from kept exchanges)."""
        self.fields: dict[str, dict[str, Any]] | None = None
        """The data extension's fields by lower-cased name, once `prepare` read them."""
        self._checked_key = False

    # -- checks before any run ---------------------------------------------------------------
    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        problems: list[Problem] = []
        if sync.object is not None and not data_extension_key(sync.object):
            problems.append(
                (
                    "object",
                    "no data extension external key",
                    "set object to the data extension's External Key, e.g. object: Customers",
                )
            )
        problems += [
            (
                f"mappings[{i + 1}]",
                f"'{to}' would receive an object or a list, and a data extension field holds "
                "one value",
                "map a scalar column, or build the text in the model and map it with `from:`",
            )
            for i, to in enumerate(sync.fields)
            if sync.kind(i) in NESTED_KINDS
        ]
        return problems

    # -- auth ----------------------------------------------------------------------------------
    def _authenticate(self) -> None:
        c = self.config
        form: dict[str, str] = {
            "grant_type": "client_credentials",
            "client_id": c.client_id,
            "client_secret": c.client_secret.get_secret_value(),
        }
        if c.account_id:
            form["account_id"] = c.account_id
        kept = len(self.client.exchanges or [])
        response = self.client.request("POST", c.token_url, json=form)
        self.token_requests += 1
        if not response.is_success:
            raise SfmcAuthError(
                f"destination '{self.name}': Marketing Cloud refused the token request "
                f"({sfmc_error(response)}). Fix: check client_id and client_secret (Setup > "
                "Installed Packages > the API Integration component), subdomain, and that "
                f"account_id {c.account_id or '(unset)'} is a business unit the package can access"
            )
        try:
            token = response.json()
            self.token = str(token["access_token"])
            self.rest_url = str(token["rest_instance_url"]).rstrip("/")
            self.soap_url = str(token["soap_instance_url"]).rstrip("/") + "/Service.asmx"
            lifetime = float(token.get("expires_in") or 0)
        except (ValueError, KeyError, TypeError) as exc:
            raise SfmcApiError(
                f"destination '{self.name}': the token answer is not Marketing Cloud's "
                f"({type(exc).__name__}: {exc})"
            ) from None
        self.issued.add(self.token)
        self._scrub(kept)
        self.expires_at = time.monotonic() + max(0.0, lifetime - TOKEN_MARGIN_S)

    def _scrub(self, start: int) -> None:
        """Kept exchanges (`retl test-row` prints them) from `start` on, with every access
        token (in a token answer, in a SOAP header) replaced by ***: the REST calls' bearer
        header is masked where they are printed, not these."""
        kept = self.client.exchanges
        if kept is None:
            return
        for i in range(start, len(kept)):
            r = kept[i]
            sent, got = r.request.content, r.content
            for token in self.issued:
                sent = sent.replace(token.encode(), b"***")
                got = got.replace(token.encode(), b"***")
            request = httpx.Request(r.request.method, r.request.url, content=sent)
            request.headers.update(
                {k: v for k, v in r.request.headers.items() if k.lower() != "content-length"}
            )
            kept[i] = httpx.Response(r.status_code, content=got, request=request)
            kept[i].headers.update(
                {k: v for k, v in r.headers.items() if k.lower() != "content-length"}
            )

    def _ensure_token(self) -> str:
        if self.token is None or time.monotonic() >= self.expires_at:
            self._authenticate()
        assert self.token is not None
        return self.token

    def _refused(self, response: httpx.Response) -> SfmcAuthError:
        return SfmcAuthError(
            f"destination '{self.name}': Marketing Cloud refused the request "
            f"({sfmc_error(response)}). Fix: give the installed package's API Integration the "
            f"scopes {SCOPES}, and access to the business unit of the data extension"
        )

    def _rest(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A REST call with a valid token: renewed once on a 401 (an expired token)."""
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self._ensure_token()}"}
            response = self.client.request(method, self.rest_url + path, headers=headers, **kwargs)
            if response.status_code == 401 and attempt == 1:
                self.token = None
                continue
            if response.status_code in (401, 403):
                raise self._refused(response)
            return response
        raise AssertionError("unreachable")

    def _soap(self, action: str, request: Any) -> Any:
        """A SOAP call with a valid token (renewed once on a Security fault); the response
        element."""
        for attempt in (1, 2):
            token = self._ensure_token()
            kept = len(self.client.exchanges or [])
            response = self.client.request(
                "POST",
                self.soap_url,
                content=soap.envelope(action, self.soap_url, token, request),
                headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": action},
            )
            self._scrub(kept)
            try:
                el = soap.body(response.content)
            except soap.NotSoap as exc:
                raise SfmcApiError(
                    f"destination '{self.name}': SOAP {action} answered {exc}: "
                    f"{error_text(response)}"
                ) from None
            fault = soap.fault(el)
            if fault is None and response.is_success:
                return el
            if fault is not None and fault.code == "Security" and attempt == 1:
                self.token = None
                continue
            said = f"{fault.code}: {fault.message}" if fault else error_text(response)
            if fault is not None and fault.code in ("Security", "Client"):
                raise SfmcAuthError(
                    f"destination '{self.name}': Marketing Cloud's SOAP API refused {action} "
                    f"({said}). Fix: give the installed package's API Integration the scopes "
                    f"{SCOPES}"
                )
            raise SfmcApiError(f"destination '{self.name}': SOAP {action} failed: {said}")
        raise AssertionError("unreachable")

    # -- the data extension --------------------------------------------------------------------
    def _read_fields(self, key: str) -> list[dict[str, Any]]:
        el = self._soap("Retrieve", soap.retrieve_fields_request(key))
        status = soap.overall_status(el)
        if status not in ("OK", "MoreDataAvailable"):
            raise SfmcApiError(
                f"destination '{self.name}': reading the fields of data extension '{key}' "
                f"answered {soap.status_message(el)}"
            )
        fields = soap.field_results(el)
        if not fields:
            where = (
                f"business unit {self.config.account_id}"
                if self.config.account_id
                else ("the package's default business unit")
            )
            raise SfmcDataExtensionError(
                f"destination '{self.name}': Marketing Cloud has no data extension with external "
                f"key '{key}' in {where}. Fix: set the sync's object to the data extension's "
                "External Key (Contact Builder > Data Extensions > the data extension's "
                "properties), and account_id to its business unit's MID"
            )
        return fields

    def remote_properties(self, object_: str) -> list[str] | None:
        return [f["Name"] for f in self._read_fields(data_extension_key(object_))]

    def prepare(
        self,
        object_: str | None,
        match_field: str | None,
        field_types: dict[str, str],
        match_type: str | None,
    ) -> None:
        """Read the data extension's fields once: every mapped field and the match field must be
        one of them."""
        key = data_extension_key(object_)
        fields = {f["Name"].lower(): f for f in self._read_fields(key)}
        self.fields = fields
        listing = ", ".join(f["Name"] for f in fields.values())
        for name in [*field_types, *([match_field] if match_field else [])]:
            if name.lower() not in fields:
                raise DestinationConfigError(
                    self.name,
                    "match.field" if name == match_field else f"mappings (to: {name})",
                    f"data extension '{key}' has no field '{name}'",
                    f"map to one of its fields: {listing}",
                )

    def _primary_key(self) -> list[str] | None:
        if self.fields is None:
            return None
        return [f["Name"] for f in self.fields.values() if f["IsPrimaryKey"]]

    def _check_match(self, batch: Batch) -> None:
        """Once per run: the match field is the data extension's primary key (its only field
        where rows are deleted), as every upsert and delete finds its row by it."""
        if self._checked_key or batch.mode == "insert":
            return
        pk = self._primary_key()
        if pk is not None and (batch.match_field or "").lower() not in {p.lower() for p in pk}:
            key = data_extension_key(batch.object)
            raise SfmcDataExtensionError(
                f"destination '{self.name}': data extension '{key}' has primary key "
                f"{', '.join(pk) or '(none)'}, and the sync matches rows on "
                f"'{batch.match_field}'. Fix: set match.field to its primary-key field"
                + ("" if pk else " (give the data extension a primary key in Contact Builder)")
            )
        self._checked_key = True

    def check(self, object_: str | None = None) -> str:
        """The token request, then (given a sync's object) the data extension's fields."""
        self._authenticate()
        said = f"Marketing Cloud accepts the installed package's credentials ({self.rest_url})"
        if object_:
            key = data_extension_key(object_)
            fields = self._read_fields(key)
            pk = [f["Name"] for f in fields if f["IsPrimaryKey"]]
            said += (
                f"; data extension '{key}' has {len(fields)} fields, primary key "
                f"{', '.join(pk) or '(none)'}"
            )
        return said

    # -- delivery ------------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> BatchResult:
        self._check_match(batch)
        out = BatchResult()
        writes = [r for r in batch.records if r.op != "removed"]
        removes = [r for r in batch.records if r.op == "removed"]
        if writes:
            self._write(batch, writes, out)
        if removes:
            self._delete(batch, removes, out)
        return out

    def _row(self, batch: Batch, record: Record) -> dict[str, Any]:
        row = dict(record.fields)
        if batch.match_field:
            row[batch.match_field] = record.match_value
        return row

    def _rows_path(self, batch: Batch) -> str:
        key = quote(data_extension_key(batch.object), safe="")
        return f"/data/v1/async/dataextensions/key:{key}/rows"

    def _write(self, batch: Batch, records: list[Record], out: BatchResult) -> None:
        method = "POST" if batch.mode == "insert" else "PUT"
        path = self._rows_path(batch)
        budget: RequestBudget = self.request_budget()

        def send(chunk: Sequence[Row]) -> str | None:
            response = self._rest(method, path, json={"items": [row for _, row in chunk]})
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise SfmcApiError(
                    f"destination '{self.name}': {method} {path} answered {error_text(response)}"
                )
            if "CustomObjectNotFound" in _result_codes(body):
                raise SfmcDataExtensionError(
                    f"destination '{self.name}': {sfmc_error(response)}. Fix: set the sync's "
                    "object to the data extension's External Key, and account_id to its "
                    "business unit's MID"
                )
            request_id = body.get("requestId")
            if response.status_code >= 400 or result_messages(body) or not request_id:
                # Refused whole before it was queued: nothing in it was written.
                return sfmc_error(response)
            return self._settle(str(request_id), chunk, out, resendable=method == "PUT")

        def reject(item: Row, reason: str) -> None:
            out.rejected[item[0].key] = reason

        rows = [(r, self._row(batch, r)) for r in records]
        for chunk in _by_size(rows, self.batch_size):
            send_isolating(chunk, send, reject, budget)

    def _settle(
        self, request_id: str, chunk: Sequence[Row], out: BatchResult, resendable: bool
    ) -> str | None:
        """Wait for the request, then reject each row it refused. Returns a reason where its
        results do not say which rows failed and the request may be sent again in halves."""
        status = self._await(request_id)
        state = str(status.get("requestStatus") or "")
        if not status.get("hasErrors") and state.lower() != "error":
            return None
        items = self._results(request_id)
        errors = [i for i in items if _is_error(i)]
        if not errors:
            if state.lower() == "error":
                reason = "; ".join(result_messages(status)) or f"request {request_id} failed"
                for record, _ in chunk:
                    out.rejected[record.key] = reason
            return None
        failed = self._attribute(chunk, items, errors)
        if failed is not None:
            for i, reason in failed.items():
                out.rejected[chunk[i][0].key] = reason
            return None
        said = "; ".join(dict.fromkeys(_item_message(e) for e in errors))
        if resendable and len(chunk) > 1:
            return said
        reason = (
            said
            if len(chunk) == 1
            else f"{said} (Marketing Cloud reported {len(errors)} failed row(s) of this request "
            f"of {len(chunk)} without naming them, so none is marked synced)"
        )
        for record, _ in chunk:
            out.rejected[record.key] = reason
        return None

    @staticmethod
    def _attribute(
        chunk: Sequence[Row], items: list[dict[str, Any]], errors: list[dict[str, Any]]
    ) -> dict[int, str] | None:
        """Row index -> reason of each failed row, or None where a failure names no row: by
        position where the results list every row, else by the row's primary-key value in the
        message (Marketing Cloud's duplicate-key message names it)."""
        if len(items) == len(chunk):
            return {i: _item_message(item) for i, item in enumerate(items) if _is_error(item)}
        if len(chunk) == 1:
            return {0: "; ".join(dict.fromkeys(_item_message(e) for e in errors))}
        by_value: dict[str, list[int]] = {}
        for i, (record, _) in enumerate(chunk):
            by_value.setdefault(str(record.match_value), []).append(i)
        failed: dict[int, str] = {}
        for err in errors:
            message = str(err.get("message") or "")
            named = {
                i
                for value in _PARENS.findall(message) + re.findall(r"'([^']*)'", message)
                for i in by_value.get(value.strip(), [])
            }
            if len(named) != 1:
                return None
            failed[named.pop()] = _item_message(err)
        return failed

    def _await(self, request_id: str) -> dict[str, Any]:
        path = f"/data/v1/async/{quote(request_id, safe='')}/status"
        deadline = time.monotonic() + self.config.job_timeout_s
        while True:
            response = self._rest("GET", path)
            if not response.is_success:
                raise SfmcApiError(
                    f"destination '{self.name}': reading the status of request {request_id} "
                    f"answered {sfmc_error(response)}; its rows are sent again by the next run"
                )
            body = response.json()
            status = body.get("status") if isinstance(body, dict) else None
            if not isinstance(status, dict):
                raise SfmcApiError(
                    f"destination '{self.name}': the status of request {request_id} is not "
                    f"Marketing Cloud's: {error_text(response)}"
                )
            state = str(status.get("requestStatus") or "").lower()
            if state in ("complete", "completed", "error"):
                return {**status, "resultMessages": body.get("resultMessages") or []}
            if time.monotonic() > deadline:
                raise SfmcJobError(
                    f"destination '{self.name}': Marketing Cloud request {request_id} is still "
                    f"{status.get('requestStatus')} after {self.config.job_timeout_s:.0f} s; its "
                    "rows are sent again by the next run. Fix: raise job_timeout_s if Marketing "
                    "Cloud is slow to process requests"
                )
            time.sleep(self.config.poll_interval_s)

    def _results(self, request_id: str) -> list[dict[str, Any]]:
        path = f"/data/v1/async/{quote(request_id, safe='')}/results"
        items: list[dict[str, Any]] = []
        for page in range(1, MAX_RESULT_PAGES + 1):
            response = self._rest("GET", path, params={"$page": page, "$pageSize": RESULTS_PAGE})
            if not response.is_success:
                raise SfmcApiError(
                    f"destination '{self.name}': reading the results of request {request_id} "
                    f"answered {sfmc_error(response)}; its rows are sent again by the next run"
                )
            body = response.json()
            got = [i for i in body.get("items") or [] if isinstance(i, dict)]
            items += got
            if not got or len(items) >= int(body.get("count") or 0):
                break
        return items

    def _delete(self, batch: Batch, records: list[Record], out: BatchResult) -> None:
        key = data_extension_key(batch.object)
        pk = self._primary_key()
        if pk is not None and len(pk) > 1:
            reason = (
                f"data extension '{key}' has a primary key of several fields ({', '.join(pk)}), "
                f"and a removed row carries only its {batch.match_field}, so it cannot be "
                "deleted. Fix: give the data extension a one-field primary key, or use "
                "delete_behavior: nothing"
            )
            out.rejected.update(dict.fromkeys((r.key for r in records), reason))
            return
        field = (pk or [batch.match_field or ""])[0]
        for i in range(0, len(records), MAX_SYNC_OBJECTS):
            part = records[i : i + MAX_SYNC_OBJECTS]
            request = soap.delete_request(key, [[(field, str(r.match_value))] for r in part])
            results = soap.delete_results(self._soap("Delete", request))
            if len(results) != len(part):
                raise SfmcApiError(
                    f"destination '{self.name}': SOAP Delete answered {len(results)} results "
                    f"for {len(part)} rows"
                )
            for n, res in enumerate(results):
                record = part[res.ordinal if res.ordinal is not None else n]
                if res.status != "OK":
                    out.rejected[record.key] = res.message or res.status

    def close(self) -> None:
        self.client.close()
