"""What every fake SaaS server shares: a threaded werkzeug server on loopback, a request log,
and a rolling-window rate limit that answers 429 the way the API does when a client is too fast."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Logged:
    method: str
    path: str
    status: int
    body: Any


class FakeServer:
    """Subclass: set `url_map` (endpoint names are method names) and `rate_limited()`."""

    url_map: Map

    def __init__(self, rate_limit: int | None = None, window_s: float = 1.0) -> None:
        self.rate_limit = rate_limit
        self.window_s = window_s
        self.log: list[Logged] = []
        self.garbage = 0
        """The next `garbage` requests get a 200 whose body is not what the API sends."""
        self.lock = threading.RLock()
        self._hits: deque[float] = deque()
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()

    def over_limit(self) -> bool:
        """Count this request; True when it exceeds `rate_limit` in the rolling window."""
        if self.rate_limit is None:
            return False
        now = time.monotonic()
        while self._hits and now - self._hits[0] > self.window_s:
            self._hits.popleft()
        if len(self._hits) >= self.rate_limit:
            return True
        self._hits.append(now)
        return False

    def rate_limited(self, request: Request) -> Response:  # pragma: no cover - overridden
        return Response(status=429)

    def count(self, path_part: str, status: int | None = None) -> int:
        return sum(1 for e in self.log if path_part in e.path and status in (None, e.status))

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            if self.garbage:
                self.garbage -= 1
                response = Response(
                    "<html>upstream proxy error</html>", status=200, content_type="text/html"
                )
            elif self.over_limit():
                response = self.rate_limited(request)
            else:
                try:
                    endpoint, args = self.url_map.bind_to_environ(environ).match()
                    response = getattr(self, endpoint)(request, **args)
                except HTTPException as exc:
                    response = exc.get_response()
            try:
                body = request.get_json(silent=True)
            except Exception:
                body = None
            self.log.append(Logged(request.method, request.path, response.status_code, body))
        return response(environ, start_response)
