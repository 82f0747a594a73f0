"""A real HTTP receiver of the generic webhook wire format (DESIGN.md §5), on loopback.

It checks every request the way a careful receiver would (content type, HMAC signature over the
raw body, Idempotency-Key equal to batch_id) and can be told to misbehave: reject some ids,
answer 429/5xx a number of times, or fail a whole batch with a 4xx.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]
    status: int


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

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer, extra = receiver._answer(dict(self.headers.items()), raw)
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
            if self.batch_status is not None:
                return self._log(h, body, self.batch_status, {"error": "invalid batch"})
            rejected = []
            for record in body["records"]:
                reason = self.reject(record)
                if reason:
                    rejected.append({"id": record["id"], "error": reason})
            return self._log(h, body, 200, {"rejected": rejected} if rejected else {})

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
