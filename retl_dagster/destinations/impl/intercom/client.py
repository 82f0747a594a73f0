"""Intercom's REST API (`https://api.intercom.io`, or the EU / AU host; `Authorization: Bearer`,
`Intercom-Version: 2.11`, JSON).

Objects:
- `contacts` (mode upsert, `match.field` `external_id` or `email`): the contact is looked up with
  `POST /contacts/search` (`{"query": {"field", "operator": "=", "value"}}`), then created with
  `POST /contacts` (`role: user` unless mapped) or updated with `PUT /contacts/{id}`. The Intercom
  id is kept as the record's destination id, so the next run updates it without a search (a 404
  there, a contact deleted in Intercom, falls back to the search). Intercom's standard attributes
  (`email`, `phone`, `name`, `avatar`, `signed_up_at`, `last_seen_at`, `owner_id`,
  `unsubscribed_from_emails`, `role`, `external_id`) go top-level, every other field into
  `custom_attributes`; the `*_at` timestamps are sent as Unix seconds. `delete_behavior: delete`
  sends `DELETE /contacts/{id}` for a removed row (by the kept id, else found by the search).
- `companies` (mode upsert, `match.field` `company_id`): `POST /companies` creates or updates by
  `company_id`; standard `name`, `plan`, `size`, `website`, `industry`, `monthly_spend`,
  `remote_created_at`, the rest `custom_attributes`. Removed rows are not deleted (delete is
  refused at validate: Intercom deletes companies only by its own id, and a company's contacts
  are detached with it).

No batch endpoint: one request per record. Limits: 10,000 calls a minute per app (25,000 per
workspace), enforced in 10-second windows: 1,666 calls per 10 s is the destination's shared
budget; a 429 waits until `X-RateLimit-Reset` (epoch seconds).

Errors (`{"type": "error.list", "errors": [{"code", "message"}]}`): a 400/404/409/422 rejects its
record with `code: message`; a 401 (or 403) fails the run naming the fix.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import httpx
from pyrate_limiter import Duration, Rate

from retl_dagster.common.encoding import parse_event_time, to_json_value
from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.http import HttpClient, error_text, retry_after_header
from retl_dagster.destinations.impl.intercom.config import (
    API_VERSION,
    MAX_BATCH,
    MAX_CONCURRENCY,
    IntercomConfig,
)
from retl_dagster.destinations.impl.intercom.exceptions import IntercomAuthError, IntercomError

OBJECTS: dict[str, tuple[str, ...]] = {
    "contacts": ("external_id", "email"),
    "companies": ("company_id",),
}
CONTACT_STANDARD = frozenset(
    {
        "role", "external_id", "email", "phone", "name", "avatar", "signed_up_at",
        "last_seen_at", "owner_id", "unsubscribed_from_emails",
    }
)  # fmt: skip
"""A contact's own writable attributes (Create / Update a contact); others are custom."""
COMPANY_STANDARD = frozenset(
    {
        "company_id", "name", "plan", "size", "website", "industry", "monthly_spend",
        "remote_created_at",
    }
)  # fmt: skip
"""A company's own writable attributes (Create or update a company); others are custom."""
TIMESTAMPS = frozenset({"signed_up_at", "last_seen_at", "remote_created_at"})
"""Standard attributes Intercom takes as Unix seconds."""
RATE_WINDOW = Rate(1_666, Duration.SECOND * 10)
"""10,000 calls a minute per app, enforced over 10-second windows (Intercom's Rate limiting)."""
REJECTED_STATUSES = frozenset({400, 404, 409, 422})


def intercom_errors(response: httpx.Response) -> str:
    """Intercom's `error.list` as `code: message; ...`, else the raw answer."""
    try:
        body = response.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return error_text(response)
    parts = [
        f"{e.get('code')}: {e.get('message')}" if e.get("code") else str(e.get("message"))
        for e in errors
        if isinstance(e, dict)
    ]
    return "; ".join(parts) or error_text(response)


def rate_limit_reset(response: httpx.Response) -> float | None:
    """Seconds until `X-RateLimit-Reset` (epoch seconds), else `Retry-After`."""
    reset = response.headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    return retry_after_header(response)


def _identifier(value: Any) -> str:
    encoded = to_json_value(value)
    return encoded if isinstance(encoded, str) else str(encoded)


class _Rejected(Exception):
    """A value of the record Intercom cannot take (the record is rejected, nothing sent)."""


class IntercomDestination(Destination[IntercomConfig]):
    type: ClassVar[str] = "intercom"
    config_class = IntercomConfig
    max_concurrency = MAX_CONCURRENCY  # httpx and the shared budget are thread-safe
    modes = frozenset({"upsert"})
    delete_behaviors = frozenset({"nothing", "delete"})
    max_batch_size = MAX_BATCH
    objects: ClassVar[dict[str, tuple[str, ...] | None]] = {k: None for k in OBJECTS}
    requires_object = True
    requires_match = frozenset({"upsert"})

    def __init__(self, name: str, config: IntercomConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(
            name,
            config,
            refused=lambda response: IntercomAuthError(
                f"destination '{name}': Intercom refused the access token "
                f"({intercom_errors(response)}). Fix: set access_token to the app's token "
                "(Developer Hub > your app > Authentication), with the permissions to read and "
                "write users and companies, and region to the workspace's (us, eu or au: a token "
                "works only on its own region's host)"
            ),
            base_url=config.api_url,
            headers={
                "Authorization": f"Bearer {config.access_token.get_secret_value()}",
                "Intercom-Version": API_VERSION,
                "Accept": "application/json",
            },
            api_window=RATE_WINDOW,
            wait_hint=rate_limit_reset,
        )

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        problems: list[Problem] = []
        identifiers = OBJECTS.get(sync.object or "")
        if identifiers is None:
            return problems  # the base check names the valid objects
        if sync.match_field is not None and sync.match_field not in identifiers:
            problems.append(
                (
                    "match.field",
                    f"Intercom matches {sync.object} by {' or '.join(identifiers)}",
                    f"match on {' or '.join(identifiers)}",
                )
            )
        if sync.object == "companies" and sync.delete_behavior == "delete":
            problems.append(
                (
                    "delete_behavior",
                    "intercom does not delete companies (its API deletes them only by Intercom's "
                    "own id and detaches their contacts)",
                    "use delete_behavior: nothing",
                )
            )
        return problems

    # -- requests -------------------------------------------------------------------------------
    def _unexpected(self, what: str, response: httpx.Response) -> IntercomError:
        return IntercomError(
            f"destination '{self.name}': {what} answered {intercom_errors(response)}; the "
            "batch's unacknowledged records are sent again by the next run"
        )

    def check(self, object_: str | None = None) -> str:
        """`GET /me`: the admin the token acts as, and its workspace (read-only)."""
        response = self.client.request("GET", "/me")
        if not response.is_success:
            raise self._unexpected("GET /me", response)
        me = response.json()
        app = (me.get("app") or {}).get("name") or (me.get("app") or {}).get("id_code")
        return f"Intercom ({self.config.region}): authenticated as {me.get('email')} in {app}"

    # -- delivery -------------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult()
        for record in batch.records:
            if record.op == "removed":
                if batch.object == "contacts":
                    self._delete_contact(batch, record, out)
                continue
            try:
                if batch.object == "contacts":
                    self._contact(batch, record, out)
                else:
                    self._company(batch, record, out)
            except _Rejected as exc:
                out.rejected[record.key] = str(exc)
        return out

    def _body(self, batch: Batch, record: Record, own: frozenset[str]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        for key, value in record.fields.items():
            if key in TIMESTAMPS and value is not None:
                try:
                    value = int(parse_event_time(value).timestamp())
                except ValueError as exc:
                    raise _Rejected(f"{key}: {exc}") from None
            (body if key in own else custom)[key] = to_json_value(value)
        # Intercom takes every identifier (external_id, email, company_id) as a string.
        body[batch.match_field or "external_id"] = _identifier(record.match_value)
        if custom:
            body["custom_attributes"] = custom
        return body

    def _outcome(
        self, what: str, record: Record, response: httpx.Response, out: BatchResult
    ) -> None:
        if response.is_success:
            contact_id = response.json().get("id")
            if contact_id is None:
                raise self._unexpected(what, response)
            out.dest_ids[record.key] = str(contact_id)
        elif response.status_code in REJECTED_STATUSES:
            out.rejected[record.key] = intercom_errors(response)
        else:
            raise self._unexpected(what, response)

    def _search(self, field: str, value: Any) -> str | None:
        """The id of the contact whose `field` equals `value`, or None."""
        query = {"query": {"field": field, "operator": "=", "value": _identifier(value)}}
        response = self.client.request("POST", "/contacts/search", json=query)
        if not response.is_success:
            raise self._unexpected("POST /contacts/search", response)
        data = response.json().get("data") or []
        return str(data[0]["id"]) if data and data[0].get("id") is not None else None

    def _contact(self, batch: Batch, record: Record, out: BatchResult) -> None:
        body = self._body(batch, record, CONTACT_STANDARD)
        field = batch.match_field or "external_id"
        if record.dest_id:
            response = self.client.request("PUT", f"/contacts/{record.dest_id}", json=body)
            if response.status_code != 404:  # else deleted in Intercom since: find or create
                self._outcome("PUT /contacts", record, response, out)
                return
        contact_id = self._search(field, record.match_value)
        if contact_id is not None:
            response = self.client.request("PUT", f"/contacts/{contact_id}", json=body)
            self._outcome("PUT /contacts", record, response, out)
            return
        create = {"role": "user", **{k: v for k, v in body.items() if v is not None}}
        self._outcome(
            "POST /contacts", record, self.client.request("POST", "/contacts", json=create), out
        )

    def _delete_contact(self, batch: Batch, record: Record, out: BatchResult) -> None:
        contact_id = record.dest_id
        if contact_id is None and record.match_value is not None:
            contact_id = self._search(batch.match_field or "external_id", record.match_value)
        if contact_id is None:
            return  # never created in Intercom: nothing to delete
        response = self.client.request("DELETE", f"/contacts/{contact_id}")
        if response.is_success or response.status_code == 404:  # 404: already gone
            return
        if response.status_code in REJECTED_STATUSES:
            out.rejected[record.key] = intercom_errors(response)
        else:
            raise self._unexpected("DELETE /contacts", response)

    def _company(self, batch: Batch, record: Record, out: BatchResult) -> None:
        body = self._body(batch, record, COMPANY_STANDARD)
        response = self.client.request("POST", "/companies", json=body)
        self._outcome("POST /companies", record, response, out)

    def close(self) -> None:
        self.client.close()
