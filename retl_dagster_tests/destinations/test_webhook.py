from __future__ import annotations

import email.utils
import hashlib
import hmac
import time

import pytest

from retl_dagster.destinations import Batch, Record, build_destination
from retl_dagster.destinations.base import DestinationConfigError
from retl_dagster.destinations.http import GaveUp, parse_retry_after
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver

SECRET = "s3cret"


def batch(n: int = 3) -> Batch:
    records = [Record("added", str(i), {"email": f"u{i}@x"}) for i in range(n)]
    return Batch("s", "run1", "upsert", None, records + [Record("removed", "99")])


def test_signature_and_idempotency_key_match_the_raw_body() -> None:
    with WebhookReceiver(secret=SECRET) as r:
        dest = build_destination("hook", "webhook", {"url": r.url, "secret": SECRET})
        assert dest.deliver(batch()).rejected == {}
    [req] = r.requests
    assert r.signature_failures == 0 and req.status == 200
    assert req.headers["idempotency-key"] == req.body["batch_id"] == batch().batch_id
    assert req.body["records"][-1] == {"op": "removed", "id": "99"}


def test_a_wrong_secret_is_refused_by_the_receiver_and_rejects_the_batch() -> None:
    with WebhookReceiver(secret=SECRET) as r:
        dest = build_destination("hook", "webhook", {"url": r.url, "secret": "wrong"})
        result = dest.deliver(batch(2))
    assert r.signature_failures == 1
    assert result.rejected["0"].startswith("HTTP 401")


def test_rejected_ids_in_a_2xx_answer() -> None:
    with WebhookReceiver(reject=lambda rec: "nope" if rec["id"] == "1" else None) as r:
        dest = build_destination("hook", "webhook", {"url": r.url})
        assert dest.deliver(batch()).rejected == {"1": "nope"}


def test_retry_after_is_honoured() -> None:
    with WebhookReceiver(transient=[(429, {"Retry-After": "1"})]) as r:
        dest = build_destination("hook", "webhook", {"url": r.url, "backoff_initial_s": 0})
        started = time.monotonic()
        dest.deliver(batch())
        waited = time.monotonic() - started
    assert [q.status for q in r.requests] == [429, 200]
    assert waited >= 0.9


def test_connection_refused_is_retried_then_gives_up() -> None:
    dest = build_destination(
        "hook",
        "webhook",
        {
            "url": "http://127.0.0.1:9/hook",
            "max_attempts": 3,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.02,
        },
    )
    with pytest.raises(GaveUp, match="failed 3 times"):
        dest.deliver(batch())
    assert dest.client.attempts == 3  # type: ignore[attr-defined]


def test_parse_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    later = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= (parse_retry_after(later) or 0) <= 10
    assert parse_retry_after(None) is None


def test_bad_options_name_the_field() -> None:
    with pytest.raises(DestinationConfigError, match="destination 'hook', field 'url'"):
        build_destination("hook", "webhook", {"url": "not a url"})


def test_signature_helper_is_plain_hmac_sha256() -> None:
    from retl_dagster.destinations.impl.webhook.client import sign

    body = b'{"a":1}'
    assert sign(SECRET, body) == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
