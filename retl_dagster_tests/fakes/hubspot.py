"""A fake HubSpot CRM v3 objects API, from developers.hubspot.com (batch create / update /
upsert / read / archive):

- private-app auth: `Authorization: Bearer <token>`, else 401 INVALID_AUTHENTICATION;
- at most 100 inputs a batch, else 400 VALIDATION_ERROR;
- a property that does not exist, or an invalid email, fails the WHOLE batch with 400
  VALIDATION_ERROR (HubSpot validates the batch before writing anything);
- update of an unknown id: 207 multi-status, the other inputs written, `errors` with
  category OBJECT_NOT_FOUND and the ids in `context`;
- create of an existing email: 409 CONFLICT "Contact already exists. Existing ID: N";
- too many requests in the rolling window: 429 RATE_LIMIT (TEN_SECONDLY_ROLLING);
- every batch body is checked against HubSpot's own request model for its endpoint
  (contracts/hubspot.py: every property value a string, no unknown keys, required fields
  present): a body that fails gets 400 VALIDATION_ERROR, as HubSpot answers invalid input.
"""

from __future__ import annotations

import json
import re
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts.hubspot import ContractError, check_batch_request
from retl_dagster_tests.fakes.base import FakeServer

PROPERTIES = {
    "contacts": {
        "email",
        "firstname",
        "lastname",
        "phone",
        "company",
        "lifecyclestage",
        "plan",
        "ltv",
        "city",
        "newsletter",
        "signup_date",
        "last_seen",
    },
    "companies": {"name", "domain", "industry", "numberofemployees", "annualrevenue"},
    "deals": {"dealname", "amount", "dealstage", "pipeline", "closedate"},
}
UNIQUE = {"contacts": "email", "companies": "domain"}
MAX_INPUTS = 100
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _error(status: int, category: str, message: str, **extra: Any) -> Response:
    return _json(
        status,
        {
            "status": "error",
            "message": message,
            "category": category,
            "correlationId": "fake-correlation-id",
            **extra,
        },
    )


class FakeHubSpot(FakeServer):
    url_map = Map(
        [
            Rule(
                "/crm/v3/objects/<object_type>/batch/<action>", endpoint="batch", methods=["POST"]
            ),
            Rule("/crm/v3/properties/<object_type>", endpoint="properties", methods=["GET"]),
            Rule("/crm/v3/objects/<object_type>", endpoint="list_objects", methods=["GET"]),
        ]
    )

    def __init__(self, token: str, rate_limit: int | None = None, window_s: float = 1.0) -> None:
        super().__init__(rate_limit, window_s)
        self.token = token
        self.objects: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in PROPERTIES}
        self.archived: dict[str, set[str]] = {t: set() for t in PROPERTIES}
        self._next_id = 1000
        self.contract_errors: list[str] = []
        """Every request body HubSpot's models refused (tests assert it stays empty)."""

    def rate_limited(self, request: Request) -> Response:
        return _json(
            429,
            {
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": "fake",
                "policyName": "TEN_SECONDLY_ROLLING",
            },
        )

    # -- helpers ----------------------------------------------------------------------------
    def find(self, object_type: str, prop: str, value: Any) -> str | None:
        if prop in ("hs_object_id", "id"):
            return str(value) if str(value) in self.objects[object_type] else None
        for oid, props in self.objects[object_type].items():
            if props.get(prop) == value:
                return oid
        return None

    def _validate(self, object_type: str, inputs: list[dict[str, Any]]) -> Response | None:
        problems = []
        for item in inputs:
            for name, value in (item.get("properties") or {}).items():
                if name not in PROPERTIES[object_type]:
                    problems.append(
                        {
                            "isValid": False,
                            "message": f'Property "{name}" does not exist',
                            "error": "PROPERTY_DOESNT_EXIST",
                            "name": name,
                        }
                    )
                elif name == "email" and value not in ("", None) and not _EMAIL.match(str(value)):
                    problems.append(
                        {
                            "isValid": False,
                            "message": f"Email address {value} is invalid",
                            "error": "INVALID_EMAIL",
                            "name": name,
                        }
                    )
        if problems:
            return _error(
                400, "VALIDATION_ERROR", f"Property values were not valid: {json.dumps(problems)}"
            )
        return None

    def _write(self, object_type: str, oid: str, props: dict[str, Any]) -> dict[str, Any]:
        stored = self.objects[object_type].setdefault(oid, {})
        for k, v in props.items():
            stored[k] = "" if v is None else v  # HubSpot stores a cleared property as ""
        return {"id": oid, "properties": dict(stored), "archived": False}

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def properties(self, request: Request, object_type: str) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
        if object_type not in PROPERTIES:
            return _error(
                400, "OBJECT_TYPE_NOT_FOUND", f"Unable to infer object type from: {object_type}"
            )
        return _json(
            200,
            {
                "results": [
                    {"name": n, "label": n.title(), "type": "string"}
                    for n in sorted(PROPERTIES[object_type])
                ]
            },
        )

    def list_objects(self, request: Request, object_type: str) -> Response:
        """`GET /crm/v3/objects/<type>?limit=N`: a page of the type's (unarchived) records."""
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
        if object_type not in PROPERTIES:
            return _error(
                400, "OBJECT_TYPE_NOT_FOUND", f"Unable to infer object type from: {object_type}"
            )
        limit = int(request.args.get("limit", 10))
        live = [
            (oid, props)
            for oid, props in self.objects[object_type].items()
            if oid not in self.archived[object_type]
        ]
        return _json(200, {"results": [{"id": oid, "properties": p} for oid, p in live[:limit]]})

    # -- endpoint ---------------------------------------------------------------------------
    def batch(self, request: Request, object_type: str, action: str) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. "
                "This API supports OAuth 2.0 authentication and you can find more "
                "details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            )
        if object_type not in PROPERTIES:
            return _error(
                400, "OBJECT_TYPE_NOT_FOUND", f"Unable to infer object type from: {object_type}"
            )
        body = request.get_json(silent=True)
        try:
            check_batch_request(object_type, action, body)
        except ContractError as exc:
            self.contract_errors.append(str(exc))
            return _error(400, "VALIDATION_ERROR", f"Invalid input JSON: {exc}")
        assert isinstance(body, dict)  # the contract check refuses anything else
        inputs = body.get("inputs", [])
        if len(inputs) > MAX_INPUTS:
            return _error(
                400, "VALIDATION_ERROR", f"Batch input limit is {MAX_INPUTS}; got {len(inputs)}"
            )
        if action in ("create", "update", "upsert"):
            bad = self._validate(object_type, inputs)
            if bad is not None:
                return bad
        return getattr(self, f"_{action}")(object_type, inputs, body)

    def _create(self, t: str, inputs: list[dict[str, Any]], body: Any) -> Response:
        unique = UNIQUE.get(t)
        for item in inputs:
            value = (item.get("properties") or {}).get(unique) if unique else None
            existing = self.find(t, unique, value) if unique and value else None
            if existing:
                return _error(409, "CONFLICT", f"Contact already exists. Existing ID: {existing}")
        results = []
        for item in inputs:
            result = self._write(t, self._new_id(), item.get("properties") or {})
            results.append({**result, "objectWriteTraceId": item.get("objectWriteTraceId")})
        return _json(201, {"status": "COMPLETE", "results": results})

    def _update(self, t: str, inputs: list[dict[str, Any]], body: Any) -> Response:
        results, missing = [], []
        for item in inputs:
            oid = self.find(t, item.get("idProperty") or "hs_object_id", item["id"])
            if oid is None:
                missing.append(str(item["id"]))
                continue
            result = self._write(t, oid, item.get("properties") or {})
            results.append({**result, "objectWriteTraceId": item.get("objectWriteTraceId")})
        if not missing:
            return _json(200, {"status": "COMPLETE", "results": results})
        errors = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": f"Could not get some {t[:-1].upper()} objects, they may be deleted "
                "or not exist. Check that ids are valid.",
                "context": {"ids": missing},
            }
        ]
        return _json(
            207,
            {"status": "COMPLETE", "results": results, "errors": errors, "numErrors": len(missing)},
        )

    def _upsert(self, t: str, inputs: list[dict[str, Any]], body: Any) -> Response:
        results = []
        for item in inputs:
            prop = item.get("idProperty")
            if not prop:
                return _error(400, "VALIDATION_ERROR", "idProperty is required for upsert")
            oid = self.find(t, prop, item["id"])
            new = oid is None
            oid = oid or self._new_id()
            props = {**(item.get("properties") or {}), prop: item["id"]}
            results.append(
                {
                    **self._write(t, oid, props),
                    "new": new,
                    "objectWriteTraceId": item.get("objectWriteTraceId"),
                }
            )
        return _json(200, {"status": "COMPLETE", "results": results})

    def _read(self, t: str, inputs: list[dict[str, Any]], body: Any) -> Response:
        prop = body.get("idProperty") or "hs_object_id"
        results, missing = [], []
        for item in inputs:
            oid = self.find(t, prop, item["id"])
            if oid is None:
                missing.append(str(item["id"]))
            else:
                # As HubSpot: only the properties asked for (and the object's id).
                stored = self.objects[t][oid]
                wanted = set(body.get("properties") or stored) | {"hs_object_id"}
                props = {k: v for k, v in stored.items() if k in wanted}
                results.append({"id": oid, "properties": {**props, "hs_object_id": oid}})
        if not missing:
            return _json(200, {"status": "COMPLETE", "results": results})
        return _json(
            207,
            {
                "status": "COMPLETE",
                "results": results,
                "numErrors": len(missing),
                "errors": [
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": "Could not get some objects",
                        "context": {"ids": missing},
                    }
                ],
            },
        )

    def _archive(self, t: str, inputs: list[dict[str, Any]], body: Any) -> Response:
        for item in inputs:
            if self.objects[t].pop(str(item["id"]), None) is not None:
                self.archived[t].add(str(item["id"]))
        return Response(status=204)
