"""A fake Zendesk Support API (developer.zendesk.com/api-reference, Users, Organizations, Job
Statuses and Rate limits), real HTTP over loopback. Zendesk publishes no official Python SDK
(zenpy is a third party's), so the reference's rules live here, refusing what Zendesk refuses:

- basic auth `{email}/token:{api_token}`, else 401 `{"error": "Couldn't authenticate you"}`;
- `POST /api/v2/users/create_or_update_many`: a `users` array of at most 100 objects (else 400),
  each user matched by `external_id`, else `email`; answered with a queued `job_status`, which
  reads `queued` `job_polls` times and then `completed`, applied then. Its `results` come in the
  request's order: `Created` / `Updated` with the user's `id`, or `Failed` with `details` (an
  email that is not properly formatted, a new user without a name);
- `DELETE /api/v2/{users,organizations}/destroy_many?ids=|external_ids=` (at most 100; a job);
- `POST /api/v2/organizations/create_or_update` (matched by `id` or `external_id`; `name` is
  mandatory and unique: 422 `RecordInvalid` with `details.<field>[].description`);
- `GET /api/v2/users/me`, `GET /api/v2/job_statuses/{id}`;
- past `rate_limit` requests in `window_s`: 429 with `Retry-After`.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.fakes.base import FakeServer

MAX_PER_JOB = 100
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers or {}
    )


def _invalid(field: str, description: str, error: str = "InvalidValue") -> Response:
    return _json(
        422,
        {
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {field: [{"description": description, "error": error}]},
        },
    )


class FakeZendesk(FakeServer):
    url_map = Map(
        [
            Rule("/api/v2/users/me", endpoint="me", methods=["GET"]),
            Rule("/api/v2/users/create_or_update_many", endpoint="upsert_users", methods=["POST"]),
            Rule("/api/v2/<kind>/destroy_many", endpoint="destroy_many", methods=["DELETE"]),
            Rule("/api/v2/organizations/create_or_update", endpoint="upsert_org", methods=["POST"]),
            Rule("/api/v2/job_statuses/<job_id>", endpoint="job_status", methods=["GET"]),
        ]
    )

    def __init__(
        self, email: str, token: str, rate_limit: int | None = None, window_s: float = 1.0
    ) -> None:
        super().__init__(rate_limit, window_s)
        self.email, self.token = email, token
        self.users: dict[int, dict[str, Any]] = {}
        self.organizations: dict[int, dict[str, Any]] = {}
        self.deleted: dict[str, set[int]] = {"users": set(), "organizations": set()}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_polls = 1
        """Reads of a new job that answer `queued` before it completes."""
        self.refused: list[str] = []
        """Why each refused write was refused (what the contract rules caught)."""
        self._ids = itertools.count(1001)
        self._job_ids = itertools.count(1)

    def rate_limited(self, request: Request) -> Response:
        return _json(
            429,
            {"error": "TooManyRequests", "description": "Rate limit exceeded"},
            headers={"Retry-After": "1"},
        )

    def _authorized(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.email}/token:{self.token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def _refuse(self, status: int, why: str) -> Response:
        self.refused.append(why)
        return _json(status, {"error": "InvalidValue", "description": why})

    def _job(self, results: list[dict[str, Any]], apply: Any) -> Response:
        job_id = f"job{next(self._job_ids):08d}"
        job = {"id": job_id, "status": "queued", "results": None, "total": len(results)}
        self.jobs[job_id] = {
            "job": job,
            "polls": self.job_polls,
            "results": results,
            "apply": apply,
        }
        return _json(200, {"job_status": {**job, "url": f"/api/v2/job_statuses/{job_id}.json"}})

    def find_user(self, field: str, value: Any) -> int | None:
        wanted = str(value).lower()
        return next(
            (i for i, u in self.users.items() if str(u.get(field, "")).lower() == wanted), None
        )

    def user_by(self, field: str, value: Any) -> dict[str, Any] | None:
        uid = self.find_user(field, value)
        return self.users[uid] if uid is not None else None

    # -- endpoints --------------------------------------------------------------------------------
    def me(self, request: Request) -> Response:
        if not self._authorized(request):
            # Zendesk answers the anonymous user where no credentials are sent.
            if "Authorization" not in request.headers:
                return _json(
                    200, {"user": {"id": None, "name": "Anonymous user", "role": "end-user"}}
                )
            return _json(401, {"error": "Couldn't authenticate you"})
        return _json(200, {"user": {"id": 7, "email": self.email, "role": "admin", "name": "Ops"}})

    def upsert_users(self, request: Request) -> Response:
        if not self._authorized(request):
            return _json(401, {"error": "Couldn't authenticate you"})
        body = request.get_json(silent=True)
        users = body.get("users") if isinstance(body, dict) else None
        if not isinstance(users, list) or not all(isinstance(u, dict) for u in users):
            return self._refuse(400, "users must be an array of user objects")
        if len(users) > MAX_PER_JOB:
            return self._refuse(
                400, f"users accepts at most {MAX_PER_JOB} objects, got {len(users)}"
            )
        for u in users:
            if "user_fields" in u and not isinstance(u["user_fields"], dict):
                return self._refuse(400, "user_fields must be an object of custom field keys")
        results: list[dict[str, Any]] = []
        plan: list[tuple[int, dict[str, Any]]] = []
        for index, user in enumerate(users):
            uid = None
            if user.get("external_id") is not None:
                uid = self.find_user("external_id", user["external_id"])
            if uid is None and user.get("email") is not None:
                uid = self.find_user("email", user["email"])
            email = user.get("email")
            if email is not None and not _EMAIL.match(str(email)):
                results.append(
                    {
                        "index": index,
                        "status": "Failed",
                        "error": "UserCreateError" if uid is None else "UserUpdateError",
                        "details": f"Email: {email} is not properly formatted",
                    }
                )
                continue
            if uid is None and not user.get("name"):
                results.append(
                    {
                        "index": index,
                        "status": "Failed",
                        "error": "UserCreateError",
                        "details": "Name: is too short (minimum is 1 character)",
                    }
                )
                continue
            created = uid is None
            if uid is None:
                uid = next(self._ids)
            plan.append((uid, user))
            status = "Created" if created else "Updated"
            results.append({"index": index, "id": uid, "status": status, "email": email})

        def apply() -> None:
            for uid, user in plan:
                stored = self.users.setdefault(uid, {"id": uid})
                for key, value in user.items():
                    if key == "user_fields":
                        stored.setdefault("user_fields", {}).update(value)
                    else:
                        stored[key] = value

        return self._job(results, apply)

    def destroy_many(self, request: Request, kind: str) -> Response:
        if kind not in ("users", "organizations"):
            return _json(404, {"error": "InvalidEndpoint", "description": "Not found"})
        if not self._authorized(request):
            return _json(401, {"error": "Couldn't authenticate you"})
        store = self.users if kind == "users" else self.organizations
        ids, external = request.args.get("ids"), request.args.get("external_ids")
        values = (ids or external or "").split(",") if (ids or external) else []
        if not values:
            return self._refuse(400, "destroy_many takes ids or external_ids")
        if len(values) > MAX_PER_JOB:
            return self._refuse(400, f"destroy_many takes at most {MAX_PER_JOB} ids")
        results: list[dict[str, Any]] = []
        doomed: list[int] = []
        for value in values:
            if ids:
                found = int(value) if value.isdigit() and int(value) in store else None
            else:
                found = next(
                    (i for i, o in store.items() if str(o.get("external_id")) == value), None
                )
            if found is None:
                results.append(
                    {"id": value, "action": "delete", "success": False, "status": "Failed",
                     "errors": "RecordNotFound"}
                )  # fmt: skip
            else:
                doomed.append(found)
                results.append(
                    {"id": found, "action": "delete", "success": True, "status": "Deleted"}
                )

        def apply() -> None:
            for i in doomed:
                store.pop(i, None)
                self.deleted[kind].add(i)

        return self._job(results, apply)

    def upsert_org(self, request: Request) -> Response:
        if not self._authorized(request):
            return _json(401, {"error": "Couldn't authenticate you"})
        body = request.get_json(silent=True)
        org = body.get("organization") if isinstance(body, dict) else None
        if not isinstance(org, dict):
            return self._refuse(400, "organization must be an object")
        if "organization_fields" in org and not isinstance(org["organization_fields"], dict):
            return self._refuse(400, "organization_fields must be an object")
        oid = org.get("id") if org.get("id") in self.organizations else None
        if oid is None and org.get("external_id") is not None:
            wanted = str(org["external_id"]).lower()
            oid = next(
                (i for i, o in self.organizations.items()
                 if str(o.get("external_id", "")).lower() == wanted),
                None,
            )  # fmt: skip
        name = org.get("name", self.organizations.get(oid, {}).get("name") if oid else None)
        if not name:
            return _invalid("name", "Name: cannot be blank", "BlankValue")
        if any(o.get("name") == name and i != oid for i, o in self.organizations.items()):
            return _invalid("name", f"Name: {name} has already been taken", "DuplicateValue")
        created = oid is None
        if oid is None:
            oid = next(self._ids)
        stored = self.organizations.setdefault(oid, {"id": oid})
        for key, value in org.items():
            if key == "organization_fields":
                stored.setdefault("organization_fields", {}).update(value)
            else:
                stored[key] = value
        return _json(201 if created else 200, {"organization": stored})

    def job_status(self, request: Request, job_id: str) -> Response:
        if not self._authorized(request):
            return _json(401, {"error": "Couldn't authenticate you"})
        job_id = job_id.removesuffix(".json")
        entry = self.jobs.get(job_id)
        if entry is None:
            return _json(404, {"error": "RecordNotFound", "description": "Not found"})
        job = entry["job"]
        if job["status"] == "queued":
            if entry["polls"] > 0:
                entry["polls"] -= 1
            else:
                entry["apply"]()
                job.update(status="completed", results=entry["results"], progress=job["total"])
        return _json(200, {"job_status": job})
