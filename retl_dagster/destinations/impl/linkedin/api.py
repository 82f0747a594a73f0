"""LinkedIn's versioned Marketing API (`https://api.linkedin.com/rest`) as both destinations
use it: Rest.li protocol 2.0.0, a `LinkedIn-Version` header, an OAuth2 bearer token, and
BATCH_CREATE requests (`X-RestLi-Method: BATCH_CREATE`, `{"elements": [...]}`) whose answer has
one `{"status": ...}` per element, in the order sent: a 201 is acknowledged, any other status
(with its `error`) rejects that element alone.

An error that refuses a whole request (a 400 `VALIDATION_FAILED` naming one element, as Rest.li
answers a value it cannot read) is isolated by halving the request until the element is alone.
A 401 or 403 fails the run; so does an inactive version (426) or a missing segment or rule
(404), which no resend fixes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx

from retl_dagster.destinations.base import DestinationError
from retl_dagster.destinations.bisect import RequestBudget, send_isolating
from retl_dagster.destinations.http import HttpClient, error_text
from retl_dagster.destinations.impl.linkedin.config import API_WINDOW, MAX_ELEMENTS, LinkedInConfig
from retl_dagster.destinations.impl.linkedin.exceptions import LinkedInApiError, LinkedInAuthError

T = TypeVar("T")

VERSION_CODES = frozenset({"VERSION_MISSING", "NONEXISTENT_VERSION", "INVALID_VERSION"})


def body_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def describe_error(err: dict[str, Any], status: Any = None) -> str:
    """LinkedIn's own words for an error object (a response body, or an element's `error`):
    its message, the input errors it names, code and status."""
    message = str(err.get("message") or "").strip()
    details = err.get("errorDetails")
    inputs = details.get("inputErrors") if isinstance(details, dict) else None
    if isinstance(inputs, list):
        said = []
        for e in inputs:
            if not isinstance(e, dict):
                continue
            where = ((e.get("input") or {}).get("inputPath") or {}).get("fieldPath")
            text = str(e.get("description") or e.get("code") or "").strip()
            said.append(f"{where}: {text}" if where else text)
        if said:
            message = f"{message} ({'; '.join(said)})" if message else "; ".join(said)
    codes = [str(c) for c in (err.get("code"), status or err.get("status")) if c]
    if err.get("serviceErrorCode"):
        codes.append(f"serviceErrorCode {err['serviceErrorCode']}")
    return f"{message or 'no message'} [{', '.join(codes)}]" if codes else message


def describe(response: httpx.Response) -> str:
    body = body_of(response)
    if not body:
        return error_text(response)
    return describe_error(body, body.get("status") or response.status_code)


def element_error(element: Any) -> str:
    """Why LinkedIn refused one element of a BATCH_CREATE."""
    if not isinstance(element, dict):
        return "LinkedIn's answer did not confirm this element"
    err = element.get("error")
    if isinstance(err, dict) and err:
        return describe_error(err, element.get("status"))
    return describe_error(element, element.get("status"))


class LinkedInApi:
    """One destination's connection to the versioned API."""

    def __init__(self, name: str, config: LinkedInConfig, permission: str) -> None:
        self.name = name
        self.permission = permission
        self.version = config.api_version
        self.client = HttpClient(
            name,
            config,
            base_url=str(config.base_url).rstrip("/"),
            headers={
                "Authorization": f"Bearer {config.access_token.get_secret_value()}",
                "LinkedIn-Version": config.api_version,
                "X-Restli-Protocol-Version": "2.0.0",
                "Content-Type": "application/json",
            },
            api_window=API_WINDOW,
            refused=self._refused,
        )

    def _refused(self, response: httpx.Response) -> Exception:
        if response.status_code == 401:
            return LinkedInAuthError(
                f"destination '{self.name}': LinkedIn refused the access token "
                f"({describe(response)}). Fix: create a new access token (they last 60 days) "
                f"with the {self.permission} permission and set it in the environment variable "
                "access_token reads"
            )
        return LinkedInAuthError(
            f"destination '{self.name}': LinkedIn refused access ({describe(response)}). Fix: "
            f"the app needs the {self.permission} permission, and the token's member a role "
            "other than VIEWER on the ad account that owns the sync's object"
        )

    def _version_refused(self, response: httpx.Response) -> LinkedInApiError | None:
        code = str(body_of(response).get("code") or "")
        if response.status_code == 426 or code in VERSION_CODES:
            return LinkedInApiError(
                f"destination '{self.name}': LinkedIn does not serve version {self.version} "
                f"({describe(response)}). Fix: set api_version to an active version (YYYYMM; "
                "LinkedIn supports each for about a year)"
            )
        return None

    def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        # The method header on every call, as LinkedIn's own client sends it.
        response = self.client.request(
            "GET", path, params=params, headers={"X-RestLi-Method": "GET"}
        )
        if (refused := self._version_refused(response)) is not None:
            raise refused
        return response

    def batch_create(
        self,
        path: str,
        items: Sequence[tuple[T, dict[str, Any]]],
        settle: Callable[[T, str | None], None],
        missing: Callable[[httpx.Response], Exception],
        budget: RequestBudget,
    ) -> None:
        """BATCH_CREATE each `(owner, element)`, at most 5,000 a request; `settle(owner, None)`
        for each element LinkedIn acknowledged, `settle(owner, reason)` for each it refused.
        `missing(response)` is raised on a 404 (the segment or rule is not there)."""

        def send(chunk: Sequence[tuple[T, dict[str, Any]]]) -> str | None:
            response = self.client.request(
                "POST",
                path,
                json={"elements": [element for _, element in chunk]},
                headers={"X-RestLi-Method": "BATCH_CREATE"},
            )
            if response.status_code == 404:
                raise missing(response)
            if (refused := self._version_refused(response)) is not None:
                raise refused
            if not response.is_success:
                return describe(response)  # refused whole: isolate the element
            try:
                answered = response.json()["elements"]
                if not isinstance(answered, list):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                # Sent, but LinkedIn's answer says nothing we can read: the run fails and the
                # next one sends the batch again (adds, removes and deduplicated events are
                # harmless to repeat).
                raise DestinationError(
                    f"destination '{self.name}': POST {path} got HTTP {response.status_code} "
                    f"without LinkedIn's per-element answer ({response.text[:200]!r}). Nothing "
                    "in this batch was marked synced; the next run sends it again"
                ) from None
            for i, (owner, _) in enumerate(chunk):
                element = answered[i] if i < len(answered) else None
                status = element.get("status") if isinstance(element, dict) else None
                ok = isinstance(status, int) and 200 <= status < 300
                settle(owner, None if ok else element_error(element))
            return None

        def reject(item: tuple[T, dict[str, Any]], reason: str) -> None:
            settle(item[0], reason)

        for start in range(0, len(items), MAX_ELEMENTS):
            send_isolating(items[start : start + MAX_ELEMENTS], send, reject, budget)

    def close(self) -> None:
        self.client.close()
