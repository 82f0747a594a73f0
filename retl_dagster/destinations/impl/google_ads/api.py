"""Google Ads API over REST: OAuth2 access tokens from a refresh token, the `developer-token`
and `login-customer-id` headers, and Google's error bodies read back into their parts:

`{"error": {"code", "message", "status", "details": [{"@type": ".../GoogleAdsFailure",
"errors": [{"errorCode": {"<kind>Error": "<REASON>"}, "message", "location":
{"fieldPathElements": [{"fieldName", "index"}]}, "details": {"quotaErrorDetails":
{"retryDelay": "30s"}}}]}]}}`; partial failures carry the same `details` in
`partialFailureError`.

429 RESOURCE_EXHAUSTED waits for `retryDelay` (else backoff); a 401 gets one token refresh;
a refused developer token, refresh token or customer access fails the run.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from retl_dagster.destinations.http import HttpClient, error_object, error_text, retry_after_header
from retl_dagster.destinations.impl.google_ads.config import GoogleAdsConfig
from retl_dagster.destinations.impl.google_ads.exceptions import GoogleAdsAuthError

TOKEN_EARLY_S = 60.0
"""Refresh an access token this long before Google says it expires."""


@dataclass
class AdsError:
    """One GoogleAdsError."""

    code: str
    """`<kind>.<REASON>`, e.g. `conversionUploadError.CLICK_NOT_FOUND`."""
    message: str
    path: list[tuple[str, int | None]] = field(default_factory=list)
    retry_delay_s: float | None = None

    def index(self, field_name: str) -> int | None:
        """The index at `field_name` in the error's location (e.g. the operation)."""
        return next((i for name, i in self.path if name == field_name), None)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


def _duration_s(text: Any) -> float | None:
    """A protobuf Duration in JSON (`"30s"`, `"1.5s"`) as seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(text or ""))
    return float(m[1]) if m else None


def parse_errors(status: dict[str, Any] | None) -> list[AdsError]:
    """The GoogleAdsErrors of a google.rpc.Status (an error body's or partialFailureError)."""
    out: list[AdsError] = []
    for detail in (status or {}).get("details") or []:
        for e in detail.get("errors") or []:
            kind, reason = next(iter((e.get("errorCode") or {}).items()), ("", ""))
            path = [
                (str(p.get("fieldName", "")), p.get("index"))
                for p in (e.get("location") or {}).get("fieldPathElements") or []
            ]
            quota = (e.get("details") or {}).get("quotaErrorDetails") or {}
            out.append(
                AdsError(
                    f"{kind}.{reason}" if kind else "",
                    str(e.get("message", "")),
                    path,
                    _duration_s(quota.get("retryDelay")),
                )
            )
    return out


def describe(response: httpx.Response) -> str:
    """Google's own words for a failed request: each error's code and message."""
    status = error_object(response)
    errors = parse_errors(status)
    if errors:
        return "; ".join(str(e) for e in errors)
    if status:
        return f"{status.get('status', response.status_code)}: {status.get('message', '')}"
    return error_text(response)


def wait_hint(response: httpx.Response) -> float | None:
    """Google Ads' `retryDelay` in quota error details, else `Retry-After`."""
    delays = [e.retry_delay_s for e in parse_errors(error_object(response)) if e.retry_delay_s]
    return max(delays) if delays else retry_after_header(response)


def is_transient(response: httpx.Response) -> bool:
    if response.status_code == 429 or response.status_code >= 500:
        return True
    return response.status_code == 409 and error_object(response).get("status") == "ABORTED"


class GoogleAdsApi:
    """One customer account's REST API."""

    def __init__(self, destination: str, config: GoogleAdsConfig) -> None:
        self.destination = destination
        self.config = config
        self.customer_id = config.customer_id.replace("-", "")
        self.http = HttpClient(
            destination,
            config,
            base_url=str(config.base_url).rstrip("/"),
            wait_hint=wait_hint,
            is_transient=is_transient,
        )
        self._token: str | None = None
        self._expires_at = 0.0
        self.token_refreshes = 0

    # -- auth ---------------------------------------------------------------------------------
    def access_token(self, *, force: bool = False) -> str:
        """A live access token, from the refresh token when none is or it is about to expire."""
        if self._token and not force and time.monotonic() < self._expires_at:
            return self._token
        response = self.http.request(
            "POST",
            str(self.config.token_url),
            data={
                "grant_type": "refresh_token",
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret.get_secret_value(),
                "refresh_token": self.config.refresh_token.get_secret_value(),
            },
        )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not response.is_success or "access_token" not in body:
            reason = (
                f"{body.get('error', response.status_code)}: {body.get('error_description', '')}"
            )
            raise GoogleAdsAuthError(
                f"destination '{self.destination}': Google refused the OAuth refresh token "
                f"({reason.strip()}). Fix: check client_id and client_secret, or create a new "
                "refresh token for a user with access to the account"
            )
        self.token_refreshes += 1
        self._token = str(body["access_token"])
        self._expires_at = time.monotonic() + float(body.get("expires_in", 3600)) - TOKEN_EARLY_S
        return self._token

    def _headers(self, *, force_token: bool = False) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.access_token(force=force_token)}",
            "developer-token": self.config.developer_token.get_secret_value(),
        }
        if self.config.login_customer_id:
            headers["login-customer-id"] = self.config.login_customer_id.replace("-", "")
        return headers

    # -- requests -----------------------------------------------------------------------------
    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST `/{version}/{path}`; auth failures raise, anything else is returned."""
        url = f"/{self.config.api_version}/{path}"
        response = self.http.request("POST", url, json=body, headers=self._headers())
        if response.status_code == 401 and not self._developer_token_refused(response):
            # The access token expired or was revoked early: one new token, one more try.
            response = self.http.request(
                "POST", url, json=body, headers=self._headers(force_token=True)
            )
        if response.status_code == 401 or self._developer_token_refused(response):
            raise GoogleAdsAuthError(
                f"destination '{self.destination}': Google Ads refused the credentials: "
                f"{describe(response)}. Fix: check developer_token (approved for this account's "
                "access level) and the OAuth client and refresh token"
            )
        if response.status_code == 403:
            raise GoogleAdsAuthError(
                f"destination '{self.destination}': no access to customer "
                f"{self.customer_id}: {describe(response)}. Fix: give the OAuth user access, "
                "or set login_customer_id to the manager account"
            )
        return response

    @staticmethod
    def _developer_token_refused(response: httpx.Response) -> bool:
        if response.is_success:
            return False
        return any("DEVELOPER_TOKEN" in e.code for e in parse_errors(error_object(response)))

    def close(self) -> None:
        self.http.close()
