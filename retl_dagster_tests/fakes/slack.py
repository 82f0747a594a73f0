"""A fake Slack incoming webhook (api.slack.com/messaging/webhooks): `POST` JSON with `text`
(and optional `blocks`) -> 200 `ok`; a payload without text -> 400 `invalid_payload`; an unknown
hook -> 404 `no_service`. Both answers are plain text, as Slack's are. Every payload is checked
against Slack's Block Kit models and escaping rule (contracts/slack.py): one that fails gets
400 `invalid_blocks`, as Slack answers a malformed block."""

from __future__ import annotations

from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.contracts.slack import ContractError, check_webhook_payload
from retl_dagster_tests.fakes.base import FakeServer


class FakeSlack(FakeServer):
    url_map = Map([Rule("/services/<path:hook>", endpoint="post", methods=["POST"])])
    hook = "T000/B000/XXXX"

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict[str, Any]] = []
        self.contract_errors: list[str] = []
        """Every payload Slack's models or escaping rule refused."""

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/services/{self.hook}"

    def post(self, request: Request, hook: str) -> Response:
        if hook != self.hook:
            return Response("no_service", status=404, content_type="text/plain")
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not body.get("text"):
            return Response("invalid_payload", status=400, content_type="text/plain")
        try:
            check_webhook_payload(body)
        except ContractError as exc:
            self.contract_errors.append(str(exc))
            return Response("invalid_blocks", status=400, content_type="text/plain")
        self.messages.append(body)
        return Response("ok", status=200, content_type="text/plain")
