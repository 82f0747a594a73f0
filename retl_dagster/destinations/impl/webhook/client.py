from __future__ import annotations

import hashlib
import hmac
from typing import Any, ClassVar

import orjson

from retl_dagster.common.encoding import dumps
from retl_dagster.destinations.base import Batch, BatchResult, Destination, concatenated
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
    # {"op": ..., "id": ..., "fields": {...}} (no fields for a removed record), as `body` writes
    # a Record; the ops are the engine's own words, with nothing to escape.
    item_sql = (
        """'{"op":"' || op || '","id":' || to_json(key)::varchar """
        """|| coalesce(',"fields":' || fields, '') || '}'"""
    )

    def __init__(self, name: str, config: WebhookConfig) -> None:
        super().__init__(name, config)
        self.client = HttpClient(name, config, headers=config.headers)

    def body(self, batch: Batch) -> bytes:
        records: list[dict[str, Any]] | orjson.Fragment
        if batch.rows is not None:
            # Each record's item is JSON already (written by DuckDB from `item_sql`, after a
            # comma): the batch's are one run of bytes, spliced in as they are.
            assert batch.rows.items is not None  # the load writes them: `item_sql` is set
            records = orjson.Fragment(b"[%b]" % concatenated(batch.rows.items)[1:])
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
        rejected: dict[str, str] = {}
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {}
        items = answer.get("rejected", []) if isinstance(answer, dict) else []
        keys = set(batch.keys) if items else set()
        for item in items:
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
