"""Slack's Block Kit models (slack_sdk) and Slack's escaping rule against our alert payloads.

Docs vs SDK: Slack's formatting docs require `&`, `<` and `>` in text to be sent as entities;
the SDK's text objects do not escape or check this, so the escaping check follows the docs.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from retl_dagster.engine.notify import RunAlert, slack_escape, slack_payload
from retl_dagster_tests.contracts.slack import ContractError, check_webhook_payload, unescaped
from retl_dagster_tests.fakes.slack import FakeSlack

NASTY = "<script>alert(1)</script> & <!channel> a > b"


def _alert(**kw: Any) -> RunAlert:
    base: dict[str, Any] = {
        "sync": "contacts",
        "status": "partial",
        "run_id": "20260101T000000Z",
        "dagster_run_id": "abc123",
        "counts": {"added": 3, "succeeded": 2, "rejected": 1},
        "errors": [NASTY, "x" * 900],
        "url": "http://dagster.example:3000/runs/abc123",
    }
    return RunAlert(**(base | kw))


@pytest.mark.parametrize(
    "alert",
    [
        _alert(),
        _alert(status="failed", url=None, errors=[]),
        _alert(status="stopped", counts={}, errors=["a&b"] * 9),
    ],
)
def test_our_payloads_fit_slacks_models_and_escaping(alert: RunAlert) -> None:
    check_webhook_payload(slack_payload(alert))


def test_escaping_keeps_our_link_and_escapes_the_rest() -> None:
    payload = slack_payload(_alert())
    assert payload["text"].endswith(" <http://dagster.example:3000/runs/abc123|run>")
    errors = payload["blocks"][2]["text"]["text"]
    assert slack_escape(NASTY) in errors and NASTY not in errors
    assert slack_escape("a<b>&c") == "a&lt;b&gt;&amp;c"
    assert unescaped("<https://x.example/a?b=1|label> <@U123> &amp; &lt;") == []


# -- the validator can fail -----------------------------------------------------------------------
def test_an_unescaped_angle_bracket_is_refused() -> None:
    payload = slack_payload(_alert(errors=[]))
    bad = copy.deepcopy(payload)
    bad["blocks"][1]["fields"][0]["text"] = "*Sync*\n<script>"  # the old, unescaped shape
    with pytest.raises(ContractError, match=r"blocks\.\[1\]|blocks\[1\]"):
        check_webhook_payload(bad)
    bad = copy.deepcopy(payload)
    bad["text"] = "retl sync a & b failed"
    with pytest.raises(ContractError, match="text: unescaped &"):
        check_webhook_payload(bad)


def test_block_kit_violations_are_refused() -> None:
    payload = slack_payload(_alert())
    too_long = copy.deepcopy(payload)
    too_long["blocks"][0]["text"]["text"] = "h" * 151  # header text: at most 150
    with pytest.raises(ContractError, match="blocks\\[0\\]"):
        check_webhook_payload(too_long)
    unknown = copy.deepcopy(payload)
    unknown["blocks"][1]["colour"] = "red"  # a key the SDK does not know
    with pytest.raises(ContractError, match="the SDK reads it as"):
        check_webhook_payload(unknown)
    with pytest.raises(ContractError, match="text: missing"):
        check_webhook_payload({"blocks": payload["blocks"]})


def test_the_fake_answers_a_refused_payload_as_slack_does() -> None:
    slack = FakeSlack()
    with slack:
        bad = slack_payload(_alert(errors=[]))
        bad["blocks"][1]["fields"][0]["text"] = "<script>"
        response = httpx.post(slack.webhook_url, json=bad)
        assert (response.status_code, response.text) == (400, "invalid_blocks")
        assert slack.messages == [] and len(slack.contract_errors) == 1
        ok = httpx.post(slack.webhook_url, json=slack_payload(_alert()))
        assert (ok.status_code, ok.text) == (200, "ok")
