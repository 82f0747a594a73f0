"""TikTok's Business API (`https://business-api.tiktok.com/open_api/{version}/...`), as both
TikTok destinations speak it: the `Access-Token` header, and every answer in one envelope,
`{"code", "message", "request_id", "data"}`, mostly with HTTP 200 whatever happened: `code` 0 is
success, anything else an error.

- 40100 and 40132 (requests too frequent), and codes from 50000 up (TikTok's own system,
  timeouts, maintenance), are transient: backed off and retried like a 429 or a 5xx. So is a 2xx
  whose body is no such envelope (a proxy's error page): the request is resent.
- 40001 (no permission on the advertiser or event source) and 40102 / 40104 / 40105 / 40106
  (an expired, missing or invalid token) fail the run, saying what to fix.
- Anything else (40002 parameter errors, 40062 unhashed personal data...) is the caller's to
  reject records with, in TikTok's words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from retl_dagster.destinations.http import HttpClient, error_text
from retl_dagster.destinations.impl.tiktok.config import DEFAULT_RPS, TikTokSettings
from retl_dagster.destinations.impl.tiktok.exceptions import TikTokAuthError

OK = 0
PERMISSION_ERROR = 40001
PARAM_ERROR = 40002
PII_NOT_HASHED = 40062
REQUEST_TOO_FREQUENT = 40100
ACCESS_TOKEN_EXPIRE = 40102
EMPTY_ACCESS_TOKEN = 40104
INVALID_ACCESS_TOKEN = 40105
INVALID_CORE_USER = 40106
REQUEST_FREQUENCY_LIMITED = 40132
SYSTEM_ERRORS_FROM = 50000
"""TikTok's numeric answer codes used here (the `code` of its envelope)."""

THROTTLED = frozenset({REQUEST_TOO_FREQUENT, REQUEST_FREQUENCY_LIMITED})
TOKEN_REFUSED = frozenset(
    {ACCESS_TOKEN_EXPIRE, EMPTY_ACCESS_TOKEN, INVALID_ACCESS_TOKEN, INVALID_CORE_USER}
)


@dataclass(frozen=True)
class Answer:
    """One answer's envelope."""

    code: int
    message: str
    request_id: str
    data: Any

    @property
    def ok(self) -> bool:
        return self.code == OK

    def __str__(self) -> str:
        """TikTok's own words: `message [code N, request_id R]`."""
        return f"{self.message} [code {self.code}, request_id {self.request_id or '-'}]"


def envelope(response: httpx.Response) -> Answer | None:
    """The answer's envelope, or None when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("code"), int):
        return None
    return Answer(
        body["code"],
        str(body.get("message", "")),
        str(body.get("request_id", "")),
        body.get("data"),
    )


def is_transient(response: httpx.Response) -> bool:
    """429, 5xx, TikTok's throttling and system codes, and a 2xx that is no TikTok answer."""
    if response.status_code == 429 or response.status_code >= 500:
        return True
    answer = envelope(response)
    if answer is None:
        return response.is_success
    return answer.code in THROTTLED or answer.code >= SYSTEM_ERRORS_FROM


class TikTokApi:
    """A destination's connection to the Business API."""

    def __init__(self, destination: str, config: TikTokSettings, what: str) -> None:
        self.destination = destination
        self.what = what
        """What the token must reach, for error messages (`pixel X`, `advertiser Y`)."""
        self.prefix = f"/open_api/{config.api_version}"
        self.http = HttpClient(
            destination,
            config,
            base_url=str(config.base_url).rstrip("/"),
            headers={"Access-Token": config.access_token.get_secret_value()},
            default_rps=DEFAULT_RPS,
            refused=self._refused,
            is_transient=is_transient,
        )

    def _refused(self, response: httpx.Response) -> TikTokAuthError:
        answer = envelope(response)
        return self.auth_error(answer) if answer else self._token_error(error_text(response))

    def _token_error(self, said: str) -> TikTokAuthError:
        return TikTokAuthError(
            f"destination '{self.destination}': TikTok refused the access token: {said}. Fix: "
            "generate a new access token (TikTok For Business: Events Manager or the developer "
            "app's authorization) and set it in the environment"
        )

    def auth_error(self, answer: Answer) -> TikTokAuthError:
        if answer.code == PERMISSION_ERROR:
            return TikTokAuthError(
                f"destination '{self.destination}': the access token has no access to "
                f"{self.what}: {answer}. Fix: check the id, and authorize the token for it "
                "(its advertiser account or Business Center)"
            )
        return self._token_error(str(answer))

    def call(self, method: str, path: str, **kwargs: Any) -> Answer:
        """One request to `{prefix}{path}`; its envelope. Raises TikTokAuthError when the token
        is refused, DestinationError when no answer came (after retries) or it is no envelope."""
        response = self.http.request(method, self.prefix + path, **kwargs)
        answer = envelope(response)
        if answer is None:
            answer = Answer(-1, error_text(response), "", None)
        if answer.code == PERMISSION_ERROR or answer.code in TOKEN_REFUSED:
            raise self.auth_error(answer)
        return answer

    def get(self, path: str, params: Mapping[str, Any]) -> Answer:
        return self.call("GET", path, params=dict(params))

    def post(self, path: str, body: Mapping[str, Any]) -> Answer:
        return self.call("POST", path, json=dict(body))

    def close(self) -> None:
        self.http.close()
