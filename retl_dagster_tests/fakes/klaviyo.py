"""A fake Klaviyo REST API (developers.klaviyo.com/en/reference, revision 2026-10-15), real HTTP
over loopback, refusing what Klaviyo refuses:

- every request needs `Authorization: Klaviyo-API-Key <private key>` (else 401, JSON:API
  `errors[]` with `not_authenticated` / `authentication_failed`) and a `revision` header (else
  400);
- every write body is checked against the `klaviyo-api` SDK's models (contracts/klaviyo.py) and
  answered with a JSON:API 400 when it does not fit; `contract_errors` keeps what was refused;
- Bulk Import Profiles: at most 10,000 profiles and 5 MB (413 past it); the job is `queued` for
  `job_polls` reads, then `complete`, and only then applied (an upsert by email, phone_number or
  external_id); a profile with an invalid email or phone number is left out and listed under
  `import-errors` (`code`, `title`, `detail`, `source.pointer`, `original_payload`), paged by
  `page[size]` (at most 100) and `links.next`;
- Bulk Create Events: at most 1,000 events; a `unique_id` repeated for the same profile and metric
  within a request fails it whole; a resent event (same profile, metric and unique_id as a stored
  one) is dropped, as Klaviyo dedupes;
- list membership add / remove (1,000 profiles a call, 404 for an unknown list), `GET
  /api/profiles` with `filter=any(<identifier>,[...])` or `equals(...)`, `GET /api/accounts`,
  `GET /api/lists/{id}`;
- past `rate_limit` requests in `window_s`: 429 with `Retry-After` and a `throttled` error.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts.klaviyo import ContractError, check_request
from retl_dagster_tests.fakes.base import FakeServer

MAX_BODY = 5 * 1024 * 1024
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_FILTER = re.compile(r"^(any|equals)\((email|phone_number|external_id|id),(.*)\)$")
IDENTIFIERS = ("email", "phone_number", "external_id")


def _error(
    status: int, code: str, title: str, detail: str, pointer: str | None = None
) -> dict[str, Any]:
    err: dict[str, Any] = {
        "id": f"err-{status}-{code}",
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
    }
    if pointer is not None:
        err["source"] = {"pointer": pointer}
    return err


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body),
        status=status,
        content_type="application/vnd.api+json",
        headers=headers or {},
    )


def _errors(
    status: int, *errors: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return _json(status, {"errors": list(errors)}, headers)


class FakeKlaviyo(FakeServer):
    url_map = Map(
        [
            Rule("/api/accounts", endpoint="accounts", methods=["GET"]),
            Rule("/api/profiles", endpoint="get_profiles", methods=["GET"]),
            Rule("/api/lists/<list_id>", endpoint="get_list", methods=["GET"]),
            Rule(
                "/api/lists/<list_id>/relationships/profiles",
                endpoint="list_members",
                methods=["POST", "DELETE"],
            ),
            Rule("/api/profile-bulk-import-jobs", endpoint="create_import", methods=["POST"]),
            Rule("/api/profile-bulk-import-jobs/<job_id>", endpoint="get_import", methods=["GET"]),
            Rule(
                "/api/profile-bulk-import-jobs/<job_id>/import-errors",
                endpoint="import_errors",
                methods=["GET"],
            ),
            Rule("/api/event-bulk-create-jobs", endpoint="create_events", methods=["POST"]),
        ]
    )

    def __init__(self, private_key: str, rate_limit: int | None = None, window_s: float = 1.0):
        super().__init__(rate_limit, window_s)
        self.private_key = private_key
        self.account_id = "XyZ123"
        self.profiles: dict[str, dict[str, Any]] = {}
        """Profile id -> its attributes (identifiers, standard attributes, `properties`)."""
        self.lists: dict[str, set[str]] = {}
        """List id -> profile ids on it (create a list by adding its id)."""
        self.events: list[dict[str, Any]] = []
        """Stored events: {"profile_id", "metric", "time", "unique_id", "value", "properties"}."""
        self.dropped_duplicates = 0
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_polls = 1
        """Reads of a new import job that answer `queued` before it completes."""
        self.contract_errors: list[str] = []
        self._ids = itertools.count(1)

    # -- the shared checks ------------------------------------------------------------------------
    def rate_limited(self, request: Request) -> Response:
        return _errors(
            429,
            _error(429, "throttled", "Request was throttled.", "Expected available in 1 second."),
            headers={"Retry-After": "1"},
        )

    def _guard(self, request: Request) -> Response | None:
        auth = request.headers.get("Authorization")
        if not auth:
            return _errors(
                401,
                _error(
                    401,
                    "not_authenticated",
                    "Authentication credentials were not provided.",
                    "Missing `Authorization` header.",
                ),
            )
        if auth != f"Klaviyo-API-Key {self.private_key}":
            return _errors(
                401,
                _error(
                    401,
                    "authentication_failed",
                    "Incorrect authentication credentials.",
                    "Incorrect authentication credentials.",
                ),
            )
        if not request.headers.get("revision"):
            return _errors(
                400,
                _error(400, "invalid", "Invalid input.", "A `revision` header is required."),
            )
        return None

    def _body(self, request: Request, endpoint: str) -> tuple[Any, Response | None]:
        if (bad := self._guard(request)) is not None:
            return None, bad
        if len(request.get_data()) > MAX_BODY:
            return None, _errors(
                413, _error(413, "payload_too_large", "Payload too large.", "At most 5 MB.")
            )
        body = request.get_json(silent=True)
        try:
            check_request(endpoint, body)
        except ContractError as exc:
            self.contract_errors.append(f"{endpoint}: {exc}")
            return None, _errors(
                400, *(_error(400, "invalid", "Invalid input.", p) for p in exc.problems)
            )
        return body, None

    def _new_id(self) -> str:
        return f"01KLAV{next(self._ids):020d}"

    def find(self, field: str, value: Any) -> str | None:
        """The id of the profile whose `field` is `value`."""
        if field == "id":
            return str(value) if value in self.profiles else None
        return next((pid for pid, p in self.profiles.items() if p.get(field) == value), None)

    def profile_by(self, field: str, value: Any) -> dict[str, Any] | None:
        pid = self.find(field, value)
        return self.profiles[pid] if pid else None

    def _upsert(self, attributes: dict[str, Any]) -> str:
        pid = next(
            (p for k in IDENTIFIERS if attributes.get(k) and (p := self.find(k, attributes[k]))),
            None,
        )
        if pid is None:
            pid = self._new_id()
            self.profiles[pid] = {}
        profile = self.profiles[pid]
        for key, value in attributes.items():
            if key == "properties":
                profile.setdefault("properties", {}).update(value)
            else:
                profile[key] = value
        return pid

    # -- endpoints --------------------------------------------------------------------------------
    def accounts(self, request: Request) -> Response:
        if (bad := self._guard(request)) is not None:
            return bad
        account = {
            "type": "account",
            "id": self.account_id,
            "attributes": {"contact_information": {"organization_name": "Fake Co"}},
        }
        return _json(200, {"data": [account]})

    def get_list(self, request: Request, list_id: str) -> Response:
        if (bad := self._guard(request)) is not None:
            return bad
        if list_id not in self.lists:
            return _errors(404, _error(404, "not_found", "Not found.", f"List {list_id} not found"))
        return _json(
            200, {"data": {"type": "list", "id": list_id, "attributes": {"name": list_id}}}
        )

    def get_profiles(self, request: Request) -> Response:
        if (bad := self._guard(request)) is not None:
            return bad
        size = int(request.args.get("page[size]", "20"))
        m = _FILTER.match(request.args.get("filter", ""))
        if not 1 <= size <= 100 or m is None:
            return _errors(
                400, _error(400, "invalid", "Invalid input.", "Invalid filter or page[size]")
            )
        op, field, raw = m.groups()
        values = json.loads(raw) if op == "any" else [json.loads(raw)]
        ids = [pid for v in values if (pid := self.find(field, v)) is not None][:size]
        data = [
            {"type": "profile", "id": pid, "attributes": {field: self.profiles[pid].get(field)}}
            for pid in ids
        ]
        return _json(200, {"data": data, "links": {"next": None}})

    def list_members(self, request: Request, list_id: str) -> Response:
        body, bad = self._body(
            request, f"{request.method} /api/lists/{{id}}/relationships/profiles"
        )
        if bad is not None:
            return bad
        if list_id not in self.lists:
            return _errors(404, _error(404, "not_found", "Not found.", f"List {list_id} not found"))
        ids = {p["id"] for p in body["data"]}
        if request.method == "POST":
            self.lists[list_id] |= {i for i in ids if i in self.profiles}
        else:
            self.lists[list_id] -= ids
        return Response(status=204)

    def create_import(self, request: Request) -> Response:
        body, bad = self._body(request, "POST /api/profile-bulk-import-jobs")
        if bad is not None:
            return bad
        job = body["data"]
        lists = [x["id"] for x in (job.get("relationships") or {}).get("lists", {}).get("data", [])]
        unknown = [x for x in lists if x not in self.lists]
        if unknown:
            return _errors(
                404, _error(404, "not_found", "Not found.", f"List {unknown[0]} not found")
            )
        job_id = f"job-{next(self._ids)}"
        profiles = job["attributes"]["profiles"]["data"]
        self.jobs[job_id] = {
            "profiles": profiles,
            "lists": lists,
            "polls": 0,
            "status": "queued",
            "errors": [],
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        return _json(202, {"data": self._job_resource(job_id)})

    def _job_resource(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        total = len(job["profiles"])
        done = job["status"] == "complete"
        return {
            "type": "profile-bulk-import-job",
            "id": job_id,
            "attributes": {
                "status": job["status"],
                "created_at": job["created_at"],
                "total_count": total,
                "completed_count": total - len(job["errors"]) if done else 0,
                "failed_count": len(job["errors"]) if done else 0,
                "completed_at": dt.datetime.now(dt.UTC).isoformat() if done else None,
            },
        }

    def _run_job(self, job: dict[str, Any]) -> None:
        pointer = "/data/attributes/profiles/data"
        for i, profile in enumerate(job["profiles"]):
            attrs = profile["attributes"]
            problem = None
            if attrs.get("email") is not None and not _EMAIL.match(attrs["email"]):
                problem = ("email", f"Invalid email address: '{attrs['email']}'")
            elif attrs.get("phone_number") is not None and not _E164.match(attrs["phone_number"]):
                problem = ("phone_number", "Invalid phone number format (expected E.164).")
            if problem is not None:
                job["errors"].append(
                    {
                        "type": "import-error",
                        "id": f"ie-{len(job['errors'])}",
                        "attributes": {
                            "code": "invalid",
                            "title": "Invalid input.",
                            "detail": problem[1],
                            "source": {"pointer": f"{pointer}/{i}/attributes/{problem[0]}"},
                            "original_payload": attrs,
                        },
                    }
                )
                continue
            pid = self._upsert(attrs)
            for list_id in job["lists"]:
                self.lists[list_id].add(pid)
        job["status"] = "complete"

    def get_import(self, request: Request, job_id: str) -> Response:
        if (bad := self._guard(request)) is not None:
            return bad
        job = self.jobs.get(job_id)
        if job is None:
            return _errors(404, _error(404, "not_found", "Not found.", f"Job {job_id} not found"))
        job["polls"] += 1
        if job["status"] != "complete" and job["polls"] > self.job_polls:
            self._run_job(job)
        elif job["status"] == "queued":
            job["status"] = "processing"
        return _json(200, {"data": self._job_resource(job_id)})

    def import_errors(self, request: Request, job_id: str) -> Response:
        if (bad := self._guard(request)) is not None:
            return bad
        job = self.jobs.get(job_id)
        if job is None:
            return _errors(404, _error(404, "not_found", "Not found.", f"Job {job_id} not found"))
        size = int(request.args.get("page[size]", "20"))
        if not 1 <= size <= 100:
            return _errors(400, _error(400, "invalid", "Invalid input.", "page[size] is 1 to 100"))
        start = int(request.args.get("page[cursor]", "0"))
        page = job["errors"][start : start + size]
        more = start + size < len(job["errors"])
        base = request.base_url
        nxt = f"{base}?page[size]={size}&page[cursor]={start + size}" if more else None
        return _json(200, {"data": page, "links": {"self": request.url, "next": nxt}})

    def create_events(self, request: Request) -> Response:
        body, bad = self._body(request, "POST /api/event-bulk-create-jobs")
        if bad is not None:
            return bad
        incoming: list[tuple[dict[str, Any], dict[str, Any]]] = []
        seen: set[tuple[str, str, str]] = set()
        for entry in body["data"]["attributes"]["events-bulk-create"]["data"]:
            profile = entry["attributes"]["profile"]["data"]["attributes"]
            ident = next((f"{k}={profile[k]}" for k in IDENTIFIERS if profile.get(k)), None)
            if ident is None:
                return _errors(
                    400,
                    _error(400, "invalid", "Invalid input.", "A profile identifier is required."),
                )
            for event in entry["attributes"]["events"]["data"]:
                attrs = event["attributes"]
                name = attrs["metric"]["data"]["attributes"]["name"]
                key = (ident, name, str(attrs.get("unique_id")))
                if attrs.get("unique_id") is not None and key in seen:
                    return _errors(
                        400,
                        _error(
                            400,
                            "invalid",
                            "Invalid input.",
                            f"unique_id '{attrs['unique_id']}' is repeated for the same profile "
                            "and metric",
                        ),
                    )
                seen.add(key)
                incoming.append((profile, attrs))
        for profile, attrs in incoming:
            pid = self._upsert(profile)
            name = attrs["metric"]["data"]["attributes"]["name"]
            stored = {
                "profile_id": pid,
                "metric": name,
                "time": attrs.get("time"),
                "unique_id": attrs.get("unique_id"),
                "value": attrs.get("value"),
                "value_currency": attrs.get("value_currency"),
                "properties": attrs["properties"],
            }
            if any(
                e["profile_id"] == pid
                and e["metric"] == name
                and e["unique_id"] == stored["unique_id"]
                for e in self.events
            ):
                self.dropped_duplicates += 1
                continue
            self.events.append(stored)
        return Response(status=202)
