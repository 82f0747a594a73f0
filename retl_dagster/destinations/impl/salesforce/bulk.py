"""Salesforce Bulk API 2.0 ingest jobs (Bulk API 2.0 and Bulk API Developer Guide, "Bulk API 2.0
Ingest"), for batches too large for sObject Collections' 200 records a call:

1. `POST /services/data/vXX.X/jobs/ingest` `{object, operation, externalIdFieldName (upsert),
   contentType: CSV, columnDelimiter: COMMA, lineEnding: LF}`: a job in state `Open`;
2. `PUT .../jobs/ingest/{id}/batches` (text/csv), once per job (a second upload makes the next
   step fail with INVALIDJOB "Found multiple contents"): at most 100 MB of CSV, since Salesforce
   keeps it base64-encoded within 150 MB, so a larger batch becomes several jobs;
3. `PATCH .../jobs/ingest/{id}` `{"state": "UploadComplete"}`: processing starts;
4. `GET .../jobs/ingest/{id}` until `JobComplete`, `Failed` or `Aborted`, each wait 1.5 times the
   last (from `bulk_poll_interval_s` up to `bulk_poll_max_s`); after `bulk_timeout_s` the job is
   aborted (`PATCH {"state": "Aborted"}`);
5. `GET .../successfulResults/` (`sf__Id`, `sf__Created` and the row as sent) and
   `GET .../failedResults/` (`sf__Id`, `sf__Error` and the row), also for a Failed or Aborted
   job, whose processed rows are not rolled back. Results come in no particular order: each is
   matched back to its record by the row's cells exactly as sent (rows alike in every cell are
   interchangeable), else by the row's Id (update, delete) or external id (upsert) where that is
   unique in the job. A row with no result is never taken as delivered.

CSV (Prepare CSV Files; Valid Date Format in Records): UTF-8, the field API names as header, LF
line ends, written by the csv module (a value with a comma, quote, CR or LF is quoted, quotes
doubled). A null (or empty text) is `#N/A`, which clears the field (an empty cell would leave it
unchanged, which is what a fill-only field Salesforce already has is sent as); booleans `true` /
`false`; numbers as Python writes them (Salesforce reads exponents in doubles); a value of a
timestamp column as `yyyy-MM-ddTHH:mm:ss.SSSZ` in UTC (a timestamp without time zone is UTC);
dates stay `yyyy-MM-dd`. An object or array is no field value: its record is rejected.

Every request goes through the destination's HttpClient, so the polling and the result reads
count against `requests_per_day` like the REST calls (a job of 10,000 records costs about six
requests, against 50 sObject Collections calls). Salesforce counts each 10,000 records of a job
as one of the org's 15,000 daily Bulk API batches (shared by Bulk API and Bulk API 2.0); `retl
check` shows what is left of them.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from retl_dagster.common.encoding import dumps
from retl_dagster.destinations.base import BatchResult, Record
from retl_dagster.destinations.http import error_text
from retl_dagster.destinations.impl.salesforce.config import SalesforceConfig
from retl_dagster.destinations.impl.salesforce.exceptions import (
    SalesforceApiError,
    SalesforceBulkJobError,
)

MAX_UPLOAD_BYTES = 100_000_000
"""CSV bytes one job's upload may hold: 150 MB once Salesforce has base64-encoded it."""
NULL = "#N/A"
"""A cell that sets the field to null (an empty cell leaves it as it is)."""
TERMINAL = frozenset({"JobComplete", "Failed", "Aborted"})
POLL_GROWTH = 1.5
DELETES = frozenset({"delete", "hardDelete"})

Send = Callable[..., httpx.Response]
"""`send(method, path under /services/data/vXX.X, **httpx kwargs)`: the destination's request,
logged in and rate limited."""

_TIMESTAMP_TYPES = ("TIMESTAMP", "DATETIME")
_SF_ERROR = re.compile(r"([A-Z][A-Z_]*):(.*?)(?::([\w, ]*))?\s*--\s*", re.S)


class NotAValue(ValueError):
    """A value no Salesforce field takes (an object or an array)."""


def _utc_datetime(text: str) -> str:
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return text  # Salesforce says, for the row, what it cannot read
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    utc = parsed.astimezone(dt.UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def csv_value(value: Any, warehouse_type: str | None = None) -> str:
    """One cell: `value` (JSON-ready, as the mapper makes it) as Bulk API 2.0 reads it."""
    if value is None or value == "":
        return NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else NULL
    if isinstance(value, (dict, list)):
        raise NotAValue(
            f"a Salesforce field takes one value (text, number, boolean, date), not "
            f"{dumps(value).decode()[:80]}"
        )
    text = str(value)
    if warehouse_type and any(t in warehouse_type.upper() for t in _TIMESTAMP_TYPES):
        return _utc_datetime(text)
    return text


def error_message(sf_error: str) -> str:
    """failedResults' `sf__Error` (`CODE:message:fields --`) in the REST API's words, `CODE:
    message`; anything else as it is."""
    m = _SF_ERROR.fullmatch(sf_error)
    if m is None:
        return sf_error.strip()
    return f"{m.group(1)}: {m.group(2).strip()}"


def csv_line(cells: Sequence[str]) -> str:
    """One CSV line ending in LF. (The csv module quotes what contains a character of its line
    terminator: with CRLF there, a value holding a lone CR is quoted too.)"""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(cells)
    return buf.getvalue()[:-2] + "\n"


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


@dataclass
class Row:
    record: Record
    cells: tuple[str, ...]


class _Matcher:
    """Results back to their records: by the row's cells as sent, else by a unique id column."""

    def __init__(self, header: Sequence[str], rows: Sequence[Row], id_column: str | None) -> None:
        self.header = list(header)
        self.by_cells: dict[tuple[str, ...], list[Row]] = defaultdict(list)
        for row in rows:
            self.by_cells[row.cells].append(row)
        self.by_id: dict[str, list[Row]] = defaultdict(list)
        self.id_index = self.header.index(id_column) if id_column in self.header else None
        if self.id_index is not None:
            for row in rows:
                self.by_id[row.cells[self.id_index]].append(row)
        self.left = {id(row): row for row in rows}

    def take(self, result: dict[str, str]) -> Row | None:
        cells = tuple(result.get(c) or "" for c in self.header)
        for row in self.by_cells.get(cells, []):
            if id(row) in self.left:
                return self.left.pop(id(row))
        if self.id_index is not None:
            same = self.by_id.get(cells[self.id_index], [])
            if len(same) == 1 and id(same[0]) in self.left:
                return self.left.pop(id(same[0]))
        return None


class BulkIngest:
    """Runs a batch's rows of one operation as Bulk API 2.0 ingest jobs."""

    max_upload_bytes: int = MAX_UPLOAD_BYTES

    def __init__(self, destination: str, config: SalesforceConfig, send: Send) -> None:
        self.destination = destination
        self.config = config
        self.send = send
        self.jobs = 0
        """Ingest jobs created (every run of this client)."""

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        response = self.send(method, path, **kwargs)
        if not response.is_success:
            raise SalesforceApiError(
                f"destination '{self.destination}': Bulk API 2.0 {what} ({method} {path}): "
                f"{error_text(response)}"
            )
        return response.json() if response.content else None

    def run(
        self,
        object_: str,
        operation: str,
        header: Sequence[str],
        rows: Sequence[Row],
        out: BatchResult,
        done: set[str],
        external_id: str | None = None,
    ) -> None:
        """Ingest `rows` (cells in `header`'s order) with `operation`, in as many jobs as the
        upload limit takes; each record's outcome goes to `out`, its key to `done`. Raises after
        a job that did not complete, its processed rows settled."""
        head = csv_line(header).encode()
        limit = max(self.max_upload_bytes - len(head), 1)
        jobs: list[tuple[list[Row], list[bytes]]] = [([], [])]
        size = 0
        for row in rows:
            line = csv_line(row.cells).encode()
            if jobs[-1][0] and size + len(line) > limit:
                jobs.append(([], []))
                size = 0
            jobs[-1][0].append(row)
            jobs[-1][1].append(line)
            size += len(line)
        for job_rows, lines in jobs:
            if job_rows:
                data = head + b"".join(lines)
                self._job(object_, operation, header, data, job_rows, out, done, external_id)

    def _job(
        self,
        object_: str,
        operation: str,
        header: Sequence[str],
        data: bytes,
        rows: list[Row],
        out: BatchResult,
        done: set[str],
        external_id: str | None,
    ) -> None:
        spec: dict[str, Any] = {
            "object": object_,
            "operation": operation,
            "contentType": "CSV",
            "columnDelimiter": "COMMA",
            "lineEnding": "LF",
        }
        if operation == "upsert":
            spec["externalIdFieldName"] = external_id
        created = self._json("POST", "/jobs/ingest", "create job", json=spec)
        job_id = str(created["id"])
        self.jobs += 1
        path = f"/jobs/ingest/{job_id}"
        uploaded = self.send(
            "PUT", f"{path}/batches", content=data, headers={"Content-Type": "text/csv"}
        )
        if not uploaded.is_success:
            self._abort(job_id)
            raise SalesforceApiError(
                f"destination '{self.destination}': Bulk API 2.0 upload of job {job_id} "
                f"({len(rows)} rows): {error_text(uploaded)}"
            )
        closed = self.send("PATCH", path, json={"state": "UploadComplete"})
        if not closed.is_success:
            self._abort(job_id)
            raise SalesforceApiError(
                f"destination '{self.destination}': Bulk API 2.0 job {job_id} refused "
                f"UploadComplete: {error_text(closed)}"
            )
        info, timed_out = self._await(job_id)
        state = str(info.get("state"))
        id_column = {"upsert": external_id, "insert": None}.get(operation, "Id")
        self._settle(job_id, operation, header, rows, id_column, state, out, done)
        if state != "JobComplete":
            why = (
                f"did not finish within bulk_timeout_s ({self.config.bulk_timeout_s:g} s) "
                "and was aborted"
                if timed_out
                else f"ended {state}: {info.get('errorMessage') or 'no errorMessage'}"
            )
            raise SalesforceBulkJobError(
                f"destination '{self.destination}': Salesforce Bulk API 2.0 job {job_id} "
                f"({operation} {object_}, {len(rows)} rows) {why}. The rows it processed are "
                "kept; the others were not delivered and go again with the next run. Fix: see "
                "the job in Setup > Bulk Data Load Jobs"
                + (", or raise bulk_timeout_s" if timed_out else "")
            )

    def _abort(self, job_id: str) -> None:
        """Best effort: an open job left behind is only clutter (Salesforce removes it)."""
        # The error that led here is the one to report, not this one's.
        with contextlib.suppress(Exception):
            self.send("PATCH", f"/jobs/ingest/{job_id}", json={"state": "Aborted"})

    def _await(self, job_id: str) -> tuple[dict[str, Any], bool]:
        """The job's info once it is in a final state, and whether it was aborted for taking
        longer than `bulk_timeout_s`."""
        c = self.config
        deadline = time.monotonic() + c.bulk_timeout_s
        wait = c.bulk_poll_interval_s
        while True:
            time.sleep(min(wait, max(deadline - time.monotonic(), 0.0)))
            info = self._json("GET", f"/jobs/ingest/{job_id}", "job info")
            if info.get("state") in TERMINAL:
                return info, False
            if time.monotonic() >= deadline:
                break
            wait = min(wait * POLL_GROWTH, c.bulk_poll_max_s)
        self._abort(job_id)
        info = self._json("GET", f"/jobs/ingest/{job_id}", "job info")
        if info.get("state") not in TERMINAL:
            raise SalesforceBulkJobError(
                f"destination '{self.destination}': Salesforce Bulk API 2.0 job {job_id} is "
                f"still {info.get('state')} after {c.bulk_timeout_s:g} s and could not be "
                "aborted; none of its rows is marked synced. Fix: see the job in Setup > Bulk "
                "Data Load Jobs, or raise bulk_timeout_s"
            )
        return info, info.get("state") != "JobComplete"

    def _results(self, job_id: str, kind: str) -> list[dict[str, str]]:
        response = self.send(
            "GET", f"/jobs/ingest/{job_id}/{kind}/", headers={"Accept": "text/csv"}
        )
        if not response.is_success:
            raise SalesforceApiError(
                f"destination '{self.destination}': Bulk API 2.0 {kind} of job {job_id}: "
                f"{error_text(response)}"
            )
        return read_csv(response.text)

    def _settle(
        self,
        job_id: str,
        operation: str,
        header: Sequence[str],
        rows: list[Row],
        id_column: str | None,
        state: str,
        out: BatchResult,
        done: set[str],
    ) -> None:
        matcher = _Matcher(header, rows, id_column)
        for result in self._results(job_id, "successfulResults"):
            row = matcher.take(result)
            if row is None:
                continue
            done.add(row.record.key)
            if result.get("sf__Id") and operation not in DELETES:
                out.dest_ids[row.record.key] = result["sf__Id"]
        for result in self._results(job_id, "failedResults"):
            row = matcher.take(result)
            if row is None:
                continue
            done.add(row.record.key)
            reason = error_message(result.get("sf__Error") or "")
            if operation in DELETES and reason.startswith("ENTITY_IS_DELETED"):
                continue  # already gone: what a removal wants
            out.rejected[row.record.key] = reason or "failed with no sf__Error"
        if state == "JobComplete":
            for row in matcher.left.values():
                done.add(row.record.key)
                out.rejected[row.record.key] = (
                    f"Salesforce Bulk API 2.0 job {job_id} returned no result for this row; "
                    "it is sent again by the next run"
                )
