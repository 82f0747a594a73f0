"""A fake Salesforce Marketing Cloud (Engagement) tenant: its auth server, REST API and SOAP API on
one loopback server, written from the API reference (developer.salesforce.com, Marketing Cloud
APIs): Salesforce publishes no SDK or schema of these endpoints' bodies, so the fake holds the
reference's rules itself and refuses what they refuse.

- `POST /v2/token`: a JSON body of `grant_type` (client_credentials), `client_id`,
  `client_secret` and optional `scope` / `account_id` (any other key: 400 `invalid_request`);
  wrong credentials: 401 `invalid_client`; an `account_id` the package cannot reach: 401
  `unauthorized_client`. The answer carries `access_token`, `expires_in` (`token_lifetime_s`),
  `rest_instance_url` and `soap_instance_url` (both this server). `expire_tokens()` makes every
  issued token refused, as an expired one is.
- `POST` (insert) / `PUT` (upsert) `/data/v1/async/dataextensions/key:{key}/rows`: a JSON object
  whose only key is `items`, a list of 1 to 32,000 objects of scalar values, at most 5 MB (else
  400 / 413 with Marketing Cloud's `{message, errorcode, documentation}`); an unknown external key
  answers `resultMessages` `CustomObjectNotFound` as the reference shows. 202 `{requestId}`.
- `GET /data/v1/async/{id}/status`: `Pending` for `job_polls` reads, then the request is applied
  row by row against the data extension's declared fields: a field it does not declare, a value
  of the wrong type, text past the field's length, a missing primary key or required field, or
  (insert) an existing primary key fails that row alone, with a SQL Server style message like
  the reference's duplicate-key example.
- `GET /data/v1/async/{id}/results` (`$page`, `$pageSize`): the failed rows, as the reference's
  example lists them (`results_list_every_row` lists an `OK` item for every row instead, in order).
- SOAP `POST /Service.asmx`: `Delete` of `DataExtensionObject`s by their `Keys` (every
  primary-key field, no other; one `Results` per object) and `Retrieve` of `DataExtensionField`
  filtered on `DataExtension.CustomerKey`; a missing or refused `fueloauth` token is a Security
  fault (HTTP 500).
- REST past `rate_limit` requests in `window_s`: 429 with `Retry-After` and errorcode 50100.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.fakes.base import FakeServer

MAX_BODY = 5 * 1024 * 1024
MAX_ITEMS = 32_000
DOCS = "https://developer.salesforce.com/docs/atlas.en-us.mc-apis.meta/mc-apis/error-handling.htm"
TOKEN_KEYS = {"grant_type", "client_id", "client_secret", "scope", "account_id"}
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PARTNER = "http://exacttarget.com/wsdl/partnerAPI"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
FIELD_PROPERTIES = {"Name", "FieldType", "IsPrimaryKey", "IsRequired", "MaxLength", "ObjectID"}


@dataclass
class Field:
    type: str = "Text"
    """Text, Number, Decimal, Boolean, Date, EmailAddress, Phone or Locale."""
    primary_key: bool = False
    required: bool = False
    max_length: int | None = None


@dataclass
class DataExtension:
    key: str
    fields: dict[str, Field]
    rows: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)

    def field(self, name: str) -> tuple[str, Field] | None:
        return next(((n, f) for n, f in self.fields.items() if n.lower() == name.lower()), None)

    @property
    def primary_key(self) -> list[str]:
        return [n for n, f in self.fields.items() if f.primary_key]

    def row(self, **pk: Any) -> dict[str, Any] | None:
        return self.rows.get(tuple(str(pk[n]) for n in self.primary_key))


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _rest_error(status: int, message: str, code: int) -> Response:
    return _json(status, {"message": message, "errorcode": code, "documentation": DOCS})


def _token_error(status: int, error: str, description: str) -> Response:
    return _json(
        status,
        {
            "error": error,
            "error_description": description,
            "error_uri": "https://developer.salesforce.com/docs",
        },
    )


def _fault(code: str, message: str) -> Response:
    xml = (
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body><soap:Fault>'
        f'<faultcode xmlns:q0="{SOAP_ENV}">q0:{code}</faultcode>'
        f"<faultstring>{message}</faultstring></soap:Fault></soap:Body></soap:Envelope>"
    )
    return Response(xml, status=500, content_type="text/xml; charset=utf-8")


def _soap_answer(element: ET.Element) -> Response:
    env = ET.Element(f"{{{SOAP_ENV}}}Envelope")
    ET.SubElement(env, f"{{{SOAP_ENV}}}Body").append(element)
    return Response(ET.tostring(env, encoding="utf-8"), content_type="text/xml; charset=utf-8")


def _sub(parent: ET.Element, tag: str, text: Any = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, f"{{{PARTNER}}}{tag}", attrs)
    if text is not None:
        el.text = str(text)
    return el


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


def value_problem(name: str, spec: Field, value: Any) -> str | None:
    """Why Marketing Cloud cannot store `value` in the field, in its SQL Server words."""
    if value is None:
        if spec.primary_key or spec.required:
            return (
                f"Cannot insert the value NULL into column '{name}'; column does not allow "
                "nulls. INSERT fails."
            )
        return None
    if isinstance(value, (dict, list)):
        return f"The value for column '{name}' must be a single value."
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if spec.type == "Number":
        if isinstance(value, float) or not text.lstrip("-").isdigit():
            return (
                f"Conversion failed when converting the nvarchar value '{text}' to data type int."
            )
    elif spec.type == "Decimal":
        try:
            float(text)
        except ValueError:
            return f"Error converting data type nvarchar '{text}' to numeric."
    elif spec.type == "Boolean":
        if text.lower() not in ("true", "false", "1", "0"):
            return (
                f"Conversion failed when converting the nvarchar value '{text}' to data type bit."
            )
    elif spec.type == "Date":
        try:
            dt.datetime.fromisoformat(text)
        except ValueError:
            return "Conversion failed when converting date and/or time from character string."
    elif spec.type == "EmailAddress" and ("@" not in text or " " in text):
        return f"Invalid email address '{text}' for column '{name}'."
    if spec.max_length is not None and len(text) > spec.max_length:
        return "String or binary data would be truncated.\r\nThe statement has been terminated."
    return None


class FakeSfmc(FakeServer):
    url_map = Map(
        [
            Rule("/v2/token", endpoint="token", methods=["POST"]),
            Rule(
                "/data/v1/async/dataextensions/<target>/rows",
                endpoint="rows",
                methods=["POST", "PUT"],
            ),
            Rule("/data/v1/async/<request_id>/status", endpoint="status", methods=["GET"]),
            Rule("/data/v1/async/<request_id>/results", endpoint="results", methods=["GET"]),
            Rule("/Service.asmx", endpoint="soap", methods=["POST"]),
        ]
    )

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        accounts: tuple[str, ...] = ("100012345",),
        rate_limit: int | None = None,
        window_s: float = 1.0,
    ) -> None:
        super().__init__(rate_limit, window_s)
        self.client_id, self.client_secret, self.accounts = client_id, client_secret, accounts
        self.data_extensions: dict[str, DataExtension] = {}
        self.tokens: set[str] = set()
        self.token_requests: list[dict[str, Any]] = []
        self.token_lifetime_s = 1079
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_polls = 1
        """Reads of a new request's status that answer Pending before it is applied."""
        self.results_list_every_row = False
        self.refused: list[str] = []
        """Why each request the fake refused as a whole was refused."""
        self.delete_sizes: list[int] = []
        """Objects in each SOAP Delete call."""
        self._ids = itertools.count(1)

    def __enter__(self) -> FakeSfmc:
        # Polled often, so leaving the `with` block does not wait half a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def add(self, key: str, **fields: Field) -> DataExtension:
        de = self.data_extensions[key] = DataExtension(key, dict(fields))
        return de

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def rate_limited(self, request: Request) -> Response:
        return _json(
            429,
            {
                "message": "Rate limit exceeded",
                "errorcode": 50100,
                "retryAfter": 1,
                "documentation": DOCS,
            },
            headers={"Retry-After": "1"},
        )

    def over_limit(self) -> bool:
        return False  # counted in _authorised, on REST calls only

    # -- auth -------------------------------------------------------------------------------------
    def token(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        if not request.is_json or not isinstance(body, dict):
            return _token_error(400, "invalid_request", "The request body must be JSON.")
        unknown = sorted(set(body) - TOKEN_KEYS)
        if unknown:
            return _token_error(400, "invalid_request", f"Unknown parameter(s): {unknown}.")
        self.token_requests.append({k: v for k, v in body.items() if k != "client_secret"})
        if body.get("grant_type") != "client_credentials":
            return _token_error(
                400, "unsupported_grant_type", "Use client_credentials for server-to-server."
            )
        if (
            body.get("client_id") != self.client_id
            or body.get("client_secret") != self.client_secret
        ):
            return _token_error(401, "invalid_client", "Client authentication failed.")
        account = body.get("account_id")
        if account is not None and str(account) not in self.accounts:
            return _token_error(
                401, "unauthorized_client", "The client is not authorized for this account."
            )
        token = f"tok-{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        self.tokens.add(token)
        return _json(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime_s,
                "scope": "data_extensions_read data_extensions_write",
                "soap_instance_url": f"{self.url}/",
                "rest_instance_url": f"{self.url}/",
            },
        )

    def _authorised(self, request: Request) -> Response | None:
        if super().over_limit():
            return self.rate_limited(request)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer ") :] not in self.tokens:
            return _rest_error(401, "Not Authorized", 0)
        return None

    # -- asynchronous rows ------------------------------------------------------------------------
    def _refuse(self, status: int, message: str, code: int = 10000) -> Response:
        self.refused.append(message)
        return _rest_error(status, message, code)

    def rows(self, request: Request, target: str) -> Response:
        if (bad := self._authorised(request)) is not None:
            return bad
        if len(request.get_data()) > MAX_BODY:
            return self._refuse(413, "Request payload exceeds the maximum size of 5 MB.")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self._refuse(400, "The request body must be a JSON object.")
        unknown = sorted(set(body) - {"items"})
        if unknown:
            return self._refuse(400, f"Unrecognized property in request body: {unknown[0]}.")
        items = body.get("items")
        if not isinstance(items, list) or not items:
            return self._refuse(400, "items is required and must be a non-empty array.")
        if len(items) > MAX_ITEMS:
            return self._refuse(400, f"items holds {len(items)} objects; at most {MAX_ITEMS}.")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not item:
                return self._refuse(400, f"items[{i}] must be an object of column values.")
            nested = [k for k, v in item.items() if isinstance(v, (dict, list))]
            if nested:
                return self._refuse(400, f"items[{i}].{nested[0]} must be a single value.")
        request_id = str(uuid.uuid4())
        key = target.removeprefix("key:") if target.startswith("key:") else None
        de = self.data_extensions.get(key) if key is not None else None
        if de is None:
            return _json(
                200,
                {
                    "requestId": request_id,
                    "resultMessages": [
                        {
                            "resultType": "Operational",
                            "resultClass": "Error",
                            "resultCode": "CustomObjectNotFound",
                            "message": "Failed to resolve the Custom Object from the provided "
                            f"ObjectReferenceIdentifier [Id: , Key: {key or target}].",
                        }
                    ],
                },
            )
        self.jobs[request_id] = {
            "insert": request.method == "POST",
            "de": de,
            "items": items,
            "polls": 0,
            "results": None,
            "called": _now(),
        }
        return _json(202, {"requestId": request_id})

    def _apply(self, job: dict[str, Any]) -> None:
        de: DataExtension = job["de"]
        results = []
        for item in job["items"]:
            problem = None
            row: dict[str, Any] = {}
            for name, value in item.items():
                found = de.field(name)
                if found is None:
                    problem = f"Invalid column name '{name}'."
                    break
                problem = value_problem(found[0], found[1], value)
                if problem:
                    break
                row[found[0]] = None if value is None else value
            pk: tuple[str, ...] = ()
            if problem is None:
                missing = [n for n in de.primary_key if row.get(n) is None]
                if missing:
                    problem = value_problem(missing[0], de.fields[missing[0]], None)
                else:
                    pk = tuple(str(row[n]) for n in de.primary_key)
            if problem is None and job["insert"] and pk in de.rows:
                problem = (
                    f"Violation of PRIMARY KEY constraint 'PK_{de.key}'. Cannot insert duplicate "
                    f"key in object 'C1.{de.key}'. The duplicate key value is ({', '.join(pk)})."
                    "\r\nThe statement has been terminated."
                )
            if problem is None and pk not in de.rows:
                absent = [n for n, f in de.fields.items() if f.required and row.get(n) is None]
                if absent:
                    problem = value_problem(absent[0], de.fields[absent[0]], None)
            if problem is not None:
                results.append(
                    {"errorCode": "UnexpectedError", "message": problem, "status": "Error"}
                )
                continue
            de.rows.setdefault(pk, {}).update(row)
            results.append({"errorCode": "", "message": "", "status": "OK"})
        job["results"] = results
        job["completed"] = _now()

    def status(self, request: Request, request_id: str) -> Response:
        if (bad := self._authorised(request)) is not None:
            return bad
        job = self.jobs.get(request_id)
        if job is None:
            return _rest_error(404, f"Request {request_id} not found.", 10001)
        job["polls"] += 1
        if job["results"] is None and job["polls"] > self.job_polls:
            self._apply(job)
        done = job["results"] is not None
        errors = done and any(r["status"] == "Error" for r in job["results"])
        return _json(
            200,
            {
                "status": {
                    "callDateTime": job["called"],
                    "completionDateTime": job.get("completed"),
                    "hasErrors": bool(errors),
                    "pickupDateTime": job["called"] if done else None,
                    "requestStatus": "Complete" if done else "Pending",
                    "resultStatus": ("Error" if errors else "OK") if done else None,
                    "requestId": request_id,
                },
                "requestId": str(uuid.uuid4()),
            },
        )

    def results(self, request: Request, request_id: str) -> Response:
        if (bad := self._authorised(request)) is not None:
            return bad
        job = self.jobs.get(request_id)
        if job is None:
            return _rest_error(404, f"Request {request_id} not found.", 10001)
        try:
            page = int(request.args.get("$page", "1"))
            size = int(request.args.get("$pageSize", "50"))
        except ValueError:
            return _rest_error(400, "$page and $pageSize must be integers.", 10000)
        if page < 1 or not 1 <= size <= 2500:
            return _rest_error(400, "$page must be 1 or more and $pageSize 1 to 2500.", 10000)
        listed = [
            r for r in job["results"] or [] if self.results_list_every_row or r["status"] == "Error"
        ]
        start = (page - 1) * size
        return _json(
            200,
            {
                "page": page,
                "pageSize": size,
                "count": len(listed),
                "items": listed[start : start + size],
                "requestId": request_id,
            },
        )

    # -- SOAP -------------------------------------------------------------------------------------
    def soap(self, request: Request) -> Response:
        try:
            root = ET.fromstring(request.get_data())
        except ET.ParseError:
            return _fault("Client", "The request is not XML.")
        header = root.find(f"{{{SOAP_ENV}}}Header")
        body = root.find(f"{{{SOAP_ENV}}}Body")
        token = header.findtext("{http://exacttarget.com}fueloauth") if header is not None else None
        if token is None or token not in self.tokens:
            return _fault("Security", "Login Failed")
        action = request.headers.get("SOAPAction", "").strip('"')
        if body is None or len(body) != 1:
            return _fault("Client", "The SOAP Body must hold one request.")
        payload = body[0]
        if action == "Delete" and payload.tag == f"{{{PARTNER}}}DeleteRequest":
            return self._delete(payload)
        if action == "Retrieve" and payload.tag == f"{{{PARTNER}}}RetrieveRequestMsg":
            return self._retrieve(payload)
        return _fault("Client", "SOAP action could not be determined from HTTP or SOAP header.")

    def _delete(self, payload: ET.Element) -> Response:
        objects = payload.findall(f"{{{PARTNER}}}Objects")
        self.delete_sizes.append(len(objects))
        answer = ET.Element(f"{{{PARTNER}}}DeleteResponse")
        failed = 0
        for ordinal, obj in enumerate(objects):
            problem = None
            key = obj.findtext(f"{{{PARTNER}}}CustomerKey") or ""
            de = self.data_extensions.get(key)
            keys = {
                (k.findtext(f"{{{PARTNER}}}Name") or ""): k.findtext(f"{{{PARTNER}}}Value") or ""
                for k in obj.iter(f"{{{PARTNER}}}Key")
            }
            if obj.get(f"{{{XSI}}}type") != "DataExtensionObject":
                problem = "Objects must be of type DataExtensionObject."
            elif de is None:
                problem = f"Data extension with CustomerKey '{key}' does not exist."
            elif {k.lower() for k in keys} != {p.lower() for p in de.primary_key}:
                problem = (
                    f"The Keys must name the primary key of data extension '{key}': "
                    f"{', '.join(de.primary_key)}."
                )
            result = _sub(answer, "Results", **{f"{{{XSI}}}type": "DataExtensionDeleteResult"})
            if problem is None and de is not None:
                by_lower = {k.lower(): v for k, v in keys.items()}
                de.rows.pop(tuple(by_lower[p.lower()] for p in de.primary_key), None)
                _sub(result, "StatusCode", "OK")
                _sub(result, "StatusMessage", "Deleted DataExtensionObject")
            else:
                failed += 1
                _sub(result, "StatusCode", "Error")
                _sub(result, "StatusMessage", "Error deleting DataExtensionObject")
                _sub(result, "ErrorCode", 310007)
                _sub(result, "ErrorMessage", problem)
            _sub(result, "OrdinalID", ordinal)
        _sub(answer, "RequestID", str(uuid.uuid4()))
        overall = "OK" if not failed else ("Error" if failed == len(objects) else "Has Errors")
        _sub(answer, "OverallStatus", overall)
        return _soap_answer(answer)

    def _retrieve(self, payload: ET.Element) -> Response:
        request = payload.find(f"{{{PARTNER}}}RetrieveRequest")
        answer = ET.Element(f"{{{PARTNER}}}RetrieveResponseMsg")
        object_type = request.findtext(f"{{{PARTNER}}}ObjectType") if request is not None else None
        props = (
            [p.text or "" for p in request.findall(f"{{{PARTNER}}}Properties")]
            if request is not None
            else []
        )
        flt = request.find(f"{{{PARTNER}}}Filter") if request is not None else None
        if object_type != "DataExtensionField" or not props or set(props) - FIELD_PROPERTIES:
            _sub(answer, "OverallStatus", "Error: Unable to retrieve the requested properties")
            return _soap_answer(answer)
        if (
            flt is None
            or flt.findtext(f"{{{PARTNER}}}Property") != "DataExtension.CustomerKey"
            or flt.findtext(f"{{{PARTNER}}}SimpleOperator") != "equals"
        ):
            _sub(answer, "OverallStatus", "Error: The filter is not supported")
            return _soap_answer(answer)
        _sub(answer, "OverallStatus", "OK")
        _sub(answer, "RequestID", str(uuid.uuid4()))
        de = self.data_extensions.get(flt.findtext(f"{{{PARTNER}}}Value") or "")
        for name, spec in de.fields.items() if de else []:
            values = {
                "Name": name,
                "FieldType": spec.type,
                "IsPrimaryKey": str(spec.primary_key).lower(),
                "IsRequired": str(spec.required or spec.primary_key).lower(),
                "MaxLength": spec.max_length or "",
                "ObjectID": uuid.uuid5(uuid.NAMESPACE_OID, name),
            }
            result = _sub(answer, "Results", **{f"{{{XSI}}}type": "DataExtensionField"})
            for prop in props:
                _sub(result, prop, values[prop])
        return _soap_answer(answer)
