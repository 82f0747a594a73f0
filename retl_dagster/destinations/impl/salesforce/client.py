"""Salesforce REST API: OAuth 2.0 (client credentials, or a refresh token) with a new token on
401 INVALID_SESSION_ID; sObject Collections (at most 200 records a call, `allOrNone: false`, one
result per record in order) to insert, update, upsert by external id, and delete; SOQL to find
record Ids by external id when a record's Id is not known yet."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx

from retl_dagster.destinations.base import Batch, BatchResult, Destination, Record
from retl_dagster.destinations.http import HttpClient, error_text
from retl_dagster.destinations.impl.salesforce.config import MAX_RECORDS, SalesforceConfig
from retl_dagster.destinations.impl.salesforce.exceptions import (
    SalesforceApiError,
    SalesforceLoginError,
)


def _errors(item: dict[str, Any]) -> str:
    return "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in item.get("errors", []))


def _is_transient(response: httpx.Response) -> bool:
    # Salesforce says "slow down" with 403 REQUEST_LIMIT_EXCEEDED rather than a 429.
    if response.status_code == 403 and "REQUEST_LIMIT_EXCEEDED" in response.text:
        return True
    return response.status_code == 429 or response.status_code >= 500


class SalesforceDestination(Destination[SalesforceConfig]):
    type: ClassVar[str] = "salesforce"
    config_class = SalesforceConfig
    modes = frozenset({"insert", "update", "upsert", "mirror"})
    max_batch_size = MAX_RECORDS
    requires_object = True
    requires_match = frozenset({"update", "upsert", "mirror"})
    reads_current_values = True  # SOQL by the external id

    def __init__(self, name: str, config: SalesforceConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(name, config, is_transient=_is_transient)
        self.instance_url = ""
        self.token_refreshes = 0

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

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self.instance_url:
            self._authenticate()
        base = f"{self.instance_url}/services/data/v{self.config.api_version}"
        response = self.client.request(method, base + path, **kwargs)
        if response.status_code == 401:  # the session expired: log in again, once
            self._authenticate()
            base = f"{self.instance_url}/services/data/v{self.config.api_version}"
            response = self.client.request(method, base + path, **kwargs)
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
            said += f" ({daily['Remaining']} of {daily['Max']} daily API requests left)"
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
        quoted = ", ".join(
            "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values
        )
        listed = ", ".join(dict.fromkeys([field, *also]))
        answer = self._call(
            "GET",
            "/query",
            params={"q": f"SELECT Id, {listed} FROM {object_} WHERE {field} IN ({quoted})"},
        )
        return {str(rec[field]): rec for rec in answer.get("records", [])}

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

    def deliver(self, batch: Batch) -> BatchResult:
        assert batch.object
        out = BatchResult()
        writes = [r for r in batch.records if r.op != "removed"]
        removes = [r for r in batch.records if r.op == "removed"]
        if writes and batch.fill_only and batch.mode != "insert" and batch.match_field:
            writes = self._without_filled(batch, writes)
        if writes:
            self._write(batch, writes, out)
        if removes:
            self._delete(batch, removes, out)
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

    def _write(self, batch: Batch, records: list[Record], out: BatchResult) -> None:
        assert batch.object
        body_records = []
        attrs = {"type": batch.object}
        sent: list[Record] = []
        ids = self._ids(batch, records) if batch.mode == "update" else {}
        for r in records:
            rec: dict[str, Any] = {"attributes": attrs, **r.fields}
            if batch.mode == "update":
                if r.key not in ids:
                    out.rejected[r.key] = (
                        f"NOT_FOUND: no {batch.object} with "
                        f"{batch.match_field} = {r.match_value!r}; "
                        "update mode never creates records"
                    )
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

    def _delete(self, batch: Batch, records: list[Record], out: BatchResult) -> None:
        ids = self._ids(batch, records)
        if not ids:
            return  # none of them exists any more
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

    def close(self) -> None:
        self.client.close()
