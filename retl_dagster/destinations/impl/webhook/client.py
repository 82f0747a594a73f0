from __future__ import annotations

import hashlib
import hmac
from typing import Any, ClassVar

import orjson

from retl_dagster.common.encoding import dumps
from retl_dagster.destinations.base import Batch, BatchResult, Destination
from retl_dagster.destinations.http import HttpClient, error_text, probe
from retl_dagster.destinations.impl.webhook.config import WebhookConfig


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDestination(Destination[WebhookConfig]):
    type: ClassVar[str] = "webhook"
    config_class = WebhookConfig
    modes = frozenset({"insert", "update", "upsert", "mirror", "events"})
    max_batch_size = 10_000
    max_concurrency = 32  # httpx's Client and pyrate-limiter are thread-safe
    encoded_rows = True

    def __init__(self, name: str, config: WebhookConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(name, config, headers=config.headers)

    def body(self, batch: Batch) -> bytes:
        records: list[dict[str, Any]]
        if batch.rows is not None:
            # The fields are JSON already (encoded by the engine): spliced in as they are.
            rows = batch.rows
            records = [
                {"op": op, "id": key}
                if fields is None
                else {"op": op, "id": key, "fields": orjson.Fragment(fields)}
                for op, key, fields in zip(rows.ops, rows.keys, rows.fields_json, strict=True)
            ]
        else:
            records = [
                {"op": r.op, "id": r.key}
                if r.op == "removed"
                else {"op": r.op, "id": r.key, "fields": r.fields}
                for r in batch.records
            ]
        payload = {
            "sync": batch.sync,
            "run_id": batch.run_id,
            "batch_id": batch.batch_id,
            "records": records,
        }
        # NaN/Infinity are not JSON; the mapper made them null before this.
        return dumps(payload)

    def deliver(self, batch: Batch) -> BatchResult:
        body = self.body(batch)
        headers = {"Content-Type": "application/json", "Idempotency-Key": batch.batch_id}
        if self.config.secret is not None:
            headers["X-Retl-Signature"] = sign(self.config.secret.get_secret_value(), body)
        response = self.client.request("POST", str(self.config.url), content=body, headers=headers)
        if not response.is_success:
            reason = error_text(response)
            return BatchResult(rejected=dict.fromkeys(batch.keys, reason))
        keys = set(batch.keys)
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

    def check(self, object_: str | None = None) -> str:
        """An OPTIONS request (no body): any answer below 500 shows the URL is reachable. The
        receiver's own checks (signature, auth headers) apply to POSTs only, which this never
        sends."""
        url = str(self.config.url)
        response = probe(self.name, self.config, "OPTIONS", url, headers=self.config.headers)
        return (
            f"{url} is reachable (OPTIONS answered HTTP {response.status_code}); nothing was "
            "posted, so the receiver's signature and auth checks were not exercised"
        )

    def close(self) -> None:
        self.client.close()
