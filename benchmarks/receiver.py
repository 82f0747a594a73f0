"""A loopback webhook receiver for the benchmarks: an ASGI app under uvicorn, in its own process.

It reads each request's JSON body, counts its records and answers `{"rejected": []}` (retl's
webhook wire format), so every client benchmarked pays the same receiver. Not a test fake:
it checks nothing, it only has to be faster than the clients.

    python benchmarks/receiver.py PORT [DELAY_MS]

DELAY_MS makes a slow receiver: each request is answered that long after it arrived (awaited,
so requests in flight overlap, as at a real API).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import uvicorn

COUNT = {"records": 0, "requests": 0}
DELAY_S = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/count":
        answer = json.dumps(COUNT).encode()
    else:
        payload = json.loads(body) if body else {}
        records = payload.get("records", payload) if isinstance(payload, dict) else payload
        COUNT["records"] += len(records) if isinstance(records, list) else 1
        COUNT["requests"] += 1
        answer = b'{"rejected": []}'
        if DELAY_S:
            await asyncio.sleep(DELAY_S)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": answer})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
