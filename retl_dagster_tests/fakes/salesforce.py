"""A fake Salesforce REST API (developer.salesforce.com, REST API Developer Guide):

- `POST /services/oauth2/token`: client-credentials or refresh-token grants; `expire_sessions()`
  makes every issued token answer 401 `INVALID_SESSION_ID` as an expired session does;
- sObject Collections under `/services/data/vXX.X/composite/sobjects`: POST create, PATCH
  update (by Id), PATCH `/{SObject}/{ExternalIdField}` upsert, DELETE `?ids=`; at most 200
  records (else 400 `EXCEEDED_ID_LIMIT`); `allOrNone: false` answers one result per record in
  order, with `errors: [{statusCode, message, fields}]` for the ones refused; an unknown field
  fails the request with 400 `INVALID_FIELD`;
- `GET /query?q=SELECT Id, F[, G...] FROM T WHERE F IN (...)` (an unknown field: INVALID_FIELD);
- past the rate limit: 403 `REQUEST_LIMIT_EXCEEDED`, Salesforce's way of saying slow down.
"""

from __future__ import annotations

import json
import re
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.fakes.base import FakeServer

FIELDS = {
    "Contact": {"Id", "FirstName", "LastName", "Email", "Plan__c", "External_Id__c"},
    "Account": {"Id", "Name", "Website", "External_Id__c"},
}
REQUIRED = {"Contact": ["LastName"], "Account": ["Name"]}
PREFIX = {"Contact": "003", "Account": "001"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SOQL = re.compile(r"SELECT Id, ([\w, ]+) FROM (\w+) WHERE (\w+) IN \((.*)\)$")


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _err(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": fields or []}


class FakeSalesforce(FakeServer):
    url_map = Map(
        [
            Rule("/services/oauth2/token", endpoint="token", methods=["POST"]),
            Rule(
                "/services/data/<version>/composite/sobjects",
                endpoint="collection",
                methods=["POST", "PATCH", "DELETE"],
            ),
            Rule(
                "/services/data/<version>/composite/sobjects/<sobject>/<ext_field>",
                endpoint="upsert",
                methods=["PATCH"],
            ),
            Rule("/services/data/<version>/query", endpoint="query", methods=["GET"]),
            Rule("/services/data/<version>/limits", endpoint="limits", methods=["GET"]),
            Rule(
                "/services/data/<version>/sobjects/<sobject>/describe",
                endpoint="describe",
                methods=["GET"],
            ),
        ]
    )

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        refresh_token: str | None = None,
        rate_limit: int | None = None,
        window_s: float = 1.0,
    ) -> None:
        super().__init__(rate_limit, window_s)
        self.client_id, self.client_secret, self.refresh_token = (
            client_id,
            client_secret,
            refresh_token,
        )
        self.valid_tokens: set[str] = set()
        self.logins = 0
        self.records: dict[str, dict[str, Any]] = {}  # Id -> fields (incl. attributes type)
        self.contract_failures: list[str] = []
        """Bodies refused as the reference says Salesforce refuses them."""
        self._seq = 0

    def rate_limited(self, request: Request) -> Response:
        return _json(
            403,
            [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
        )

    def expire_sessions(self) -> None:
        self.valid_tokens.clear()

    def of_type(self, sobject: str) -> list[dict[str, Any]]:
        return [r for r in self.records.values() if r["_type"] == sobject]

    # -- auth -------------------------------------------------------------------------------
    def token(self, request: Request) -> Response:
        f = request.form
        ok = f.get("client_id") == self.client_id and f.get("client_secret") == self.client_secret
        if f.get("grant_type") == "refresh_token":
            ok = ok and f.get("refresh_token") == self.refresh_token
        elif f.get("grant_type") != "client_credentials":
            ok = False
        if not ok:
            return _json(
                400, {"error": "invalid_client", "error_description": "invalid client credentials"}
            )
        self.logins += 1
        token = f"00D-fake-token-{self.logins}"
        self.valid_tokens.add(token)
        return _json(
            200,
            {
                "access_token": token,
                "instance_url": request.host_url.rstrip("/"),
                "token_type": "Bearer",
                "id": "https://fake/id/00D/005",
            },
        )

    def _session(self, request: Request) -> Response | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.valid_tokens:
            return _json(
                401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
            )
        return None

    def limits(self, request: Request, version: str) -> Response:
        """`GET /limits`: the org's limits, of which `DailyApiRequests`."""
        if (bad := self._session(request)) is not None:
            return bad
        used = len(self.log)
        return _json(200, {"DailyApiRequests": {"Max": 15000, "Remaining": 15000 - used}})

    # -- records ----------------------------------------------------------------------------
    def _check_fields(self, records: list[dict[str, Any]]) -> Response | None:
        if len(records) > 200:
            return _json(
                400,
                [
                    {
                        "message": "Maximum number of records allowed is 200",
                        "errorCode": "EXCEEDED_ID_LIMIT",
                    }
                ],
            )
        for r in records:
            t = r.get("attributes", {}).get("type")
            if t not in FIELDS:
                return _json(
                    400,
                    [
                        {
                            "message": f"sObject type '{t}' is not supported.",
                            "errorCode": "INVALID_TYPE",
                        }
                    ],
                )
            for k in r:
                if k != "attributes" and k not in FIELDS[t]:
                    return _json(
                        400,
                        [
                            {
                                "message": f"No such column '{k}' on sobject of type {t}",
                                "errorCode": "INVALID_FIELD",
                            }
                        ],
                    )
        return None

    def _validate(self, t: str, merged: dict[str, Any]) -> list[dict[str, Any]]:
        errors = []
        missing = [f for f in REQUIRED[t] if not merged.get(f)]
        if missing:
            errors.append(
                _err(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    missing,
                )
            )
        email = merged.get("Email")
        if email and not _EMAIL.match(str(email)):
            errors.append(
                _err("INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {email}", ["Email"])
            )
        return errors

    def _save(self, t: str, rid: str | None, fields: dict[str, Any]) -> dict[str, Any]:
        current = self.records.get(rid, {}) if rid else {}
        merged = {**current, **{k: v for k, v in fields.items() if k != "attributes"}}
        errors = self._validate(t, merged)
        if errors:
            return {"success": False, "errors": errors}
        if rid is None:
            self._seq += 1
            rid = f"{PREFIX[t]}{self._seq:015d}"
        self.records[rid] = {**merged, "_type": t, "Id": rid}
        return {"id": rid, "success": True, "errors": []}

    def _check_body(self, body: Any) -> Response | None:
        """The sObject Collections request body, as Salesforce's REST reference describes it
        (Salesforce publishes no SDK model to check against): `{"allOrNone": bool, "records":
        [...]}` and nothing else; each record's values JSON scalars (a nested object is not a
        field value). Salesforce answers a body it cannot read with 400 JSON_PARSER_ERROR."""

        def refuse(message: str) -> Response:
            self.contract_failures.append(message)
            return _json(400, [{"message": message, "errorCode": "JSON_PARSER_ERROR"}])

        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return refuse("the body needs a records array")
        if set(body) - {"allOrNone", "records"}:
            return refuse(f"Unrecognized field(s) {sorted(set(body) - {'allOrNone', 'records'})}")
        if "allOrNone" in body and not isinstance(body["allOrNone"], bool):
            return refuse("allOrNone must be a boolean")
        for r in body["records"]:
            if not isinstance(r, dict) or not isinstance(r.get("attributes"), dict):
                return refuse("each record needs its attributes (type)")
            for k, v in r.items():
                if k != "attributes" and isinstance(v, (dict, list)):
                    return refuse(f"field {k}: a value must be a string, number, boolean or null")
        return None

    def collection(self, request: Request, version: str) -> Response:
        if (bad := self._session(request)) is not None:
            return bad
        if request.method == "DELETE":
            results = []
            for rid in request.args.get("ids", "").split(","):
                if self.records.pop(rid, None) is None:
                    results.append(
                        {
                            "id": rid,
                            "success": False,
                            "errors": [_err("ENTITY_IS_DELETED", "entity is deleted")],
                        }
                    )
                else:
                    results.append({"id": rid, "success": True, "errors": []})
            return _json(200, results)
        if (bad := self._check_body(request.get_json())) is not None:
            return bad
        records = request.get_json()["records"]
        if (bad := self._check_fields(records)) is not None:
            return bad
        results = []
        for r in records:
            t = r["attributes"]["type"]
            if request.method == "POST":
                results.append(self._save(t, None, r))
            elif r.get("Id") not in self.records:
                results.append(
                    {"success": False, "errors": [_err("ENTITY_IS_DELETED", "entity is deleted")]}
                )
            else:
                results.append(self._save(t, r["Id"], r))
        return _json(200, results)

    def upsert(self, request: Request, version: str, sobject: str, ext_field: str) -> Response:
        if (bad := self._session(request)) is not None:
            return bad
        if (bad := self._check_body(request.get_json())) is not None:
            return bad
        records = request.get_json()["records"]
        if (bad := self._check_fields(records)) is not None:
            return bad
        results = []
        for r in records:
            value = r.get(ext_field)
            rid = next(
                (
                    i
                    for i, rec in self.records.items()
                    if rec["_type"] == sobject and rec.get(ext_field) == value
                ),
                None,
            )
            result = self._save(sobject, rid, r)
            if result["success"]:
                result["created"] = rid is None
            results.append(result)
        return _json(200, results)

    def describe(self, request: Request, version: str, sobject: str) -> Response:
        if (bad := self._session(request)) is not None:
            return bad
        if sobject not in FIELDS:
            return _json(
                404,
                [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}],
            )
        return _json(
            200, {"name": sobject, "fields": [{"name": f} for f in sorted(FIELDS[sobject])]}
        )

    def query(self, request: Request, version: str) -> Response:
        if (bad := self._session(request)) is not None:
            return bad
        m = _SOQL.match(request.args.get("q", ""))
        if not m:
            return _json(400, [{"message": "unexpected token", "errorCode": "MALFORMED_QUERY"}])
        listed, t, where, values = m.groups()
        fields = [f.strip() for f in listed.split(",")]
        unknown = [f for f in [*fields, where] if f not in FIELDS.get(t, set())]
        if unknown:
            return _json(
                400,
                [
                    {
                        "message": f"No such column '{unknown[0]}' on entity '{t}'",
                        "errorCode": "INVALID_FIELD",
                    }
                ],
            )
        wanted = {v.strip().strip("'") for v in values.split(",")}
        rows = [
            {"attributes": {"type": t}, "Id": rid, **{f: rec.get(f) for f in fields}}
            for rid, rec in self.records.items()
            if rec["_type"] == t and str(rec.get(where)) in wanted
        ]
        return _json(200, {"totalSize": len(rows), "done": True, "records": rows})
