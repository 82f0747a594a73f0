from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import time
from typing import Any, ClassVar

import httpx
import tenacity

from retl_dagster.destinations.base import Batch, BatchResult, Destination
from retl_dagster.destinations.webhook.config import WebhookConfig
from retl_dagster.destinations.webhook.exceptions import WebhookGaveUp, WebhookTransientError

MAX_REASON_CHARS = 1000


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _RetryAfterOrBackoff(tenacity.wait.wait_base):
    """Honour the server's Retry-After when it sent one, else exponential backoff with jitter."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.backoff = tenacity.wait_exponential_jitter(initial=initial, max=maximum)
        self.maximum = maximum

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, WebhookTransientError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self.maximum)
        return float(self.backoff(retry_state))


class WebhookDestination(Destination):
    type: ClassVar[str] = "webhook"
    config_class = WebhookConfig
    modes = frozenset({"insert", "update", "upsert", "mirror", "events"})
    max_batch_size = 10_000

    def __init__(self, name: str, config: WebhookConfig) -> None:  # type: ignore[override]
        super().__init__(name, config)
        self.config: WebhookConfig = config
        self._http = httpx.Client(timeout=config.timeout_s, headers=config.headers)
        self.attempts = 0
        """Requests made, retries included (for run metadata)."""

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    def body(self, batch: Batch) -> bytes:
        payload: dict[str, Any] = {
            "sync": batch.sync,
            "run_id": batch.run_id,
            "batch_id": batch.batch_id,
            "records": [
                {"op": r.op, "id": r.key}
                if r.op == "removed"
                else {"op": r.op, "id": r.key, "fields": r.fields}
                for r in batch.records
            ],
        }
        # allow_nan=False: NaN/Infinity are not JSON; the mapper encodes them before this.
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()

    def request_headers(self, batch: Batch, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Idempotency-Key": batch.batch_id}
        if self.config.secret is not None:
            headers["X-Retl-Signature"] = sign(self.config.secret.get_secret_value(), body)
        return headers

    def deliver(self, batch: Batch) -> BatchResult:
        body = self.body(batch)
        headers = self.request_headers(batch, body)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(WebhookTransientError),
            wait=_RetryAfterOrBackoff(self.config.backoff_initial_s, self.config.backoff_max_s),
            stop=tenacity.stop_after_attempt(self.config.max_attempts),
            reraise=True,
        )
        try:
            response = retrying(self._post, body, headers)
        except WebhookTransientError as exc:
            raise WebhookGaveUp(
                f"destination '{self.name}': batch {batch.batch_id} failed "
                f"{self.config.max_attempts} times, last: {exc}. Nothing in it was marked "
                "synced; the next run sends it again"
            ) from exc
        return self._result(batch, response)

    def _post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        self.attempts += 1
        try:
            response = self._http.post(str(self.config.url), content=body, headers=headers)
        except httpx.TransportError as exc:  # timeouts, resets, refused connections
            raise WebhookTransientError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise WebhookTransientError(
                f"HTTP {response.status_code}: {response.text[:200]}",
                parse_retry_after(response.headers.get("Retry-After")),
            )
        return response

    def _result(self, batch: Batch, response: httpx.Response) -> BatchResult:
        if not response.is_success:
            reason = f"HTTP {response.status_code}: {response.text[:MAX_REASON_CHARS]}"
            return BatchResult(rejected={r.key: reason for r in batch.records})
        keys = {r.key for r in batch.records}
        rejected: dict[str, str] = {}
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {}
        for item in answer.get("rejected", []) if isinstance(answer, dict) else []:
            key = str(item.get("id"))
            if key in keys:
                rejected[key] = str(item.get("error") or "rejected by the webhook")
        return BatchResult(rejected=rejected)

    def close(self) -> None:
        self._http.close()
