"""Alerts: real failed and partly failed runs, the real sensors evaluated on a real instance,
Slack over loopback and email through a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from aiosmtpd.controller import Controller

from retl_dagster.runner import run_sync
from retl_dagster_tests.conftest import WEBHOOK_SECRET
from retl_dagster_tests.fakes.slack import FakeSlack
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import (
    WEBHOOK_DESTINATION,
    defs_from_yaml,
    evaluate_run_status_sensor,
)
from retl_dagster_tests.test_sync_e2e import SYNC, make_customers, sql


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[_Inbox, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    fake = FakeSlack()
    with fake:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", fake.webhook_url)
        monkeypatch.setenv("RETL_UI_URL", "http://dagster.example:3000")
        yield fake
    # Every payload fitted Slack's Block Kit models and escaping rule (contracts/slack.py).
    assert fake.contract_errors == []


def alerting(smtp_port: int) -> tuple[str, str]:
    alerts = f"""
channels:
  slack:
    ops: {{webhook_url: "{{{{ env.SLACK_WEBHOOK_URL }}}}"}}
  email: {{host: 127.0.0.1, port: {smtp_port}, security: none, sender: retl@example.com}}
"""
    sync = SYNC + "alerts: {on: [failed, partial], slack: ops, email: [data@example.com]}\n"
    return alerts, sync


def test_a_failed_run_alerts_slack_and_email(
    receiver: WebhookReceiver,
    slack: FakeSlack,
    smtp: tuple[_Inbox, int],
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    inbox, port = smtp
    alerts, sync = alerting(port)
    make_customers(warehouse_path, 10)
    sql(warehouse_path, "insert into customers values (4, 'dup@example.com', 'free', 1, '')")
    defs = defs_from_yaml(WEBHOOK_DESTINATION, sync, alerts=alerts)
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "failed"
    evaluate_run_status_sensor(defs, instance, outcome, "retl_customers_hook_failed_alert")

    [message] = slack.messages
    assert message["text"].startswith("retl sync customers_hook failed")
    assert message["blocks"][0]["text"]["text"] == "retl sync customers_hook failed"
    fields = {f["text"].split("\n")[0]: f["text"] for f in message["blocks"][1]["fields"]}
    assert outcome.summary["run_id"] in fields["*Run*"]
    errors = message["blocks"][2]["text"]["text"]
    assert "'4' x2" in errors and "primary_key" in errors
    assert message["blocks"][3]["elements"][0]["url"] == (
        f"http://dagster.example:3000/runs/{outcome.result.run_id}"
    )

    [mail] = inbox.messages
    assert mail["Subject"] == "[retl] retl sync customers_hook failed"
    assert mail["To"] == "data@example.com" and mail["From"] == "retl@example.com"
    body = mail.get_payload(decode=True).decode()
    assert "'4' x2" in body and f"/runs/{outcome.result.run_id}" in body


def test_a_partial_run_alerts_with_counts_and_first_errors(
    receiver: WebhookReceiver,
    slack: FakeSlack,
    smtp: tuple[_Inbox, int],
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    inbox, port = smtp
    alerts, sync = alerting(port)
    make_customers(warehouse_path, 10)
    receiver.reject = lambda r: "plan not allowed" if r["fields"].get("plan") == "pro" else None
    defs = defs_from_yaml(WEBHOOK_DESTINATION, sync, alerts=alerts)
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "partial"
    evaluate_run_status_sensor(defs, instance, outcome, "retl_customers_hook_partial_alert")
    [message] = slack.messages
    assert "partly failed" in message["text"]
    assert "succeeded 7, rejected 3" in message["text"]
    assert "plan not allowed" in message["blocks"][2]["text"]["text"]
    [mail] = inbox.messages
    assert "partly failed" in mail["Subject"]
    assert "plan not allowed" in mail.get_payload(decode=True).decode()
    for text in [str(message), mail.as_string()]:
        assert WEBHOOK_SECRET not in text and slack.hook not in text


def test_an_error_with_markup_arrives_escaped_in_slack(
    receiver: WebhookReceiver,
    slack: FakeSlack,
    smtp: tuple[_Inbox, int],
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    inbox, port = smtp
    alerts, sync = alerting(port)
    make_customers(warehouse_path, 4)
    receiver.reject = lambda r: "<script>alert(1)</script> & <!channel>"
    defs = defs_from_yaml(WEBHOOK_DESTINATION, sync, alerts=alerts)
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "partial"
    evaluate_run_status_sensor(defs, instance, outcome, "retl_customers_hook_partial_alert")
    [message] = slack.messages
    errors = message["blocks"][2]["text"]["text"]
    # Shown as typed, never parsed by Slack (no @channel ping, no markup).
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;!channel&gt;" in errors
    assert "<script>" not in str(message) and "<!channel>" not in str(message)
    # Our own link stays a link.
    assert message["text"].endswith(
        f" <http://dagster.example:3000/runs/{outcome.result.run_id}|run>"
    )
    # Email is plain text: the error as it was.
    mail = inbox.messages[0].get_payload(decode=True)
    assert isinstance(mail, bytes)
    assert "<script>alert(1)</script> & <!channel>" in mail.decode()


def test_a_healthy_run_sends_nothing(
    receiver: WebhookReceiver,
    slack: FakeSlack,
    smtp: tuple[_Inbox, int],
    instance: dg.DagsterInstance,
    warehouse_path: Path,
) -> None:
    inbox, port = smtp
    alerts, sync = alerting(port)
    make_customers(warehouse_path, 5)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, sync, alerts=alerts)
    outcome = run_sync(defs, "customers_hook", instance)
    assert outcome.status == "succeeded"
    evaluate_run_status_sensor(defs, instance, outcome, "retl_customers_hook_partial_alert")
    assert slack.messages == [] and inbox.messages == []
    assert instance.get_run_by_id(outcome.result.run_id).tags["retl/status"] == "succeeded"


def test_alerts_need_declared_channels(smtp: tuple[_Inbox, int]) -> None:
    _, sync = alerting(smtp[1])
    with pytest.raises(Exception, match="field 'alerts': no alert channels are declared"):
        defs_from_yaml(WEBHOOK_DESTINATION, sync)
    with pytest.raises(Exception, match="no Slack channel 'ops' \\(declared: eng\\)"):
        defs_from_yaml(
            WEBHOOK_DESTINATION,
            sync,
            alerts="""
channels:
  slack: {eng: {webhook_url: "{{ env.SLACK_WEBHOOK_URL }}"}}
  email: {host: localhost}
""",
        )
