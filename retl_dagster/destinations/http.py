"""HTTP plumbing every API destination shares: one client, proactive rate limiting, and bounded
retries of transient failures (429, 5xx, timeouts, resets) that honour the server's wait hints.

Built on httpx (HTTP), tenacity (retries) and pyrate-limiter (a token bucket per destination).
"""

from __future__ import annotations

import email.utils
import gzip
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pydantic
import tenacity
from pyrate_limiter import Rate

from retl_dagster.destinations.base import DestinationConfig, DestinationError
from retl_dagster.destinations.budget import rates_for, shared_limiter

MAX_BODY_IN_ERRORS = 1000


class HttpSettings(DestinationConfig):
    """Options every HTTP destination accepts."""

    timeout_s: float = pydantic.Field(default=30.0, gt=0)
    max_attempts: int = pydantic.Field(default=6, ge=1, le=20)
    """Attempts per request for 429/5xx/timeouts before the run fails."""
    backoff_initial_s: float = pydantic.Field(default=0.5, ge=0)
    backoff_max_s: float = pydantic.Field(default=60.0, ge=0)
    requests_per_second: float | None = pydantic.Field(default=None, gt=0)
    """Proactive client-side limit; defaults to the API's documented limit."""
    requests_per_day: int | None = pydantic.Field(default=None, gt=0)
    """The account's daily request quota (e.g. HubSpot: 250,000 on Professional), counted
    with every other run's; when it is spent the run stops (acknowledged records are kept) and
    says so, rather than waiting for tomorrow."""


class TransientHttpError(Exception):
    """Worth another attempt, after `retry_after_s` when the server said so."""

    def __init__(
        self, reason: str, retry_after_s: float | None = None, throttled: bool = False
    ) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s
        self.throttled = throttled
        """The answer was a 429."""


MAX_BUDGET_WAIT_S = 300.0
"""Longest wait for the budget: a per-second or per-window rate frees a slot within seconds; a
wait this long means the daily quota is spent."""


class BudgetSpent(DestinationError):
    """The destination's shared budget has no request left for a long while (a daily quota)."""


class GaveUp(DestinationError):
    """Every attempt at a request failed transiently."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())


def retry_after_header(response: httpx.Response) -> float | None:
    """The default wait hint: `Retry-After`."""
    return parse_retry_after(response.headers.get("Retry-After"))


class _WaitHintOrBackoff(tenacity.wait.wait_base):
    """The server's wait hint when it gave one, else exponential backoff with jitter. A
    client that paces itself (`pace_s`: its budget's interval between requests) retries its
    first 429 after that interval, with the budget slot the refused request already took
    (`HttpClient.request`): at the API's own rate such a 429 is timing, an earlier request
    that reached the API's count later than it was sent (one held up 100-300 ms fills the
    window for the next ones), and the API did not count the refused one; a backoff or a
    second slot would cost more than the 429 itself. A second one in a row backs off, through
    the budget."""

    def __init__(self, initial: float, maximum: float, pace_s: float | None = None) -> None:
        self.backoff = tenacity.wait_exponential_jitter(initial=initial, max=maximum)
        self.maximum = maximum
        self.pace_s = pace_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, TransientHttpError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self.maximum)
        if _slot_kept(self.pace_s, retry_state.attempt_number, exc):
            assert self.pace_s is not None
            return self.pace_s
        return float(self.backoff(retry_state))


def _slot_kept(pace_s: float | None, attempt: int, exc: BaseException | None) -> bool:
    """Whether the retry after attempt `attempt` (which raised `exc`) reuses that attempt's
    budget slot: a paced client's first 429 that named no wait."""
    return (
        pace_s is not None
        and attempt == 1
        and isinstance(exc, TransientHttpError)
        and exc.throttled
        and exc.retry_after_s is None
    )


class HttpClient:
    """A destination's connection to its API."""

    def __init__(
        self,
        destination: str,
        settings: HttpSettings,
        *,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        default_rps: float | None = None,
        api_window: Rate | None = None,
        refused: Callable[[httpx.Response], Exception] | None = None,
        wait_hint: Callable[[httpx.Response], float | None] = retry_after_header,
        is_transient: Callable[[httpx.Response], bool] | None = None,
    ) -> None:
        self.destination = destination
        self.settings = settings
        self.wait_hint = wait_hint
        self.refused = refused
        """The destination's error for an answer refusing its credentials (401/403), raised by
        `request`: the run fails, saying what to fix."""
        self.is_transient = is_transient or (lambda r: r.status_code == 429 or r.status_code >= 500)
        self.http = httpx.Client(
            base_url=base_url, timeout=settings.timeout_s, headers=dict(headers or {})
        )
        rps = settings.requests_per_second or (None if api_window else default_rps)
        rates = rates_for(rps, api_window, settings.requests_per_day)
        # One budget for the destination, shared by every run and process using it.
        self.limiter = shared_limiter(destination, rates) if rates else None
        self.pace_s = (
            min(rates[0].interval / rates[0].limit / 1000, settings.backoff_initial_s)
            if rates
            else None
        )
        """The budget's interval between requests at its shortest window's rate, at most the
        first backoff (None: no budget)."""
        self.attempts = 0
        """Requests sent, retries included."""
        self.throttled = 0
        """Answers that asked us to slow down (429)."""
        self.exchanges: list[httpx.Response] | None = None
        """Set to a list to keep every response (its `.request` included): `retl test-row`."""

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send with rate limiting and retries; return the first non-transient response."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientHttpError),
            wait=_WaitHintOrBackoff(
                self.settings.backoff_initial_s, self.settings.backoff_max_s, self.pace_s
            ),
            stop=tenacity.stop_after_attempt(self.settings.max_attempts),
            reraise=True,
        )
        attempt = 0
        slot_kept = False

        def once() -> httpx.Response:
            nonlocal attempt, slot_kept
            attempt += 1
            try:
                return self._once(method, url, take_slot=not slot_kept, **kwargs)
            except TransientHttpError as exc:
                slot_kept = _slot_kept(self.pace_s, attempt, exc)
                raise

        try:
            response: httpx.Response = retrying(once)
        except TransientHttpError as exc:
            raise GaveUp(
                f"destination '{self.destination}': {method} {url} failed "
                f"{self.settings.max_attempts} times, last: {exc}. Nothing in this batch was "
                "marked synced; the next run sends it again"
            ) from exc
        if self.refused is not None and response.status_code in (401, 403):
            raise self.refused(response)
        return response

    def _once(self, method: str, url: str, take_slot: bool = True, **kwargs: Any) -> httpx.Response:
        if (
            take_slot
            and self.limiter is not None
            and not self.limiter.try_acquire(self.destination, timeout=MAX_BUDGET_WAIT_S)
        ):
            raise BudgetSpent(
                f"destination '{self.destination}': no request allowed within "
                f"{MAX_BUDGET_WAIT_S:.0f} s: its daily quota (requests_per_day: "
                f"{self.settings.requests_per_day}) is spent by this and other runs. What was "
                "acknowledged is kept; the next run after the quota refills sends the rest. Fix: "
                "wait, or raise requests_per_day if the API's quota is higher"
            )
        self.attempts += 1
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.TransportError as exc:  # timeouts, resets, refused connections
            raise TransientHttpError(f"{type(exc).__name__}: {exc}") from exc
        if self.exchanges is not None:
            response.read()
            self.exchanges.append(response)
        if self.is_transient(response):
            if response.status_code == 429:
                self.throttled += 1
            raise TransientHttpError(
                f"HTTP {response.status_code}: {response.text[:200]}",
                self.wait_hint(response),
                throttled=response.status_code == 429,
            )
        return response

    def close(self) -> None:
        self.http.close()


class Unreachable(DestinationError):
    """`retl check`: the destination's URL gave no answer, or a server error."""


def probe(
    destination: str,
    settings: HttpSettings,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One request that carries no data (`retl check`), sent once: the answer whatever its
    status below 500; Unreachable when there is none (DNS, refused, timeout) or a 5xx."""
    client = HttpClient(
        destination, settings.model_copy(update={"max_attempts": 1}), headers=headers
    )
    try:
        return client.request(method, url)
    except GaveUp as exc:
        raise Unreachable(
            f"destination '{destination}': {method} {url} got no usable answer "
            f"({exc.__cause__}). Fix: check the URL (host, port, scheme), DNS and firewall, and "
            "that the service is up"
        ) from None
    finally:
        client.close()


def error_object(response: httpx.Response) -> dict[str, Any]:
    """The JSON body's `error` object (the Graph API's, a google.rpc.Status), or {} when the
    body is not one."""
    try:
        body = response.json()
    except ValueError:
        return {}
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) else {}


def error_text(response: httpx.Response) -> str:
    return f"HTTP {response.status_code}: {response.text[:MAX_BODY_IN_ERRORS]}"


SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "access-token"})
"""Headers shown as `***` in test-row exchanges (TikTok sends its token in `Access-Token`)."""


def format_exchange(response: httpx.Response, redact: Callable[[str], str]) -> str:
    """A request and its answer as text (`>` sent, `<` received), secrets redacted."""
    req = response.request
    lines = [f"> {req.method} {req.url}"]
    lines += [
        f"> {k}: {'***' if k.lower() in SECRET_HEADERS else redact(v)}"
        for k, v in req.headers.items()
    ]
    body = req.content
    if req.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    lines += [
        "> " + redact(body.decode(errors="replace")),
        f"< {response.status_code}",
        "< " + redact(response.text),
    ]
    return "\n".join(lines)
