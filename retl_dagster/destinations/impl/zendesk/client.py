"""Zendesk Support's REST API (`https://{subdomain}.zendesk.com/api/v2`, basic auth
`{email}/token:{api_token}`).

Objects:
- `users` (mode upsert, match `email` or `external_id`): `POST /users/create_or_update_many`, at
  most 100 users a request, which queues a background job; its `GET /job_statuses/{id}` is polled
  until `completed`. Each entry of the job's `results` is one user, in the request's order (or at
  its `index`): `Created` / `Updated` with the user's `id`, kept as the record's destination id,
  or `Failed` with Zendesk's `details`, the record's rejection. Zendesk's own user properties
  (`name`, `phone`, `role`, `tags`, `organization_id`...) go on the user, every other field into
  `user_fields` (custom user fields, by key). `delete_behavior: delete` deletes a removed row's
  user with `DELETE /users/destroy_many?ids=` (a job; Zendesk soft-deletes, as in its UI).
- `organizations` (mode upsert, match `external_id`): Zendesk has no create-or-update-many for
  organizations, so one `POST /organizations/create_or_update` per record (it matches on
  `external_id`); a 422 rejects that record with Zendesk's validation `details`. Removed rows:
  `DELETE /organizations/destroy_many?ids=` (a job).

Limits: the plan's requests per minute (`requests_per_minute`, 200 on Team) are the
destination's shared budget; a 429 waits for `Retry-After`. 401/403 fail the run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx
from pyrate_limiter import Duration, Rate

from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.http import HttpClient, error_text
from retl_dagster.destinations.impl.zendesk.config import (
    MAX_CONCURRENCY,
    MAX_PER_JOB,
    ZendeskConfig,
)
from retl_dagster.destinations.impl.zendesk.exceptions import ZendeskAuthError, ZendeskJobError

OBJECTS: dict[str, tuple[str, ...]] = {
    "users": ("external_id", "email"),
    "organizations": ("external_id",),
}
USER_PROPERTIES = frozenset(
    {
        "alias", "custom_role_id", "default_group_id", "details", "email", "external_id",
        "locale", "locale_id", "moderator", "name", "notes", "only_private_comments",
        "organization_id", "phone", "remote_photo_url", "restricted_agent", "role",
        "shared_phone_number", "signature", "suspended", "tags", "ticket_restriction",
        "time_zone", "verified",
    }
)  # fmt: skip
"""A user's own writable properties (the Users reference's JSON format); others are custom."""
ORGANIZATION_PROPERTIES = frozenset(
    {
        "name", "details", "notes", "domain_names", "group_id", "tags", "shared_tickets",
        "shared_comments", "external_id",
    }
)  # fmt: skip
"""An organization's own writable properties; others go to `organization_fields`."""


def zendesk_errors(response: httpx.Response) -> str:
    """Zendesk's error body (`error`, `description`, `details.<field>[].description`) as one
    line, else the raw answer."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "error" not in body:
        return error_text(response)
    error = body["error"]
    if isinstance(error, dict):  # some endpoints answer {"error": {"title", "message"}}
        error = error.get("message") or error.get("title")
    parts = [str(error)]
    if body.get("description"):
        parts.append(str(body["description"]))
    details = body.get("details")
    if isinstance(details, dict):
        for items in details.values():
            for item in items if isinstance(items, list) else [items]:
                text = item.get("description") if isinstance(item, dict) else item
                if text:
                    parts.append(str(text))
    return f"HTTP {response.status_code}: " + ": ".join(parts)


def _result_text(result: dict[str, Any]) -> str:
    text = result.get("details") or result.get("errors") or result.get("error")
    return str(text or f"Zendesk answered status {result.get('status')!r}")


class ZendeskDestination(Destination[ZendeskConfig]):
    type: ClassVar[str] = "zendesk"
    config_class = ZendeskConfig
    max_concurrency = MAX_CONCURRENCY  # stateless per batch; httpx and the budget are thread-safe
    modes = frozenset({"upsert"})
    delete_behaviors = frozenset({"nothing", "delete"})
    max_batch_size = MAX_PER_JOB
    objects: ClassVar[dict[str, tuple[str, ...] | None]] = {k: None for k in OBJECTS}
    requires_object = True
    requires_match = frozenset({"upsert"})

    def __init__(self, name: str, config: ZendeskConfig) -> None:
        super().__init__(name, config)
        login = f"{config.email}/token"
        self.client = HttpClient(
            name,
            config,
            refused=lambda response: ZendeskAuthError(
                f"destination '{name}': Zendesk refused the credentials "
                f"({zendesk_errors(response)}). Fix: set email to the agent's address and "
                "api_token to an active API token (Admin Center > Apps and integrations > "
                "Zendesk API); deletes need an admin"
            ),
            base_url=config.url() + "/api/v2",
            headers={"Accept": "application/json"},
            api_window=Rate(config.requests_per_minute, Duration.MINUTE),
        )
        self.client.http.auth = httpx.BasicAuth(login, config.api_token.get_secret_value())

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
                    f"Zendesk matches {sync.object} by {' or '.join(identifiers)}",
                    f"match on {' or '.join(identifiers)}",
                )
            )
        if "name" not in sync.fields and sync.match_field != "name":
            problems.append(
                (
                    "mappings",
                    f"Zendesk requires a name to create one of its {sync.object}",
                    "map a column to name",
                )
            )
        return problems

    # -- requests -------------------------------------------------------------------------------
    def check(self, object_: str | None = None) -> str:
        """`GET /users/me`: the user the token acts as (read-only)."""
        response = self.client.request("GET", "/users/me")
        if not response.is_success:
            raise ZendeskJobError(
                f"destination '{self.name}': GET /users/me answered {zendesk_errors(response)}. "
                "Fix: check subdomain and the credentials"
            )
        user = response.json().get("user") or {}
        if user.get("id") is None:  # Zendesk answers an anonymous user to a request it can't tie
            raise ZendeskAuthError(
                f"destination '{self.name}': Zendesk did not authenticate {self.config.email} "
                "(it answered the anonymous user). Fix: check email and api_token"
            )
        who = f"{user.get('email')} ({user.get('role')})"
        return f"Zendesk {self.config.subdomain}: authenticated as {who}"

    # -- delivery -------------------------------------------------------------------------------
    def deliver(self, batch: Batch) -> BatchResult:
        out = BatchResult()
        writes = [r for r in batch.records if r.op != "removed"]
        removes = [r for r in batch.records if r.op == "removed"]
        if writes and batch.object == "users":
            self._users(batch, writes, out)
        elif writes:
            for record in writes:
                self._organization(batch, record, out)
        if removes:
            self._destroy(batch, removes, out)
        return out

    def _body(
        self, batch: Batch, record: Record, own: frozenset[str], custom: str
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in record.fields.items():
            (body if key in own else extra)[key] = value
        body[batch.match_field or "external_id"] = record.match_value
        if extra:
            body[custom] = extra
        return body

    def _users(self, batch: Batch, records: list[Record], out: BatchResult) -> None:
        for i in range(0, len(records), MAX_PER_JOB):
            chunk = records[i : i + MAX_PER_JOB]
            users = [self._body(batch, r, USER_PROPERTIES, "user_fields") for r in chunk]
            response = self.client.request(
                "POST", "/users/create_or_update_many", json={"users": users}
            )
            if response.status_code in (400, 422):
                reason = zendesk_errors(response)
                out.rejected.update({r.key: reason for r in chunk})
                continue
            results = self._job(response, "create_or_update_many")
            self._apply_results(chunk, results, out)

    def _apply_results(
        self, chunk: Sequence[Record], results: list[dict[str, Any]], out: BatchResult
    ) -> None:
        seen: set[int] = set()
        for position, result in enumerate(results):
            index = result.get("index", position)
            if not isinstance(index, int) or not 0 <= index < len(chunk):
                continue
            seen.add(index)
            record = chunk[index]
            if result.get("status") == "Failed" or result.get("success") is False:
                out.rejected[record.key] = _result_text(result)
            elif result.get("id") is not None:
                out.dest_ids[record.key] = str(result["id"])
        missing = [r for i, r in enumerate(chunk) if i not in seen]
        if missing:
            raise ZendeskJobError(
                f"destination '{self.name}': a Zendesk job reported {len(results)} results for "
                f"{len(chunk)} records; their fate is unknown, so the next run sends them again"
            )

    def _job(self, response: httpx.Response, what: str) -> list[dict[str, Any]]:
        """The `results` of the job `response` queued, once it has completed."""
        if not response.is_success:
            raise ZendeskJobError(
                f"destination '{self.name}': {what} answered {zendesk_errors(response)}; nothing "
                "in this batch was marked synced"
            )
        job = response.json().get("job_status") or {}
        deadline = time.monotonic() + self.config.job_timeout_s
        while job.get("status") in ("queued", "working"):
            if time.monotonic() > deadline:
                raise ZendeskJobError(
                    f"destination '{self.name}': Zendesk job {job.get('id')} ({what}) is still "
                    f"{job.get('status')} after {self.config.job_timeout_s:.0f} s; its records are "
                    "sent again by the next run. Fix: raise job_timeout_s if Zendesk is slow"
                )
            time.sleep(self.config.poll_interval_s)
            polled = self.client.request("GET", f"/job_statuses/{job.get('id')}")
            if not polled.is_success:
                raise ZendeskJobError(
                    f"destination '{self.name}': reading job {job.get('id')} answered "
                    f"{zendesk_errors(polled)}; the next run sends its records again"
                )
            job = polled.json().get("job_status") or {}
        if job.get("status") != "completed":
            raise ZendeskJobError(
                f"destination '{self.name}': Zendesk job {job.get('id')} ({what}) ended "
                f"{job.get('status')}: {job.get('message')}; the next run sends its records again"
            )
        results = job.get("results") or []
        return [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []

    def _organization(self, batch: Batch, record: Record, out: BatchResult) -> None:
        body = self._body(batch, record, ORGANIZATION_PROPERTIES, "organization_fields")
        response = self.client.request(
            "POST", "/organizations/create_or_update", json={"organization": body}
        )
        if response.is_success:
            out.dest_ids[record.key] = str(response.json()["organization"]["id"])
        elif 400 <= response.status_code < 500:
            out.rejected[record.key] = zendesk_errors(response)
        else:
            raise ZendeskJobError(
                f"destination '{self.name}': create_or_update answered {error_text(response)}"
            )

    def _destroy(self, batch: Batch, records: list[Record], out: BatchResult) -> None:
        """Delete by the kept Zendesk ids (else by external_id where that is the match)."""
        by_id = [r for r in records if r.dest_id]
        by_external = [r for r in records if not r.dest_id and batch.match_field == "external_id"]
        # A removed row with neither was never created in Zendesk: nothing to delete.
        for param, group in (("ids", by_id), ("external_ids", by_external)):
            for i in range(0, len(group), MAX_PER_JOB):
                chunk = group[i : i + MAX_PER_JOB]
                values = [str(r.dest_id if param == "ids" else r.match_value) for r in chunk]
                response = self.client.request(
                    "DELETE", f"/{batch.object}/destroy_many", params={param: ",".join(values)}
                )
                results = self._job(response, "destroy_many")
                by_value = {v: r for v, r in zip(values, chunk, strict=True)}
                for result in results:
                    record = by_value.get(str(result.get("id")))
                    if record is not None and (
                        result.get("status") == "Failed" or result.get("success") is False
                    ):
                        out.rejected[record.key] = _result_text(result)

    def close(self) -> None:
        self.client.close()
