"""A fake Google Ads API (REST, developers.google.com/google-ads/api) and its OAuth2 token
endpoint:

- `POST /token` (grant_type=refresh_token, client_id, client_secret, refresh_token) ->
  `{"access_token", "expires_in", "token_type"}`; a wrong client or refresh token is 400
  `{"error": "invalid_grant" | "invalid_client", "error_description"}`;
- every API call needs `Authorization: Bearer <issued token>` (else 401 UNAUTHENTICATED,
  authenticationError), the `developer-token` header (else 401 with
  authenticationError.DEVELOPER_TOKEN_INVALID) and, when the account is reached through a
  manager, `login-customer-id` (else 403 PERMISSION_DENIED, authorizationError
  USER_PERMISSION_DENIED with Google's hint about the header);
- errors as Google sends them: `{"error": {"code", "message", "status", "details": [{"@type":
  "type.googleapis.com/google.ads.googleads.<v>.errors.GoogleAdsFailure", "errors":
  [{"errorCode", "message", "location": {"fieldPathElements"}}], "requestId"}]}}`;
- a quota (`rate_limit` requests per `window_s`, set low in tests): 429 RESOURCE_EXHAUSTED,
  quotaError.RESOURCE_TEMPORARILY_EXHAUSTED with `quotaErrorDetails.retryDelay`;
- `customers/{id}:uploadClickConversions`: partialFailure must be true
  (PARTIAL_FAILURE_MODE_REQUIRED), at most 2,000 conversions (TOO_MANY_CONVERSIONS_IN_REQUEST);
  per conversion: the conversion action must exist, `conversionDateTime` must read
  `yyyy-mm-dd hh:mm:ss+|-hh:mm`, one click id at most; a gclid that does not decode is
  UNPARSEABLE_GCLID, one the fake never saw is CLICK_NOT_FOUND (so is a conversion with only
  identifiers whose email the fake does not know), and the same click + action + time again is
  CLICK_CONVERSION_ALREADY_EXISTS (counted in `duplicates`); failed conversions get `{}` in
  `results` and an error located at `conversions[i]` in `partialFailureError`;
- offline user data jobs for Customer Match: `offlineUserDataJobs:create` (type
  CUSTOMER_MATCH_USER_LIST, an existing user list), `:addOperations` (at most 100,000
  identifiers a request and 20 an operation: TOO_MANY_USER_IDENTIFIERS; create and remove in
  one job: CONFLICTING_OPERATION; hashed values must be SHA-256 hex: INVALID_SHA256_FORMAT;
  countryCode must be an ISO 3166 alpha-2 code: INVALID_COUNTRY_CODE; with
  enablePartialFailure only the bad operations fail), `:run` (applies the operations to the
  list at once; Google takes up to a day);
- every API request body is parsed into its request proto of the `google-ads` package with
  unknown fields refused and held to what the service accepts (contracts/google_ads.py): a
  body that fails is a 400 INVALID_ARGUMENT (a google.rpc.BadRequest when it does not parse,
  a GoogleAdsFailure such as conversionUploadError.UNSUPPORTED_USER_IDENTIFIER for an
  addressInfo on a click conversion), recorded in `contract_failures`;
- `googleAds:search` of `user_list.match_rate_percentage`: the share of the list's hashed
  emails the fake "knows" (`known_emails`), left out while `match_rate_ready` is false.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections import Counter
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts import google_ads as contract
from retl_dagster_tests.fakes.base import FakeServer

MAX_CONVERSIONS = 2000
MAX_IDENTIFIERS = 100_000
MAX_IDENTIFIERS_PER_OPERATION = 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GCLID = re.compile(r"^[A-Za-z0-9_-]{20,}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
COUNTRIES = {"US", "CA", "GB", "FR", "DE", "ES", "IT", "NL", "BE", "JP", "AU", "BR", "IN", "MX"}
"""Enough of ISO 3166-1 alpha-2 for the tests."""


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def ads_error(kind: str, reason: str, message: str, *path: tuple[str, int | None]) -> dict:
    error: dict[str, Any] = {"errorCode": {kind: reason}, "message": message}
    if path:
        error["location"] = {
            "fieldPathElements": [
                {"fieldName": name, **({"index": i} if i is not None else {})} for name, i in path
            ]
        }
    return error


class FakeGoogleAds(FakeServer):
    url_map = Map(
        [
            Rule("/token", endpoint="token", methods=["POST"]),
            Rule(
                "/<version>/customers/<cid>:uploadClickConversions",
                endpoint="upload_click_conversions",
                methods=["POST"],
            ),
            Rule(
                "/<version>/customers/<cid>/offlineUserDataJobs:create",
                endpoint="create_job",
                methods=["POST"],
            ),
            Rule(
                "/<version>/customers/<cid>/offlineUserDataJobs/<job_id>:addOperations",
                endpoint="add_operations",
                methods=["POST"],
            ),
            Rule(
                "/<version>/customers/<cid>/offlineUserDataJobs/<job_id>:run",
                endpoint="run_job",
                methods=["POST"],
            ),
            Rule(
                "/<version>/customers/<cid>/googleAds:search", endpoint="search", methods=["POST"]
            ),
        ]
    )

    def __init__(
        self,
        *,
        customer_id: str,
        developer_token: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        manager_id: str | None = None,
        rate_limit: int | None = None,
        window_s: float = 1.0,
    ) -> None:
        super().__init__(rate_limit, window_s)
        self.version = "v25"
        self.customer_id = customer_id
        self.developer_token = developer_token
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_token = refresh_token
        self.manager_id = manager_id
        self.access_tokens: set[str] = set()
        self.token_requests = 0
        self.max_token_uses: int | None = None
        """Each access token dies after this many API calls (an early expiry): then 401."""
        self._token_uses: Counter[str] = Counter()
        self.conversion_actions: set[str] = set()
        self.clicks: set[str] = set()
        """gclids of clicks the fake 'served'."""
        self.known_emails: set[str] = set()
        """Hashed emails of people the fake 'knows' (Google accounts)."""
        self.conversions: list[dict[str, Any]] = []
        self.duplicates = 0
        self.user_lists: dict[str, set[str]] = {}
        """user list id -> its members' identifiers (canonical JSON of each identifier)."""
        self.jobs: dict[str, dict[str, Any]] = {}
        self.match_rate_ready = True
        self._ids = itertools.count(1000)
        self._seen_conversions: set[tuple[str, str, str]] = set()
        self.contract_failures: list[list[contract.Violation]] = []
        """The violations of each request whose body broke the API's contract."""

    # -- helpers ------------------------------------------------------------------------------
    def failure(self, status: int, rpc: str, message: str, errors: list[dict]) -> Response:
        return _json(
            status,
            {
                "error": {
                    "code": status,
                    "message": message,
                    "status": rpc,
                    "details": [self._details(errors)],
                }
            },
        )

    def _details(self, errors: list[dict]) -> dict[str, Any]:
        return {
            "@type": f"type.googleapis.com/google.ads.googleads.{self.version}.errors."
            "GoogleAdsFailure",
            "errors": errors,
            "requestId": secrets.token_urlsafe(16),
        }

    def partial_failure(self, errors: list[dict]) -> dict[str, Any]:
        """A google.rpc.Status for the `partialFailureError` field (code 3 INVALID_ARGUMENT)."""
        first = errors[0]
        where = ".".join(
            p["fieldName"] + (f"[{p['index']}]" if "index" in p else "")
            for p in first.get("location", {}).get("fieldPathElements", [])
        )
        return {
            "code": 3,
            "message": f"{first['message']}, at {where}",
            "details": [self._details(errors)],
        }

    def rate_limited(self, request: Request) -> Response:
        error = ads_error(
            "quotaError", "RESOURCE_TEMPORARILY_EXHAUSTED", "Too many requests. Retry in 1 seconds."
        )
        error["details"] = {
            "quotaErrorDetails": {
                "rateScope": "DEVELOPER",
                "rateName": "Number of operations for basic access",
                "retryDelay": "1s",
            }
        }
        return self.failure(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.", [error])

    def _auth(self, request: Request, cid: str) -> Response | None:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        self._token_uses[token] += 1
        if self.max_token_uses is not None and self._token_uses[token] > self.max_token_uses:
            self.access_tokens.discard(token)
        if token not in self.access_tokens:
            return self.failure(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
                [
                    ads_error(
                        "authenticationError", "OAUTH_TOKEN_INVALID", "Oauth token is invalid."
                    )
                ],
            )
        if request.headers.get("developer-token") != self.developer_token:
            return self.failure(
                401,
                "UNAUTHENTICATED",
                "Request is missing required authentication credential.",
                [
                    ads_error(
                        "authenticationError",
                        "DEVELOPER_TOKEN_INVALID",
                        "The developer token is not valid.",
                    )
                ],
            )
        if cid != self.customer_id or (
            self.manager_id and request.headers.get("login-customer-id") != self.manager_id
        ):
            return self.failure(
                403,
                "PERMISSION_DENIED",
                "The caller does not have permission",
                [
                    ads_error(
                        "authorizationError",
                        "USER_PERMISSION_DENIED",
                        "User doesn't have permission to access customer. Note: If you're "
                        "accessing a client customer, the manager's customer id must be set in "
                        "the 'login-customer-id' header. See "
                        "https://developers.google.com/google-ads/api/docs/concepts/"
                        "call-structure#cid",
                    )
                ],
            )
        # Credentials pass: every API call's body is then held to the API's contract.
        return self._contract(request)

    def _contract(self, request: Request) -> Response | None:
        """The body against Google's own request proto and the service's rules."""
        found = contract.violations(request.path, request.get_json(silent=True))
        if not found:
            return None
        self.contract_failures.append(found)
        if any(v.code is None for v in found):  # does not parse: JSON transcoding's answer
            return _json(
                400,
                {
                    "error": {
                        "code": 400,
                        "message": found[0].message,
                        "status": "INVALID_ARGUMENT",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.rpc.BadRequest",
                                "fieldViolations": [{"description": v.message} for v in found],
                            }
                        ],
                    }
                },
            )
        errors = [ads_error(*v.code, v.message, *v.path) for v in found if v.code]
        return self.failure(
            400, "INVALID_ARGUMENT", "Request contains an invalid argument.", errors
        )

    def _not_pending(self) -> Response:
        # Google's exact error code for this is not documented; the fake only refuses it.
        return self.failure(400, "FAILED_PRECONDITION", "The job has already been run.", [])

    def revoke_access_tokens(self) -> None:
        """Access tokens die early (as when a user changes password): the next call is a 401."""
        self.access_tokens.clear()

    def members(self, list_id: str, kind: str = "hashedEmail") -> set[str]:
        """The list's identifiers of one kind (hashedEmail, hashedPhoneNumber, addressInfo)."""
        out = set()
        for m in self.user_lists[list_id]:
            ident = json.loads(m)
            if kind in ident:
                value = ident[kind]
                out.add(value if isinstance(value, str) else json.dumps(value, sort_keys=True))
        return out

    # -- OAuth --------------------------------------------------------------------------------
    def token(self, request: Request) -> Response:
        self.token_requests += 1
        form = request.form
        if form.get("grant_type") != "refresh_token":
            return _json(400, {"error": "unsupported_grant_type", "error_description": ""})
        if form.get("client_id") != self.client_id or form.get("client_secret") != (
            self.client_secret
        ):
            return _json(
                401,
                {"error": "invalid_client", "error_description": "The OAuth client was not found."},
            )
        if form.get("refresh_token") != self.refresh_token:
            return _json(
                400,
                {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                },
            )
        token = "ya29.fake-" + secrets.token_urlsafe(12)
        self.access_tokens.add(token)
        return _json(
            200,
            {
                "access_token": token,
                "expires_in": 3599,
                "scope": "https://www.googleapis.com/auth/adwords",
                "token_type": "Bearer",
            },
        )

    # -- click conversions --------------------------------------------------------------------
    def _conversion_error(self, i: int, c: dict[str, Any]) -> dict | None:
        action = c.get("conversionAction", "")
        m = re.fullmatch(rf"customers/{self.customer_id}/conversionActions/(\d+)", action)
        if not m or m[1] not in self.conversion_actions:
            return ads_error(
                "conversionUploadError",
                "INVALID_CONVERSION_ACTION",
                "The conversion action specified in the upload request cannot be found. Make "
                "sure it's available in this account.",
                ("conversions", i),
                ("conversion_action", None),
            )
        if not _DATE_TIME.match(str(c.get("conversionDateTime", ""))):
            return ads_error(
                "dateError",
                "INVALID_FIELD_VALUES_IN_DATE_TIME",
                "The field values are not valid for date time.",
                ("conversions", i),
                ("conversion_date_time", None),
            )
        clicks = [k for k in ("gclid", "gbraid", "wbraid") if c.get(k)]
        if len(clicks) > 1:
            return ads_error(
                "conversionUploadError",
                "GBRAID_WBRAID_BOTH_SET",
                "Only one of gclid, gbraid and wbraid can be set.",
                ("conversions", i),
            )
        for ident in c.get("userIdentifiers", []):
            for v in (ident.get("hashedEmail"), ident.get("hashedPhoneNumber")):
                if v is not None and not _SHA256.match(v):
                    return ads_error(
                        "fieldError",
                        "INVALID_VALUE",
                        "The field's value is invalid: a SHA-256 hex digest is expected.",
                        ("conversions", i),
                        ("user_identifiers", None),
                    )
        if c.get("gclid"):
            if not _GCLID.match(c["gclid"]):
                return ads_error(
                    "conversionUploadError",
                    "UNPARSEABLE_GCLID",
                    "The imported gclid could not be decoded.",
                    ("conversions", i),
                    ("gclid", None),
                )
            if c["gclid"] not in self.clicks:
                return self._click_not_found(i)
        elif not clicks:
            emails = {u.get("hashedEmail") for u in c.get("userIdentifiers", [])}
            if not emails & self.known_emails:
                return self._click_not_found(i)
        dedup = (
            str(c.get("gclid") or c.get("orderId")),
            action,
            str(c["conversionDateTime"]),
        )
        if dedup in self._seen_conversions:
            self.duplicates += 1
            return ads_error(
                "conversionUploadError",
                "CLICK_CONVERSION_ALREADY_EXISTS",
                "The imported event has the same click and conversion_date_time as an existing "
                "conversion. Use a unique conversion_date_time or order ID for each unique event "
                "and try again.",
                ("conversions", i),
            )
        return None

    @staticmethod
    def _click_not_found(i: int) -> dict:
        return ads_error(
            "conversionUploadError",
            "CLICK_NOT_FOUND",
            "The email address or phone number for this event can't be matched to a click. "
            "This may be because it didn't come from a Google Ads campaign, and you can safely "
            "ignore this warning. If this includes more imported events than is expected, you "
            "may need to check your setup.",
            ("conversions", i),
        )

    def upload_click_conversions(self, request: Request, version: str, cid: str) -> Response:
        if (bad := self._auth(request, cid)) is not None:
            return bad
        body = request.get_json()
        if not body.get("partialFailure"):
            return self.failure(
                400,
                "INVALID_ARGUMENT",
                "Request contains an invalid argument.",
                [
                    ads_error(
                        "partialFailureError",
                        "PARTIAL_FAILURE_MODE_REQUIRED",
                        "The partial failure field was false in the request. This method "
                        "requires this field be set to true.",
                    )
                ],
            )
        conversions = body.get("conversions") or []
        if len(conversions) > MAX_CONVERSIONS:
            return self.failure(
                400,
                "INVALID_ARGUMENT",
                "Request contains an invalid argument.",
                [
                    ads_error(
                        "conversionUploadError",
                        "TOO_MANY_CONVERSIONS_IN_REQUEST",
                        "Upload fewer than 2001 events in a single request.",
                    )
                ],
            )
        results: list[dict[str, Any]] = []
        errors: list[dict] = []
        for i, c in enumerate(conversions):
            error = self._conversion_error(i, c)
            if error:
                errors.append(error)
                results.append({})
                continue
            self._seen_conversions.add(
                (
                    str(c.get("gclid") or c.get("orderId")),
                    c["conversionAction"],
                    c["conversionDateTime"],
                )
            )
            self.conversions.append(c)
            result = {
                k: c[k] for k in ("gclid", "conversionAction", "conversionDateTime") if k in c
            }
            if "userIdentifiers" in c and "gclid" not in c:
                result["userIdentifiers"] = c["userIdentifiers"]
            results.append(result)
        answer: dict[str, Any] = {"results": results, "jobId": str(next(self._ids))}
        if errors:
            answer["partialFailureError"] = self.partial_failure(errors)
        return _json(200, answer)

    # -- Customer Match -----------------------------------------------------------------------
    def create_job(self, request: Request, version: str, cid: str) -> Response:
        if (bad := self._auth(request, cid)) is not None:
            return bad
        job = (request.get_json() or {}).get("job") or {}
        user_list = (job.get("customerMatchUserListMetadata") or {}).get("userList", "")
        m = re.fullmatch(rf"customers/{cid}/userLists/(\d+)", user_list)
        if job.get("type") != "CUSTOMER_MATCH_USER_LIST" or not m or m[1] not in self.user_lists:
            return self.failure(
                400,
                "INVALID_ARGUMENT",
                "Request contains an invalid argument.",
                [
                    ads_error(
                        "offlineUserDataJobError",
                        "INVALID_USER_LIST_ID",
                        "The user list ID provided for the job is invalid.",
                        ("job", None),
                    )
                ],
            )
        job_id = str(next(self._ids))
        self.jobs[job_id] = {
            "list": m[1],
            "status": "PENDING",
            "operations": [],
            "consent": (job.get("customerMatchUserListMetadata") or {}).get("consent"),
        }
        return _json(200, {"resourceName": f"customers/{cid}/offlineUserDataJobs/{job_id}"})

    def _operation_error(self, i: int, op: dict[str, Any]) -> dict | None:
        kind = "create" if "create" in op else "remove"
        identifiers = (op.get(kind) or {}).get("userIdentifiers") or []
        if len(identifiers) > MAX_IDENTIFIERS_PER_OPERATION:
            return ads_error(
                "offlineUserDataJobError",
                "TOO_MANY_USER_IDENTIFIERS",
                "Maximum number of user identifiers allowed per request is 100,000 and per "
                "operation is 20.",
                ("operations", i),
            )
        for j, ident in enumerate(identifiers):
            address = ident.get("addressInfo") or {}
            hashed = [ident.get("hashedEmail"), ident.get("hashedPhoneNumber")]
            hashed += [address.get("hashedFirstName"), address.get("hashedLastName")]
            if any(v is not None and not _SHA256.match(v) for v in hashed):
                return ads_error(
                    "offlineUserDataJobError",
                    "INVALID_SHA256_FORMAT",
                    "The SHA256 encoded value is malformed.",
                    ("operations", i),
                    (kind, None),
                    ("user_identifiers", j),
                )
            if address and address.get("countryCode") not in COUNTRIES:
                return ads_error(
                    "offlineUserDataJobError",
                    "INVALID_COUNTRY_CODE",
                    "The country code is invalid.",
                    ("operations", i),
                    (kind, None),
                    ("user_identifiers", j),
                    ("address_info", None),
                    ("country_code", None),
                )
        return None

    def add_operations(self, request: Request, version: str, cid: str, job_id: str) -> Response:
        if (bad := self._auth(request, cid)) is not None:
            return bad
        job = self.jobs.get(job_id)
        body = request.get_json() or {}
        operations = body.get("operations") or []
        if job is None:
            return self.failure(404, "NOT_FOUND", "Requested entity was not found.", [])
        if job["status"] != "PENDING":
            return self._not_pending()
        total = sum(len((o.get("create") or o.get("remove") or {}).get("userIdentifiers") or [])
                    for o in operations)  # fmt: skip
        kinds = {
            k for o in [*job["operations"], *operations] for k in o if k in ("create", "remove")
        }
        if total > MAX_IDENTIFIERS or len(kinds) > 1:
            reason, message = (
                ("CONFLICTING_OPERATION", "Mixing creation and removal of offline data in the "
                 "same job is not allowed.")
                if len(kinds) > 1
                else ("TOO_MANY_USER_IDENTIFIERS", "Maximum number of user identifiers allowed "
                      "per request is 100,000 and per operation is 20.")
            )  # fmt: skip
            return self.failure(
                400,
                "INVALID_ARGUMENT",
                "Request contains an invalid argument.",
                [ads_error("offlineUserDataJobError", reason, message)],
            )
        errors = [e for i, op in enumerate(operations) if (e := self._operation_error(i, op))]
        if errors and not body.get("enablePartialFailure"):
            return self.failure(
                400, "INVALID_ARGUMENT", "Request contains an invalid argument.", errors
            )
        failed = {e["location"]["fieldPathElements"][0]["index"] for e in errors}
        job["operations"] += [op for i, op in enumerate(operations) if i not in failed]
        return _json(200, {"partialFailureError": self.partial_failure(errors)} if errors else {})

    def run_job(self, request: Request, version: str, cid: str, job_id: str) -> Response:
        if (bad := self._auth(request, cid)) is not None:
            return bad
        job = self.jobs.get(job_id)
        if job is None:
            return self.failure(404, "NOT_FOUND", "Requested entity was not found.", [])
        if job["status"] != "PENDING":
            return self._not_pending()
        members = self.user_lists[job["list"]]
        for op in job["operations"]:
            kind = "create" if "create" in op else "remove"
            for ident in op[kind].get("userIdentifiers", []):
                key = json.dumps(ident, sort_keys=True, separators=(",", ":"))
                (members.add if kind == "create" else members.discard)(key)
        job["status"] = "SUCCESS"
        return _json(
            200,
            {
                "name": f"customers/{cid}/operations/{next(self._ids)}",
                "metadata": {"@type": "type.googleapis.com/google.ads.googleads."
                             f"{self.version}.resources.OfflineUserDataJobMetadata"},
            },
        )  # fmt: skip

    def search(self, request: Request, version: str, cid: str) -> Response:
        if (bad := self._auth(request, cid)) is not None:
            return bad
        query = (request.get_json() or {}).get("query", "")
        if re.fullmatch(r"SELECT\s+customer\.id\s+FROM\s+customer(\s+LIMIT\s+\d+)?", query, re.I):
            return _json(
                200,
                {
                    "results": [{"customer": {"resourceName": f"customers/{cid}", "id": cid}}],
                    "fieldMask": "customer.id",
                },
            )
        m = re.search(r"FROM\s+user_list\s+WHERE\s+user_list\.id\s*=\s*(\d+)", query, re.I)
        if not m:
            return self.failure(
                400,
                "INVALID_ARGUMENT",
                "Request contains an invalid argument.",
                [ads_error("queryError", "PROHIBITED_RESOURCE_TYPE_IN_SELECT_CLAUSE",
                           "The fake answers user_list queries by id only.", ("query", None))],
            )  # fmt: skip
        list_id = m[1]
        if list_id not in self.user_lists:
            return _json(200, {"results": [], "fieldMask": "userList.id"})
        emails = self.members(list_id)
        known = len(emails & self.known_emails)
        row: dict[str, Any] = {
            "resourceName": f"customers/{cid}/userLists/{list_id}",
            "id": list_id,
            "sizeForSearch": str(known),
        }
        if self.match_rate_ready and emails:
            row["matchRatePercentage"] = round(100 * known / len(emails))
        return _json(
            200,
            {
                "results": [{"userList": row}],
                "fieldMask": "userList.id,userList.matchRatePercentage,userList.sizeForSearch",
            },
        )

    def operation_counts(self) -> Counter[str]:
        """How many create / remove operations the jobs received."""
        return Counter(k for j in self.jobs.values() for o in j["operations"] for k in o)
