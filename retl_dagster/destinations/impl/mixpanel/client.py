"""Mixpanel ingestion API: `/engage` (profiles: `$set`, `$unset`, `$delete`; project token in
each update) and `/import?strict=1` (events, service-account basic auth, gzip, per-event
`failed_records`). At most 2000 updates or events a request; `$insert_id` dedupes events.

Event time: /import refuses (under strict=1) any `time` that is not a Unix number, so a mapped
`time` goes out as integer milliseconds since the epoch (the import reference's own examples use
ms); rows without one get the run's start time, the same on every retry and replay of the run, so
Mixpanel's dedup on (event, distinct_id, time, $insert_id) still drops a resent event."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx

from retl_dagster.common.encoding import parse_event_time
from retl_dagster.destinations.base import (
    Batch,
    BatchResult,
    Destination,
    Problem,
    Record,
    SyncShape,
)
from retl_dagster.destinations.bisect import send_isolating
from retl_dagster.destinations.http import HttpClient, error_text, probe
from retl_dagster.destinations.impl.mixpanel.config import (
    MAX_CONCURRENCY,
    MAX_PER_REQUEST,
    MixpanelConfig,
)
from retl_dagster.destinations.impl.mixpanel.exceptions import (
    MixpanelAuthError,
    MixpanelEventsNeedServiceAccount,
)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
APP_HOSTS = {
    "api.mixpanel.com": "https://mixpanel.com",
    "api-eu.mixpanel.com": "https://eu.mixpanel.com",
    "api-in.mixpanel.com": "https://in.mixpanel.com",
}
"""Ingestion host -> the application API's host of the same data residency (`/api/app/me`)."""


def unix_ms(moment: dt.datetime) -> int:
    """Integer milliseconds since the epoch (exact: no float rounding of the datetime)."""
    return (moment - EPOCH) // dt.timedelta(milliseconds=1)


def insert_id(sync: str, record: Record) -> str:
    """Stable per record content (Mixpanel keeps the first 36 characters)."""
    raw = json.dumps([sync, record.key, record.fields], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:36]


class MixpanelDestination(Destination[MixpanelConfig]):
    type: ClassVar[str] = "mixpanel"
    config_class = MixpanelConfig
    max_concurrency = MAX_CONCURRENCY  # stateless per batch; httpx and the budget are thread-safe
    modes = frozenset({"upsert", "mirror", "events"})
    max_batch_size = MAX_PER_REQUEST
    requires_object = True
    event_time_field = "time"

    def __init__(self, name: str, config: MixpanelConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(name, config, base_url=str(config.base_url).rstrip("/"))

    @classmethod
    def check_specific(cls, sync: SyncShape) -> list[Problem]:
        problems: list[Problem] = []
        if sync.mode != "events" and sync.object != "profiles":
            problems.append(
                (
                    "object",
                    f"mode {sync.mode} writes user profiles",
                    "use object: profiles, or mode: events with the event name",
                )
            )
        return problems

    def check(self, object_: str | None = None) -> str:
        """With a service account: `GET /api/app/me` (the account is accepted, and sees
        project_id). The project token authenticates only /engage writes: it is not checked,
        and without a service account only the ingestion host's reachability is."""
        base = str(self.config.base_url).rstrip("/")
        untested = "the project token cannot be checked without writing a profile, so it is not"
        user, secret = self.config.service_account_username, self.config.service_account_secret
        if not (user and secret):
            response = probe(self.name, self.config, "GET", base + "/")
            return f"Mixpanel {base} is reachable (HTTP {response.status_code}); {untested}"
        app = APP_HOSTS.get(httpx.URL(base).host, base)
        response = self.client.request(
            "GET", f"{app}/api/app/me", auth=(user, secret.get_secret_value())
        )
        if response.status_code in (401, 403):
            raise MixpanelAuthError(
                f"destination '{self.name}': Mixpanel refused service account {user} "
                f"({error_text(response)}). Fix: check service_account_username and "
                "service_account_secret (Organization settings > Service accounts)"
            )
        if not response.is_success:
            raise MixpanelAuthError(
                f"destination '{self.name}': GET {app}/api/app/me failed ({error_text(response)})"
            )
        projects = (self._body(response).get("results") or {}).get("projects")
        pid = self.config.project_id
        if pid and isinstance(projects, dict) and str(pid) not in projects:
            raise MixpanelAuthError(
                f"destination '{self.name}': service account {user} has no access to project "
                f"{pid}. Fix: add it to the project (Project settings > Service accounts), or "
                "correct project_id"
            )
        seen = f", project {pid} visible" if pid else ""
        return f"Mixpanel service account {user} accepted{seen}; {untested}"

    def deliver(self, batch: Batch) -> BatchResult:
        if batch.mode == "events":
            return self._import(batch)
        out = BatchResult()

        def reject(record: Record, reason: str) -> None:
            out.rejected[record.key] = reason

        # /engage fails a whole request for one bad update: halved until it is isolated.
        send_isolating(batch.records, self._engage, reject, self.request_budget())
        return out

    # -- profiles ---------------------------------------------------------------------------
    def _updates(self, record: Record) -> list[dict[str, Any]]:
        """Profile updates for one record (Mixpanel takes one operation per update)."""
        token = self.config.project_token.get_secret_value()
        distinct = str(record.match_value if record.match_value is not None else record.key)
        # `$ip: 0`: without it Mixpanel geolocates the profile at the IP that sent the update
        # (our server), overwriting the user's real location on every sync. `$ignore_time`: a
        # warehouse sync is not user activity, so it must not move the profile's "Last Seen".
        head = {"$token": token, "$distinct_id": distinct, "$ip": 0, "$ignore_time": True}
        if record.op == "removed":
            return [{**head, "$delete": ""}]
        sets = {k: v for k, v in record.fields.items() if v is not None}
        unsets = [k for k, v in record.fields.items() if v is None]  # a null clears
        updates = [{**head, "$set": sets}] if sets else []
        return updates + ([{**head, "$unset": unsets}] if unsets else [])

    def _engage(self, records: Sequence[Record]) -> str | None:
        """One /engage request; Mixpanel's reason when it refused the request whole."""
        updates = [u for r in records for u in self._updates(r)]
        # `ip=0` on the request too, as the official SDK sends it: the same "do not geolocate".
        response = self.client.request(
            "POST", "/engage", params={"verbose": "1", "ip": "0"}, json=updates
        )
        body = self._body(response)
        if response.is_success and body.get("status") == 1:
            return None
        return str(body.get("error") or error_text(response))

    # -- events -----------------------------------------------------------------------------
    def _import(self, batch: Batch) -> BatchResult:
        if not (self.config.service_account_username and self.config.service_account_secret):
            raise MixpanelEventsNeedServiceAccount(
                f"destination '{self.name}': events need service_account_username and "
                "service_account_secret (and project_id)"
            )
        out = BatchResult()
        unmapped_ms = unix_ms(batch.run_time)
        events: list[dict[str, Any]] = []
        by_insert_id: dict[str, str] = {}
        sent: list[Record] = []
        for r in batch.records:
            props = dict(r.fields)
            iid = insert_id(batch.sync, r)
            if "time" in props:
                try:
                    props["time"] = unix_ms(parse_event_time(props["time"]))
                except ValueError as exc:
                    out.rejected[r.key] = f"time: {exc}"  # this row only, not the batch
                    continue
            else:
                props["time"] = unmapped_ms
            props["distinct_id"] = str(r.match_value if r.match_value is not None else r.key)
            props["$insert_id"] = iid
            events.append({"event": batch.object, "properties": props})
            by_insert_id[iid] = r.key
            sent.append(r)
        if not events:
            return out
        body = gzip.compress(json.dumps(events, allow_nan=False).encode())
        response = self.client.request(
            "POST",
            "/import",
            params={
                "strict": "1",
                **({"project_id": self.config.project_id} if self.config.project_id else {}),
            },
            content=body,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            auth=(
                self.config.service_account_username,
                self.config.service_account_secret.get_secret_value(),
            ),
        )
        if response.status_code in (401, 403):
            raise MixpanelAuthError(f"destination '{self.name}': {error_text(response)}")
        answer = self._body(response)
        if response.status_code == 400 and "failed_records" in answer:
            # A partial success: everything not listed was imported.
            for failed in answer["failed_records"]:
                key = by_insert_id.get(failed.get("insert_id") or failed.get("$insert_id"))
                index = failed.get("index")
                if key is None and isinstance(index, int) and 0 <= index < len(sent):
                    key = sent[index].key
                if key is not None:
                    out.rejected[key] = f"{failed.get('field', '')}: {failed.get('message', '')}"
        elif not response.is_success:
            out.rejected.update({r.key: error_text(response) for r in sent})
        return out

    @staticmethod
    def _body(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def close(self) -> None:
        self.client.close()
