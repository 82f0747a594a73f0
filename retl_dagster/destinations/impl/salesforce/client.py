"""Salesforce REST API: OAuth 2.0 (client credentials, or a refresh token) with a new token on
401 INVALID_SESSION_ID; sObject Collections (at most 200 records a call, `allOrNone: false`, one
result per record in order) to insert, update, upsert by external id, and delete; SOQL to find
record Ids by external id when a record's Id is not known yet (200 values a query).

Large batches go through Bulk API 2.0 ingest jobs instead (bulk.py), chosen per batch by `api`:
`auto` sends a batch's writes (and its removals) as a job when there are more than
`bulk_threshold` (2,000, Salesforce's advice) of them. A destination sees batches, never a run's
total, so with `auto` or `bulk` the batches are `bulk_batch_size` (10,000) records, and a batch
at or under the threshold goes out in sObject Collections calls of `batch_size`.

A batch is several requests (calls of 200, or several jobs). When one fails after others were
acknowledged, what was acknowledged is kept: the records not yet delivered are rejected with the
error (retried by the next run) and the error fails the run at the next batch, or at its end, so
no record Salesforce already has is sent twice (an insert would duplicate it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx

from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    DestinationError,
    Record,
)
from retl_dagster.destinations.http import HttpClient, error_text
from retl_dagster.destinations.impl.salesforce.bulk import BulkIngest, NotAValue, Row, csv_value
from retl_dagster.destinations.impl.salesforce.config import (
    MAX_BULK_BATCH,
    MAX_RECORDS,
    SalesforceConfig,
)
from retl_dagster.destinations.impl.salesforce.exceptions import (
    SalesforceApiError,
    SalesforceLoginError,
)

BULK_OPERATIONS = {"insert": "insert", "update": "update", "upsert": "upsert", "mirror": "upsert"}
"""Sync mode -> Bulk API 2.0 operation of its writes."""


def _errors(item: dict[str, Any]) -> str:
    return "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in item.get("errors", []))


def _chunks(records: list[Record], size: int) -> list[list[Record]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def _is_transient(response: httpx.Response) -> bool:
    # Salesforce says "slow down" with 403 REQUEST_LIMIT_EXCEEDED rather than a 429.
    if response.status_code == 403 and "REQUEST_LIMIT_EXCEEDED" in response.text:
        return True
    return response.status_code == 429 or response.status_code >= 500


class SalesforceDestination(Destination[SalesforceConfig]):
    type: ClassVar[str] = "salesforce"
    config_class = SalesforceConfig
    modes = frozenset({"insert", "update", "upsert", "mirror"})
    max_batch_size = MAX_BULK_BATCH  # a batch bigger than batch_size goes in several calls
    requires_object = True
    requires_match = frozenset({"update", "upsert", "mirror"})
    reads_current_values = True  # SOQL by the external id

    def __init__(self, name: str, config: SalesforceConfig) -> None:
        super().__init__(name, config)
        self.batch_size = config.batch_size if config.api == "rest" else config.bulk_batch_size
        self.client = HttpClient(name, config, is_transient=_is_transient)
        self.instance_url = ""
        self.token_refreshes = 0
        self.bulk = BulkIngest(name, config, self._send)
        self.field_types: dict[str, str] = {}
        """Warehouse type of each mapped field (prepare): how a CSV cell writes its value."""
        self._deferred: DestinationError | None = None
        """The error that stopped a batch after part of it was acknowledged: raised by the
        next `deliver`, or on leaving the client's `with` block."""

    # -- auth -------------------------------------------------------------------------------
    def _authenticate(self) -> None:
        c = self.config
        form = {"client_id": c.client_id, "client_secret": c.client_secret.get_secret_value()}
        if c.refresh_token is not None:
            form |= {
                "grant_type": "refresh_token",
                "refresh_token": c.refresh_token.get_secret_value(),
            }
        else:
            form["grant_type"] = "client_credentials"
        response = self.client.request(
            "POST", f"{str(c.login_url).rstrip('/')}/services/oauth2/token", data=form
        )
        if not response.is_success:
            raise SalesforceLoginError(
                f"destination '{self.name}': Salesforce login failed: {error_text(response)}. "
                "Fix: check client_id, client_secret and refresh_token (and login_url: "
                "test.salesforce.com for a sandbox, or your My Domain)"
            )
        token = response.json()
        self.instance_url = token["instance_url"].rstrip("/")
        self.client.http.headers["Authorization"] = f"Bearer {token['access_token']}"
        self.token_refreshes += 1

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to `path` under `/services/data/vXX.X`, logged in (again, once, on 401)."""
        if not self.instance_url:
            self._authenticate()
        base = f"{self.instance_url}/services/data/v{self.config.api_version}"
        response = self.client.request(method, base + path, **kwargs)
        if response.status_code == 401:  # the session expired: log in again, once
            self._authenticate()
            base = f"{self.instance_url}/services/data/v{self.config.api_version}"
            response = self.client.request(method, base + path, **kwargs)
        return response

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if not response.is_success:
            raise SalesforceApiError(
                f"destination '{self.name}': {method} {path}: {error_text(response)}"
            )
        return response.json() if response.content else None

    def remote_properties(self, object_: str) -> list[str] | None:
        described = self._call("GET", f"/sobjects/{object_}/describe")
        return [f["name"] for f in described.get("fields", [])]

    def check(self, object_: str | None = None) -> str:
        """The OAuth login, then `GET /limits` (and the sync's object's `describe`): the
        credentials work and the API version answers."""
        self._authenticate()
        try:
            limits = self._call("GET", "/limits") or {}
        except SalesforceApiError as exc:
            raise SalesforceApiError(
                f"{exc}. Fix: set api_version to one the org supports (e.g. 62.0), and give "
                "the user the API Enabled permission"
            ) from None
        daily = limits.get("DailyApiRequests") or {}
        said = f"Salesforce login accepted; API v{self.config.api_version} answers"
        if "Remaining" in daily and "Max" in daily:
            said += f" ({daily['Remaining']} of {daily['Max']} daily API requests left"
            batches = limits.get("DailyBulkApiBatches") or {}
            if self.config.api != "rest" and "Remaining" in batches and "Max" in batches:
                said += f"; {batches['Remaining']} of {batches['Max']} daily Bulk API batches"
            said += ")"
        if object_:
            try:
                self._call("GET", f"/sobjects/{object_}/describe")
            except SalesforceApiError as exc:
                raise SalesforceApiError(
                    f"{exc}. Fix: set the sync's object to the sObject's API name (Contact, "
                    "My_Object__c) and give the user access to it"
                ) from None
            said += f"; {object_} describable"
        return said

    # -- delivery ---------------------------------------------------------------------------
    def _by_external_id(
        self, object_: str, field: str, values: list[Any], also: Sequence[str] = ()
    ) -> dict[str, dict[str, Any]]:
        """Records whose `field` is one of `values`, by that value: their Id, `field` and the
        fields in `also` (SOQL)."""
        listed = ", ".join(dict.fromkeys([field, *also]))
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(values), MAX_RECORDS):
            quoted = ", ".join(
                "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"
                for v in values[i : i + MAX_RECORDS]
            )
            answer = self._call(
                "GET",
                "/query",
                params={"q": f"SELECT Id, {listed} FROM {object_} WHERE {field} IN ({quoted})"},
            )
            found |= {str(rec[field]): rec for rec in answer.get("records", [])}
        return found

    def _ids_by_external_id(self, object_: str, field: str, values: list[Any]) -> dict[str, str]:
        """Salesforce Ids of records whose `field` is one of `values` (SOQL)."""
        return {v: rec["Id"] for v, rec in self._by_external_id(object_, field, values).items()}

    def _without_filled(self, batch: Batch, records: list[Record]) -> list[Record]:
        """`overwrite: false`: read the records' current values (one SOQL query by the match
        field) and leave out each fill-only field Salesforce already has a value in. A record
        Salesforce does not have yet gets every field."""
        assert batch.object and batch.match_field
        fill = sorted(batch.fill_only)
        current = self._by_external_id(
            batch.object, batch.match_field, [r.match_value for r in records], fill
        )
        kept = []
        for r in records:
            have = current.get(str(r.match_value), {})
            filled = {f for f in fill if have.get(f) not in (None, "")}
            fields = {k: v for k, v in r.fields.items() if k not in filled}
            kept.append(dataclasses.replace(r, fields=fields) if filled else r)
        return kept

    def prepare(
        self,
        object_: str | None,
        match_field: str | None,
        field_types: dict[str, str],
        match_type: str | None,
    ) -> None:
        self.field_types = dict(field_types)
        if match_field and match_type:
            self.field_types.setdefault(match_field, match_type)

    def _bulk_for(self, n: int) -> bool:
        """Whether `n` records of one operation go through a Bulk API 2.0 job."""
        api = self.config.api
        return api == "bulk" or (api == "auto" and n > self.config.bulk_threshold)

    def deliver(self, batch: Batch) -> BatchResult:
        assert batch.object
        if self._deferred is not None:
            failure, self._deferred = self._deferred, None
            raise failure
        out = BatchResult()
        done: set[str] = set()  # records whose fate Salesforce told (acknowledged or rejected)
        try:
            writes = [r for r in batch.records if r.op != "removed"]
            removes = [r for r in batch.records if r.op == "removed"]
            if writes and batch.fill_only and batch.mode != "insert" and batch.match_field:
                writes = self._without_filled(batch, writes)
            if writes and self._bulk_for(len(writes)):
                self._bulk_write(batch, writes, out, done)
            elif writes:
                for chunk in _chunks(writes, self.config.batch_size):
                    self._write(batch, chunk, out, done)
            if removes and (self.config.hard_delete or self._bulk_for(len(removes))):
                self._bulk_delete(batch, removes, out, done)
            elif removes:
                for chunk in _chunks(removes, MAX_RECORDS):
                    self._delete(batch, chunk, out, done)
        except Exception as exc:
            if all(key in out.rejected for key in done):
                raise  # nothing acknowledged yet: the run fails and resends all of it
            reason = f"not delivered: {exc}; it is sent again by the next run"
            for r in batch.records:
                if r.key not in done:
                    out.rejected[r.key] = reason
            if isinstance(exc, DestinationError):
                self._deferred = exc
        return out

    def _ids(self, batch: Batch, records: list[Record]) -> dict[str, str]:
        """Record key -> Salesforce Id, from state or looked up by the external id."""
        assert batch.object
        ids = {r.key: r.dest_id for r in records if r.dest_id}
        unknown = [r for r in records if not r.dest_id and r.match_value is not None]
        if unknown and batch.match_field:
            found = self._ids_by_external_id(
                batch.object, batch.match_field, [r.match_value for r in unknown]
            )
            ids |= {
                r.key: found[str(r.match_value)] for r in unknown if str(r.match_value) in found
            }
        return ids

    def _not_found(self, batch: Batch, record: Record) -> str:
        return (
            f"NOT_FOUND: no {batch.object} with {batch.match_field} = {record.match_value!r}; "
            "update mode never creates records"
        )

    def _write(self, batch: Batch, records: list[Record], out: BatchResult, done: set[str]) -> None:
        assert batch.object
        body_records = []
        attrs = {"type": batch.object}
        sent: list[Record] = []
        ids = self._ids(batch, records) if batch.mode == "update" else {}
        for r in records:
            rec: dict[str, Any] = {"attributes": attrs, **r.fields}
            if batch.mode == "update":
                if r.key not in ids:
                    out.rejected[r.key] = self._not_found(batch, r)
                    done.add(r.key)
                    continue
                rec["Id"] = ids[r.key]
            elif batch.mode in ("upsert", "mirror") and batch.match_field:
                rec[batch.match_field] = r.match_value
            body_records.append(rec)
            sent.append(r)
        if not sent:
            return
        payload = {"allOrNone": False, "records": body_records}
        if batch.mode == "insert":
            results = self._call("POST", "/composite/sobjects", json=payload)
        elif batch.mode == "update":
            results = self._call("PATCH", "/composite/sobjects", json=payload)
        else:
            results = self._call(
                "PATCH", f"/composite/sobjects/{batch.object}/{batch.match_field}", json=payload
            )
        for r, item in zip(sent, results, strict=True):
            if item.get("success"):
                if item.get("id"):
                    out.dest_ids[r.key] = str(item["id"])
            else:
                out.rejected[r.key] = _errors(item)
            done.add(r.key)

    def _delete(
        self, batch: Batch, records: list[Record], out: BatchResult, done: set[str]
    ) -> None:
        ids = self._ids(batch, records)
        done.update(r.key for r in records if r.key not in ids)  # none of them exists any more
        if not ids:
            return
        keys = list(ids)
        results = self._call(
            "DELETE",
            "/composite/sobjects",
            params={"ids": ",".join(ids[k] for k in keys), "allOrNone": "false"},
        )
        for key, item in zip(keys, results, strict=True):
            gone = any(e.get("statusCode") == "ENTITY_IS_DELETED" for e in item.get("errors", []))
            if not item.get("success") and not gone:
                out.rejected[key] = _errors(item)
            done.add(key)

    # -- Bulk API 2.0 -----------------------------------------------------------------------
    def _bulk_write(
        self, batch: Batch, records: list[Record], out: BatchResult, done: set[str]
    ) -> None:
        """The writes as one `insert`, `update` (by Id) or `upsert` (by the external id) job;
        several where the CSV exceeds a job's upload limit."""
        assert batch.object
        operation = BULK_OPERATIONS[batch.mode]
        upsert_by = batch.match_field if operation == "upsert" else None
        ids = self._ids(batch, records) if operation == "update" else {}
        columns = dict.fromkeys(k for r in records for k in r.fields)
        if upsert_by:
            columns.pop(upsert_by, None)
        header = ["Id", *columns] if operation == "update" else [*columns]
        if upsert_by:
            header.append(upsert_by)
        types = self.field_types
        rows: list[Row] = []
        for r in records:
            if operation == "update" and r.key not in ids:
                out.rejected[r.key] = self._not_found(batch, r)
                done.add(r.key)
                continue
            try:
                # A field missing from a record (fill-only, already filled) is an empty cell,
                # which Salesforce leaves as it is.
                cells = [
                    csv_value(r.fields[c], types.get(c)) if c in r.fields else "" for c in columns
                ]
                if upsert_by:
                    cells.append(csv_value(r.match_value, types.get(upsert_by)))
            except NotAValue as exc:
                out.rejected[r.key] = str(exc)
                done.add(r.key)
                continue
            if operation == "update":
                cells.insert(0, ids[r.key])
            rows.append(Row(r, tuple(cells)))
        if rows:
            self.bulk.run(batch.object, operation, header, rows, out, done, upsert_by)

    def _bulk_delete(
        self, batch: Batch, records: list[Record], out: BatchResult, done: set[str]
    ) -> None:
        """The removals as a `delete` job (or `hardDelete` with hard_delete), CSV of Ids."""
        assert batch.object
        ids = self._ids(batch, records)
        done.update(r.key for r in records if r.key not in ids)  # none of them exists any more
        rows = [Row(r, (ids[r.key],)) for r in records if r.key in ids]
        if rows:
            operation = "hardDelete" if self.config.hard_delete else "delete"
            self.bulk.run(batch.object, operation, ["Id"], rows, out, done)

    def close(self) -> None:
        self.client.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self._deferred is not None and exc[0] is None:
            # The run's last batch stopped part way: the run fails now, its acknowledged
            # records committed.
            failure, self._deferred = self._deferred, None
            raise failure
