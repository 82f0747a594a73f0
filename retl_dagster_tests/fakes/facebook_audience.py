"""A fake Meta Marketing API for Custom Audiences from a customer list (developers.facebook.com:
"Customer File Custom Audiences", the `Custom Audience Users` and `Custom Audience Session`
references, Graph API "Handling Errors" and "Rate Limiting"):

- `POST` and `DELETE /{version}/{audience_id}/users` with `payload` (`schema`, `is_raw`, `data`)
  and `session`, as a JSON body, a form (the SDK's POST) or the query string (the SDK's DELETE),
  JSON-encoded values read as the Graph API reads them; `access_token` among the parameters
  (190 OAuthException when wrong), `appsecret_proof` when the app requires it (100
  GraphMethodException "Invalid appsecret_proof..."); an unknown audience is code 100 / subcode
  33 ("Unsupported post request..."), a flagged one (operation_status 471) code 100 / subcode
  1713230 "Audience Upload Blocked", the documentation's own error;
- a request is refused whole (400, code 100 "Invalid parameter") for more than 10,000 rows, a
  schema key that is not a multi-key schema key, a row whose length differs from the schema's
  (the SDK's words), or a session that breaks the session rules: `session_id` and `batch_seq`
  required, the first request of a session is `batch_seq` 1 and each next one follows the last,
  a session keeps to one audience and one operation, and takes nothing after its
  `last_batch_flag`; a request repeated with the same `batch_seq` (a retry) is answered as the
  first time and applied once. The user-facing texts are paraphrased: Meta documents the rules,
  not every message;
- a row is an invalid entry (counted in `num_invalid_entries`, named in
  `invalid_entry_samples` by its offending value, not added or removed) when a hashed key's
  value is not a SHA-256 hex digest (unhashed contact information), a MADID is neither an
  advertising id nor a digest, every value is empty, or a value is in `invalid` (Meta's own
  judgement of a value, which the tests set);
- too many requests: code 80003 (the Custom Audience rate limit, `is_transient`) with an
  `X-Business-Use-Case-Usage` header giving `estimated_time_to_regain_access` in minutes;
- `GET /{version}/{audience_id}/sessions?session_id=` answers `num_received`,
  `num_invalid_entries` and (once `matching_done`) `num_matched` as numeric strings;
  `GET /{version}/{audience_id}` answers `name`, `subtype`, `operation_status` and
  `approximate_count_lower_bound` / `_upper_bound` (exact here: the people in `known` who are
  members); `GET /{version}/me` answers the token's user;
- every request body is checked against Meta's Business SDK (contracts/facebook_audience.py):
  what breaks its shape is refused (400, code 100), and every problem is recorded in
  `contract_failures`.

A member is one entry (key -> value); a row added with an email, phone, MADID or extern id a
member already has is merged into it, and a removed row takes out every member it points at
(by any of those, else by all its values), as Meta matches a row to a person and adds or removes
that person. Which people Meta can match is the tests' `known`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts import facebook_audience as contract
from retl_dagster_tests.fakes.base import FakeServer
from retl_dagster_tests.fakes.facebook import _json, graph_error

MAX_ROWS = 10_000
MAX_SAMPLES = 10
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MADID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HASHED = frozenset(contract.multi_keys()) - {"EXTERN_ID", "MADID"}
STANDALONE = frozenset({"EXTERN_ID", "EMAIL", "PHONE", "MADID"})


@dataclass
class FakeAudience:
    """A customer list: its members, one entry (schema key -> value) a person."""

    name: str
    subtype: str = "CUSTOM"
    flagged: bool = False
    members: dict[int, dict[str, str]] = field(default_factory=dict)
    index: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    next_id: int = 0

    def matching(self, row: dict[str, str]) -> set[int]:
        """The members a row points at: by any of its email, phone, MADID or extern id, else
        by all of its values (a name with a place)."""
        ids: set[int] = set()
        for key in STANDALONE & row.keys():
            ids |= self.index.get((key, row[key]), set())
        if not STANDALONE & row.keys():
            ids = {i for i, m in self.members.items() if row.items() <= m.items()}
        return ids

    def add(self, row: dict[str, str]) -> None:
        ids = self.matching(row) if STANDALONE & row.keys() else set()
        if ids:
            member = min(ids)
            self.members[member] |= row
        else:
            member, self.next_id = self.next_id, self.next_id + 1
            self.members[member] = dict(row)
        for pair in row.items():
            self.index.setdefault(pair, set()).add(member)

    def remove(self, row: dict[str, str]) -> None:
        for member in self.matching(row):
            for pair in self.members.pop(member).items():
                self.index[pair].discard(member)


@dataclass
class FakeSession:
    audience: str
    method: str
    last_seq: int = 0
    ended: bool = False
    received: int = 0
    invalid: int = 0
    matched: int = 0
    estimated: int | None = None
    answers: dict[int, dict[str, Any]] = field(default_factory=dict)
    start_time: int = field(default_factory=lambda: int(dt.datetime.now(dt.UTC).timestamp()))
    end_time: int = 0


@dataclass
class Upload:
    """One applied request, as the tests inspect it."""

    method: str
    audience: str
    schema: list[str]
    rows: list[list[str]]
    session: dict[str, Any] | None


def _invalid_parameter(user_msg: str, title: str = "Invalid Parameter") -> Response:
    return graph_error(400, "Invalid parameter", 100, title=title, user_msg=user_msg)


class FakeMetaAudiences(FakeServer):
    url_map = Map(
        [
            Rule("/<version>/me", endpoint="get_me", methods=["GET"]),
            Rule("/<version>/<audience_id>/users", endpoint="users", methods=["POST", "DELETE"]),
            Rule("/<version>/<audience_id>/sessions", endpoint="get_sessions", methods=["GET"]),
            Rule("/<version>/<audience_id>", endpoint="get_audience", methods=["GET"]),
        ]
    )

    def __init__(
        self,
        access_token: str,
        audiences: dict[str, str],
        app_secret: str | None = None,
        rate_limit: int | None = None,
        window_s: float = 1.0,
    ) -> None:
        super().__init__(rate_limit, window_s)
        # Shut down within 50 ms, not the server's default half second (tests start many).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.access_token = access_token
        self.app_secret = app_secret
        self.audiences = {aid: FakeAudience(name) for aid, name in audiences.items()}
        self.sessions: dict[int, FakeSession] = {}
        self.uploads: list[Upload] = []
        self.known: dict[str, int] = {}
        """value -> person: the people Meta can match (an email hash, a phone hash...)."""
        self.matching_done = True
        """False: sessions report no num_matched yet (Meta matches asynchronously)."""
        self.invalid: dict[str, str] = {}
        """value -> reason: values Meta counts invalid though they are well formed."""
        self.regain_minutes = 1
        self.contract_failures: list[list[str]] = []

    def know(self, person: int, *values: str) -> None:
        for value in values:
            self.known[value] = person

    def members(self, audience: str, key: str = "EMAIL") -> set[str]:
        """The values of `key` among the audience's members."""
        found = (m.get(key) for m in self.audiences[audience].members.values())
        return {v for v in found if v}

    def rate_limited(self, request: Request) -> Response:
        response = graph_error(
            400,
            "(#80003) There have been too many calls to this ad-account. Wait a bit and try "
            "again. For more info, please refer to https://developers.facebook.com/docs/graph-api/"
            "overview/rate-limiting#custom-audience.",
            80003,
            subcode=2446079,
            transient=True,
        )
        usage = [
            {
                "type": "custom_audience",
                "call_count": 100,
                "total_cputime": 20,
                "total_time": 30,
                "estimated_time_to_regain_access": self.regain_minutes,
            }
        ]
        response.headers["X-Business-Use-Case-Usage"] = json.dumps({"1000": usage})
        return response

    # -- parameters and credentials ----------------------------------------------------------
    @staticmethod
    def _params(request: Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.args)
        params |= dict(request.form)
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            params |= body
        for key in ("payload", "session"):
            if isinstance(params.get(key), str):
                with contextlib.suppress(ValueError):  # not JSON: the checks below say so
                    params[key] = json.loads(params[key])
        return params

    def _refused(self, params: dict[str, Any]) -> Response | None:
        token = params.get("access_token")
        if token != self.access_token:
            return graph_error(400, "Invalid OAuth access token - Cannot parse access token", 190)
        if self.app_secret is not None:
            proof = hmac.new(
                self.app_secret.encode(), str(token).encode(), hashlib.sha256
            ).hexdigest()
            if params.get("appsecret_proof") != proof:
                return graph_error(
                    400,
                    "Invalid appsecret_proof provided in the API argument",
                    100,
                    type_="GraphMethodException",
                )
        return None

    def _unknown(self, verb: str, audience_id: str) -> Response:
        return graph_error(
            400,
            f"Unsupported {verb} request. Object with ID '{audience_id}' does not exist, cannot be "
            "loaded due to missing permissions, or does not support this operation. Please read "
            "the Graph API documentation at https://developers.facebook.com/docs/graph-api",
            100,
            subcode=33,
            type_="GraphMethodException",
        )

    # -- reads ---------------------------------------------------------------------------------
    def get_me(self, request: Request, version: str) -> Response:
        if (refused := self._refused(self._params(request))) is not None:
            return refused
        return _json(200, {"id": "1000", "name": "retl system user"})

    def _size(self, audience: FakeAudience) -> int:
        """Members Meta matched to a person."""
        people = (m.values() for m in audience.members.values())
        return sum(1 for values in people if any(v in self.known for v in values))

    def get_audience(self, request: Request, version: str, audience_id: str) -> Response:
        params = self._params(request)
        if (refused := self._refused(params)) is not None:
            return refused
        audience = self.audiences.get(audience_id)
        if audience is None:
            return self._unknown("get", audience_id)
        size = self._size(audience)
        node = {
            "id": audience_id,
            "name": audience.name,
            "subtype": audience.subtype,
            "approximate_count_lower_bound": size,
            "approximate_count_upper_bound": size,
            "operation_status": {"code": 471, "description": "Flagged"}
            if audience.flagged
            else {"code": 200, "description": "Normal"},
        }
        fields = str(params.get("fields", "id")).split(",")
        return _json(200, {k: v for k, v in node.items() if k in fields or k == "id"})

    def get_sessions(self, request: Request, version: str, audience_id: str) -> Response:
        params = self._params(request)
        if (refused := self._refused(params)) is not None:
            return refused
        if audience_id not in self.audiences:
            return self._unknown("get", audience_id)
        wanted = params.get("session_id")
        rows = []
        for sid, s in self.sessions.items():
            if s.audience != audience_id or (wanted is not None and str(sid) != str(wanted)):
                continue
            row = {
                "session_id": str(sid),
                "start_time": str(s.start_time),
                "end_time": str(s.end_time),
                "num_received": str(s.received),
                "num_invalid_entries": str(s.invalid),
                "stage": "finished" if s.ended and self.matching_done else "processing",
            }
            if self.matching_done:
                row["num_matched"] = str(s.matched)
            rows.append(row)
        return _json(200, {"data": rows})

    # -- writes --------------------------------------------------------------------------------
    def _entry_problem(self, schema: list[str], row: list[Any]) -> str | None:
        values = [v for v in row if v not in ("", None)]
        if not values:
            return "Empty entry"
        for key, value in zip(schema, row, strict=True):
            if value in ("", None):
                continue
            if str(value) in self.invalid:
                return self.invalid[str(value)]
            if key == "MADID" and not (_SHA256.match(str(value)) or _MADID.match(str(value))):
                return "Invalid mobile advertiser ID"
            if key in HASHED and not _SHA256.match(str(value)):
                return f"Invalid format: {key} must be hashed with SHA-256"
        return None

    def users(self, request: Request, version: str, audience_id: str) -> Response:
        params = self._params(request)
        verb = "post" if request.method == "POST" else "delete"
        if (refused := self._refused(params)) is not None:
            return refused
        audience = self.audiences.get(audience_id)
        if audience is None:
            return self._unknown(verb, audience_id)
        if audience.flagged:
            return graph_error(
                400,
                "Invalid parameter",
                100,
                subcode=1713230,
                title="Audience Upload Blocked",
                user_msg="Before updating user memberships, you must resolve integrity "
                "restrictions on this Data File Custom Audience. Go to Audience Manager to appeal "
                "the restrictions or create a new audience with updated data",
            )
        found = contract.problems(params)
        if found:
            self.contract_failures.append(found)
        payload = params.get("payload")
        if not isinstance(payload, dict):
            return graph_error(400, "(#100) The parameter payload is required", 100)
        schema, data = payload.get("schema"), payload.get("data")
        if not isinstance(schema, list) or not all(k in contract.multi_keys() for k in schema):
            return _invalid_parameter(f"Invalid schema: {schema!r}", "Invalid Schema")
        if not isinstance(data, list) or not data:
            return graph_error(400, "(#100) The parameter payload.data is required", 100)
        if len(data) > MAX_ROWS:
            return _invalid_parameter(
                f"You can add at most {MAX_ROWS} users a request; this one had {len(data)}.",
                "Too Many Users",
            )
        if any(not isinstance(row, list) or len(row) != len(schema) for row in data):
            return _invalid_parameter(
                "Number of keys in each list in the data should match the number of keys "
                "specified in scheme",
                "Invalid Data",
            )
        if shape := contract.shape_problems(params):
            return _invalid_parameter("; ".join(shape[:5]))
        session_info = params.get("session")
        session: FakeSession | None = None
        if session_info is not None:
            sid, seq = session_info["session_id"], session_info["batch_seq"]
            session = self.sessions.get(sid)
            if session is None:
                if seq != 1:
                    return _invalid_parameter(
                        f"Session {sid} is unknown: its first request must have batch_seq 1.",
                        "Invalid Session",
                    )
                session = FakeSession(audience_id, request.method)
                self.sessions[sid] = session
            elif session.audience != audience_id or session.method != request.method:
                return _invalid_parameter(
                    f"Session {sid} belongs to another audience or operation.", "Invalid Session"
                )
            elif seq in session.answers:
                return _json(200, session.answers[seq])  # a retry: applied once
            elif session.ended:
                return _invalid_parameter(
                    f"Session {sid} has ended (its last batch was received).", "Session Ended"
                )
            elif seq != session.last_seq + 1:
                return _invalid_parameter(
                    f"batch_seq {seq} does not follow {session.last_seq} in session {sid}.",
                    "Invalid Session",
                )
        samples: dict[str, str] = {}
        invalid = matched = 0
        applied: list[list[str]] = []
        for row in data:
            problem = self._entry_problem(schema, row)
            if problem is not None:
                invalid += 1
                if len(samples) < MAX_SAMPLES:
                    bad = next(
                        (
                            str(v)
                            for k, v in zip(schema, row, strict=True)
                            if v not in ("", None) and self._entry_problem([k], [v]) is not None
                        ),
                        "",
                    )
                    samples[bad] = problem
                continue
            entry = {k: str(v) for k, v in zip(schema, row, strict=True) if v}
            if any(v in self.known for v in entry.values()):
                matched += 1
            if request.method == "POST":
                audience.add(entry)
            else:
                audience.remove(entry)
            applied.append([str(v) for v in row])
        self.uploads.append(Upload(request.method, audience_id, schema, applied, session_info))
        answer: dict[str, Any] = {
            "audience_id": audience_id,
            "session_id": str(session_info["session_id"] if session_info else secrets.randbits(60)),
            "num_received": len(data),
            "num_invalid_entries": invalid,
            "invalid_entry_samples": samples,
        }
        if session is not None and session_info is not None:
            seq = session_info["batch_seq"]
            session.last_seq = seq
            session.answers[seq] = answer
            session.received += len(data)
            session.invalid += invalid
            session.matched += matched
            session.estimated = session_info.get("estimated_num_total")
            if session_info.get("last_batch_flag"):
                session.ended = True
                session.end_time = int(dt.datetime.now(dt.UTC).timestamp())
        return _json(200, answer)
