"""A fake Salesforce REST API (developer.salesforce.com, REST API Developer Guide):

- `POST /services/oauth2/token`: client-credentials or refresh-token grants; `expire_sessions()`
  makes every issued token answer 401 `INVALID_SESSION_ID` as an expired session does;
- sObject Collections under `/services/data/vXX.X/composite/sobjects`: POST create, PATCH
  update (by Id), PATCH `/{SObject}/{ExternalIdField}` upsert, DELETE `?ids=`; at most 200
  records (else 400 `EXCEEDED_ID_LIMIT`); `allOrNone: false` answers one result per record in
  order, with `errors: [{statusCode, message, fields}]` for the ones refused; an unknown field
  fails the request with 400 `INVALID_FIELD`;
- `GET /query?q=SELECT Id, F[, G...] FROM T WHERE F IN (...)` (an unknown field: INVALID_FIELD);
- past the rate limit: 403 `REQUEST_LIMIT_EXCEEDED`, Salesforce's way of saying slow down;
- Bulk API 2.0 ingest (Bulk API 2.0 and Bulk API Developer Guide), see `BULK` below.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import random
import re
import threading
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.fakes.base import FakeServer

FIELDS = {
    "Contact": {"Id", "FirstName", "LastName", "Email", "Plan__c", "External_Id__c"},
    "Account": {
        "Id",
        "Name",
        "Website",
        "External_Id__c",
        "Active__c",
        "Since__c",
        "Last_Seen__c",
        "Revenue__c",
    },
}
TYPES = {
    "Active__c": "boolean",
    "Since__c": "date",
    "Last_Seen__c": "datetime",
    "Revenue__c": "double",
}
"""Fields of a type other than text (a Bulk API CSV cell is read by its field's type)."""
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?(Z|[+-]\d{2}:?\d{2})$")
REQUIRED = {"Contact": ["LastName"], "Account": ["Name"]}
PREFIX = {"Contact": "003", "Account": "001"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SOQL = re.compile(r"SELECT Id, ([\w, ]+) FROM (\w+) WHERE (\w+) IN \((.*)\)$")


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _err(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": fields or []}


# -- Bulk API 2.0 ingest --------------------------------------------------------------------------
BULK = """What the fake holds Bulk API 2.0 ingest jobs to:
- `POST jobs/ingest`: `object` (an sObject) and `operation` (insert, update, upsert, delete,
  hardDelete) required; `externalIdFieldName` (a field of the object) required for upsert;
  `contentType` only CSV; `lineEnding` LF | CRLF; `columnDelimiter` COMMA, TAB, PIPE, SEMICOLON,
  CARET, BACKQUOTE; any other key: 400 JSON_PARSER_ERROR. The job starts `Open`;
- `PUT .../batches` (Content-Type text/csv) only while the job is `Open` (else 400
  INVALIDJOBSTATE); its uploads together at most 150 MB once base64-encoded; 201, no body;
- `PATCH` `{"state": "UploadComplete"}` only from `Open`, and refused (400 INVALIDJOB "Found
  multipe contents") after more than one upload; `{"state": "Aborted"}` from Open,
  UploadComplete or InProgress, else 400 INVALIDJOBSTATE "Aborting already Completed Job not
  allowed";
- `GET` the job: `InProgress` for `polls_in_progress` reads (forever with `stall`), then it is
  processed: a line ending other than the job's, or a header naming no field of the object
  (`InvalidBatch : Field name not found : X`), or an update without Id, an upsert without its
  external id column, a delete with any column but Id, fail the whole job (`state: Failed`,
  `errorMessage`, nothing processed); else each row on its own: `#N/A` sets null, an empty cell
  leaves the field, booleans/dates/dateTimes/doubles must read as their type, required fields,
  e-mail format, an Id that does not exist (ENTITY_IS_DELETED), a blank or repeated external id;
  past `daily_records` the rest is not processed and the job ends Failed;
- results only once the job is JobComplete, Failed or Aborted (else 400 INVALIDJOBSTATE), as CSV
  in a shuffled order: successfulResults `sf__Id, sf__Created` + the row as sent,
  failedResults `sf__Id, sf__Error` (`CODE:message:fields --`) + the row, unprocessedrecords the
  rows as sent."""

OPERATIONS = {"insert", "update", "upsert", "delete", "hardDelete"}
DELIMITERS = {
    "COMMA": ",",
    "TAB": "\t",
    "PIPE": "|",
    "SEMICOLON": ";",
    "CARET": "^",
    "BACKQUOTE": "`",
}
JOB_KEYS = {
    "object",
    "operation",
    "externalIdFieldName",
    "contentType",
    "lineEnding",
    "columnDelimiter",
    "assignmentRuleId",
}
TERMINAL = {"JobComplete", "Failed", "Aborted"}


def _bulk_error(status: int, code: str, message: str) -> Response:
    return _json(status, [{"errorCode": code, "message": message}])


def _sf_error(code: str, message: str, fields: list[str] | None = None) -> str:
    return f"{code}:{message}:{','.join(fields or [])} --"


def _csv(header: list[str], rows: list[list[str]]) -> Response:
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return Response(buf.getvalue(), status=200, content_type="text/csv")


def _typed(field: str, text: str) -> Any:
    """A CSV cell as its field's type; ValueError when it does not read as one."""
    kind = TYPES.get(field)
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    if kind == "double":
        return float(text)
    if kind == "date":
        if not _DATE.match(text):
            raise ValueError(text)
        return dt.date.fromisoformat(text).isoformat()
    if kind == "datetime":
        if not _DATETIME.match(text):
            raise ValueError(text)
        return text
    return text


class _BulkMixin:
    """The Bulk API 2.0 ingest endpoints of FakeSalesforce."""

    jobs: dict[str, dict[str, Any]]
    records: dict[str, dict[str, Any]]
    contract_failures: list[str]
    polls_in_progress: int
    stall: bool
    daily_records: int
    records_ingested: int
    max_upload_b64: int
    bulk_batches: int

    def _session(self, request: Request) -> Response | None:  # pragma: no cover - FakeSalesforce
        raise NotImplementedError

    def _save(
        self, t: str, rid: str | None, fields: dict[str, Any]
    ) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _refuse(self, status: int, code: str, message: str) -> Response:
        """A request the reference says Salesforce refuses, which our client must never send."""
        self.contract_failures.append(f"{code}: {message}")
        return _bulk_error(status, code, message)

    def _info(self, job: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if k not in ("uploads", "results", "polls")}

    def create_job(self, request: Request, version: str) -> Response:
        if (bad := self._session(request)) is not None:
            return bad
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self._refuse(400, "JSON_PARSER_ERROR", "the body must be a JSON object")
        if unknown := set(body) - JOB_KEYS:
            return self._refuse(
                400, "JSON_PARSER_ERROR", f"Unrecognized field(s) {sorted(unknown)}"
            )
        obj, op = body.get("object"), body.get("operation")
        if op not in OPERATIONS:
            return self._refuse(
                400, "JSON_PARSER_ERROR", f"operation {op!r} is not one of {sorted(OPERATIONS)}"
            )
        if body.get("contentType", "CSV") != "CSV":
            return self._refuse(400, "JSON_PARSER_ERROR", "contentType: only CSV is supported")
        if body.get("lineEnding", "LF") not in ("LF", "CRLF"):
            return self._refuse(400, "JSON_PARSER_ERROR", "lineEnding must be LF or CRLF")
        if body.get("columnDelimiter", "COMMA") not in DELIMITERS:
            return self._refuse(
                400, "JSON_PARSER_ERROR", "columnDelimiter is not a ColumnDelimiterEnum"
            )
        if obj not in FIELDS:
            return _bulk_error(400, "INVALIDJOB", f"InvalidJob : Unable to find object: {obj}")
        ext = body.get("externalIdFieldName")
        if op == "upsert" and not ext:
            return self._refuse(400, "INVALIDJOB", "InvalidJob : External ID was blank for upsert")
        if ext is not None and ext not in FIELDS[obj]:
            return _bulk_error(400, "INVALIDJOB", f"InvalidJob : Field name not found : {ext}")
        job_id = f"750{len(self.jobs) + 1:015d}"
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        job: dict[str, Any] = {
            "id": job_id,
            "operation": op,
            "object": obj,
            "createdById": "005000000000001",
            "createdDate": now,
            "systemModstamp": now,
            "state": "Open",
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(version.lstrip("v")),
            "jobType": "V2Ingest",
            "contentUrl": f"services/data/{version}/jobs/ingest/{job_id}/batches",
            "lineEnding": body.get("lineEnding", "LF"),
            "columnDelimiter": body.get("columnDelimiter", "COMMA"),
            "numberRecordsProcessed": 0,
            "numberRecordsFailed": 0,
            "retries": 0,
            "totalProcessingTime": 0,
            "apiActiveProcessingTime": 0,
            "apexProcessingTime": 0,
            "uploads": [],
            "results": {"successfulResults": [], "failedResults": [], "unprocessedrecords": []},
            "polls": 0,
        }
        if ext is not None:
            job["externalIdFieldName"] = ext
        self.jobs[job_id] = job
        return _json(200, self._info(job))

    def _job_or_404(self, job_id: str) -> dict[str, Any] | Response:
        job = self.jobs.get(job_id)
        if job is None:
            return _bulk_error(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def upload(self, request: Request, version: str, job_id: str) -> Response:
        if (bad := self._session(request)) is not None:
            return bad
        job = self._job_or_404(job_id)
        if isinstance(job, Response):
            return job
        if request.mimetype != "text/csv":
            return self._refuse(
                400, "INVALIDCONTENTTYPE", f"upload Content-Type {request.mimetype!r}: use text/csv"
            )
        if job["state"] != "Open":
            return self._refuse(
                400, "INVALIDJOBSTATE", f"Job {job_id} is not Open: it is {job['state']}"
            )
        data = request.get_data()
        total = sum(len(base64.b64encode(u.encode())) for u in job["uploads"])
        if total + len(base64.b64encode(data)) > self.max_upload_b64:
            return self._refuse(
                400, "CLIENTINPUTERROR", "the job's data exceeds 150 MB once base64-encoded"
            )
        job["uploads"].append(data.decode("utf-8", errors="replace"))
        return Response(status=201)

    def job(self, request: Request, version: str, job_id: str) -> Response:
        if (bad := self._session(request)) is not None:
            return bad
        job = self._job_or_404(job_id)
        if isinstance(job, Response):
            return job
        if request.method == "GET":
            if job["state"] in ("UploadComplete", "InProgress"):
                job["polls"] += 1
                if self.stall or job["polls"] <= self.polls_in_progress:
                    job["state"] = "InProgress"
                else:
                    self._process(job)
            return _json(200, self._info(job))
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or set(body) != {"state"}:
            return self._refuse(400, "JSON_PARSER_ERROR", 'the body must be {"state": ...}')
        wanted = body["state"]
        if wanted == "UploadComplete":
            if job["state"] != "Open":
                return self._refuse(
                    400, "INVALIDJOBSTATE", f"Job {job_id} is {job['state']}, not Open"
                )
            if len(job["uploads"]) > 1:
                return self._refuse(
                    400,
                    "INVALIDJOB",
                    f"Found multipe contents for job: <{job_id}>, please 'Close' / 'Abort' / "
                    "'Delete' the current Job then create a new Job and make sure you only do "
                    "'PUT' once on a given Job.",
                )
            job["state"] = "UploadComplete"
            job.pop("contentUrl", None)
        elif wanted == "Aborted":
            if job["state"] in TERMINAL:
                return _bulk_error(
                    400, "INVALIDJOBSTATE", "Aborting already Completed Job not allowed"
                )
            job["state"] = "Aborted"
            job.pop("contentUrl", None)
            rows = self._rows(job)
            if rows is not None:
                job["results"]["unprocessedrecords"] = rows[1]
        else:
            return self._refuse(400, "INVALIDJOBSTATE", f"cannot set a job's state to {wanted!r}")
        return _json(200, self._info(job))

    def results(self, request: Request, version: str, job_id: str, kind: str) -> Response:
        if (bad := self._session(request)) is not None:
            return bad
        job = self._job_or_404(job_id)
        if isinstance(job, Response):
            return job
        if job["state"] not in TERMINAL:
            return self._refuse(
                400, "INVALIDJOBSTATE", f"Job {job_id} is {job['state']}: no results yet"
            )
        rows = self._rows(job)
        header = rows[0] if rows is not None else []
        lead = {
            "successfulResults": ["sf__Id", "sf__Created"],
            "failedResults": ["sf__Id", "sf__Error"],
        }
        body = list(job["results"][kind])
        random.Random(job_id + kind).shuffle(body)  # "not guaranteed to match" the upload's order
        return _csv(lead.get(kind, []) + header, body)

    # -- processing -------------------------------------------------------------------------
    def _rows(self, job: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
        if len(job["uploads"]) != 1:
            return None
        text = job["uploads"][0]
        reader = csv.reader(
            io.StringIO(text, newline=""), delimiter=DELIMITERS[job["columnDelimiter"]]
        )
        rows = list(reader)
        return (rows[0], rows[1:]) if rows else None

    def _fail(self, job: dict[str, Any], message: str) -> None:
        job["state"] = "Failed"
        job["errorMessage"] = message

    def _process(self, job: dict[str, Any]) -> None:
        parsed = self._rows(job)
        if parsed is None:
            self._fail(job, "ClientInputError : No data was uploaded for this job")
            return
        header, rows = parsed
        first_line = job["uploads"][0].split("\n", 1)[0]
        if (job["lineEnding"] == "LF") == first_line.endswith("\r"):
            self._fail(
                job,
                "ClientInputError : LineEnding is invalid on user data. Current LineEnding "
                f"setting is {job['lineEnding']}",
            )
            return
        fields, op, obj = FIELDS[job["object"]], job["operation"], job["object"]
        for name in header:
            if name not in fields:
                self._fail(job, f"InvalidBatch : Field name not found : {name}")
                return
        if op in ("update", "delete", "hardDelete") and "Id" not in header:
            self._fail(job, "InvalidBatch : Field name not found : Id")
            return
        if op in ("delete", "hardDelete") and header != ["Id"]:
            self._fail(job, f"InvalidBatch : The '{op}' batch must contain only ids")
            return
        ext = job.get("externalIdFieldName")
        if op == "upsert" and ext not in header:
            self._fail(job, f"InvalidBatch : Field name not found : {ext}")
            return
        job["state"] = "InProgress"
        seen: dict[str, int] = {}
        if op == "upsert":
            for row in rows:
                value = row[header.index(ext)] if len(row) == len(header) else ""
                seen[value] = seen.get(value, 0) + 1
        ok, failed = job["results"]["successfulResults"], job["results"]["failedResults"]
        for i, row in enumerate(rows):
            if self.records_ingested >= self.daily_records:
                job["results"]["unprocessedrecords"] = rows[i:]
                self._fail(
                    job, "ExceededQuota : the org's 24-hour Bulk API record allocation is used up"
                )
                break
            self.records_ingested += 1
            job["numberRecordsProcessed"] += 1
            rid, created, error = self._ingest_row(obj, op, header, row, ext, seen)
            if error is None:
                ok.append([rid or "", "true" if created else "false", *row])
            else:
                job["numberRecordsFailed"] += 1
                failed.append([rid or "", error, *row])
        else:
            job["state"] = "JobComplete"
        self.bulk_batches += max(1, -(-job["numberRecordsProcessed"] // 10_000))

    def _ingest_row(
        self,
        obj: str,
        op: str,
        header: list[str],
        row: list[str],
        ext: str | None,
        seen: dict[str, int],
    ) -> tuple[str | None, bool, str | None]:
        """(Id, created, sf__Error or None) of one row."""
        if len(row) != len(header):
            return (
                None,
                False,
                _sf_error(
                    "INVALID_FIELD", f"wrong number of columns: {len(row)}, not {len(header)}"
                ),
            )
        cells = dict(zip(header, row, strict=True))
        if op in ("delete", "hardDelete"):
            rid = cells["Id"]
            if self.records.pop(rid, None) is None:
                return rid, False, _sf_error("ENTITY_IS_DELETED", "entity is deleted")
            return rid, False, None
        values: dict[str, Any] = {}
        for name, text in cells.items():
            if text == "" or name == "Id":
                continue  # an empty cell leaves the field as it is
            if text == "#N/A":
                values[name] = None
                continue
            try:
                values[name] = _typed(name, text)
            except ValueError:
                return (
                    None,
                    False,
                    _sf_error(
                        "INVALID_TYPE_ON_FIELD_IN_RECORD",
                        f"{name}: value not of required type: {text}",
                        [name],
                    ),
                )
        rid: str | None = None
        if op == "update":
            rid = cells["Id"]
            if rid not in self.records or self.records[rid]["_type"] != obj:
                return rid, False, _sf_error("ENTITY_IS_DELETED", "entity is deleted")
        elif op == "upsert":
            assert ext is not None
            key = cells[ext]
            if key in ("", "#N/A"):
                return None, False, _sf_error("MISSING_ARGUMENT", f"{ext} not specified", [ext])
            if seen.get(key, 0) > 1:
                return (
                    None,
                    False,
                    _sf_error("DUPLICATE_VALUE", f"Duplicate external id specified: {key}", [ext]),
                )
            rid = next(
                (
                    i
                    for i, rec in self.records.items()
                    if rec["_type"] == obj and str(rec.get(ext)) == key
                ),
                None,
            )
        created = rid is None
        result = self._save(obj, rid, values)
        if not result["success"]:
            e = result["errors"][0]
            return rid, False, _sf_error(e["statusCode"], e["message"], e["fields"])
        return str(result["id"]), created, None


class FakeSalesforce(_BulkMixin, FakeServer):
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
            Rule("/services/data/<version>/jobs/ingest", endpoint="create_job", methods=["POST"]),
            Rule(
                "/services/data/<version>/jobs/ingest/<job_id>",
                endpoint="job",
                methods=["GET", "PATCH"],
            ),
            Rule(
                "/services/data/<version>/jobs/ingest/<job_id>/batches",
                endpoint="upload",
                methods=["PUT"],
            ),
            Rule(
                "/services/data/<version>/jobs/ingest/<job_id>/<any(successfulResults, "
                "failedResults, unprocessedrecords):kind>/",
                endpoint="results",
                methods=["GET"],
                strict_slashes=False,
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
        # Stop within 50 ms of `__exit__` (serve_forever's default poll is half a second).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
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
        # -- Bulk API 2.0 --
        self.jobs: dict[str, dict[str, Any]] = {}
        """Ingest jobs by id: their info, `uploads` (CSV texts) and `results`."""
        self.polls_in_progress = 0
        """Job info reads that answer InProgress before a closed job is processed."""
        self.stall = False
        """Closed jobs stay InProgress (until aborted)."""
        self.daily_records = 150_000_000
        """Records the org may ingest in 24 hours; past it a job stops and ends Failed."""
        self.records_ingested = 0
        self.max_upload_b64 = 150_000_000
        """A job's uploads, base64-encoded, must stay within this (150 MB)."""
        self.bulk_batches = 0
        """Internal batches used (one per 10,000 records of a job): of the daily 15,000."""

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
        return _json(
            200,
            {
                "DailyApiRequests": {"Max": 15000, "Remaining": 15000 - used},
                "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000 - self.bulk_batches},
            },
        )

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
