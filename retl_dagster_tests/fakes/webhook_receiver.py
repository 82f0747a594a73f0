"""A real HTTP receiver of the generic webhook wire format, on loopback.

It checks every request the way a careful receiver would (content type, HMAC signature over the
raw body, Idempotency-Key equal to batch_id) and can be told to misbehave: reject some ids,
answer 429/5xx a number of times, or fail a whole batch with a 4xx.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]
    status: int
    at: float = field(default_factory=time.monotonic)
    """When it was answered (time.monotonic)."""


@dataclass
class WebhookReceiver:
    secret: str | None = None
    reject: Callable[[dict[str, Any]], str | None] = lambda record: None
    """record -> reason to reject it (listed in the 2xx response), or None."""
    transient: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    """Answers to give before succeeding: (status, headers), consumed one per request."""
    batch_status: int | None = None
    """When set, every batch is answered with this 4xx and an error body."""
    requests: list[Received] = field(default_factory=list)
    signature_failures: int = 0
    delay_s: float = 0.0
    """Seconds to wait before answering each request (a slow receiver)."""
    before_answer: Callable[[dict[str, Any]], None] | None = None
    """Called with each POSTed body before it is answered (on the request's own thread)."""
    chaos: float = 0.0
    """Share of requests that fail: 429, 503, a dropped connection, or an answer too slow for
    the client (the last two after the batch was applied, as real faults often are)."""
    seed: int = 7
    store: dict[str, dict[str, Any]] = field(default_factory=dict)
    """What the receiver holds: id -> fields; `removed` deletes."""
    applied_batches: set[str] = field(default_factory=set)
    duplicates_dropped: int = 0
    """Batches received again with an Idempotency-Key already applied."""
    probes: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    """(method, lower-cased headers) of each request that was not a POST (`retl check`)."""
    probe_status: int = 204
    """The answer to an OPTIONS request."""

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
                with receiver._lock:
                    receiver.probes.append(
                        ("OPTIONS", {k.lower(): v for k, v in self.headers.items()})
                    )
                self.send_response(receiver.probe_status)
                self.send_header("Allow", "OPTIONS, POST")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.before_answer is not None:
                    receiver.before_answer(json.loads(raw))
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                status, answer, extra = receiver._answer(dict(self.headers.items()), raw)
                fault = receiver._fault()
                if fault == "drop":
                    self.close_connection = True  # no answer at all: a reset connection
                    return
                if fault == "slow":
                    time.sleep(receiver.slow_s)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self.slow_s = 1.0
        self._pending_fault: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, headers: dict[str, str], raw: bytes) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            h = {k.lower(): v for k, v in headers.items()}
            if h.get("content-type") != "application/json":
                return self._log(h, {}, 415, {"error": "expected application/json"})
            if self.secret is not None:
                want = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(h.get("x-retl-signature", ""), want):
                    self.signature_failures += 1
                    return self._log(h, {}, 401, {"error": "bad signature"})
            body = json.loads(raw)
            if h.get("idempotency-key") != body["batch_id"]:
                return self._log(h, body, 400, {"error": "Idempotency-Key != batch_id"})
            if self.transient:
                status, extra = self.transient.pop(0)
                return self._log(h, body, status, {"error": "try later"}, extra)
            self._pending_fault = None
            if self.chaos and self._rng.random() < self.chaos:
                fault = self._rng.choice(["429", "503", "drop", "slow"])
                if fault in ("429", "503"):
                    return self._log(
                        h,
                        body,
                        int(fault),
                        {"error": "try later"},
                        {"Retry-After": "0"} if fault == "429" else {},
                    )
                self._pending_fault = fault  # applied below, then the answer is lost
            if self.batch_status is not None:
                return self._log(h, body, self.batch_status, {"error": "invalid batch"})
            rejected = []
            for record in body["records"]:
                reason = self.reject(record)
                if reason:
                    rejected.append({"id": record["id"], "error": reason})
            if body["batch_id"] in self.applied_batches:
                self.duplicates_dropped += 1  # honour the Idempotency-Key: apply once
            else:
                self.applied_batches.add(body["batch_id"])
                bad = {r["id"] for r in rejected}
                for record in body["records"]:
                    if record["id"] in bad:
                        continue
                    if record["op"] == "removed":
                        self.store.pop(record["id"], None)
                    else:
                        self.store[record["id"]] = record.get("fields", {})
            return self._log(h, body, 200, {"rejected": rejected} if rejected else {})

    def _fault(self) -> str | None:
        with self._lock:
            fault, self._pending_fault = self._pending_fault, None
            return fault

    def _log(
        self,
        h: dict[str, str],
        body: dict[str, Any],
        status: int,
        answer: Any,
        extra: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        self.requests.append(Received(h, body, status))
        return status, answer, extra or {}

    def delivered(self) -> list[dict[str, Any]]:
        """Records from requests answered 2xx (the ones the receiver accepted or rejected)."""
        return [r for req in self.requests if req.status == 200 for r in req.body["records"]]
