"""The `http` destination: any REST API from templates, through Dagster against a fake REST API
over loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.destinations import Batch, Record, build_destination
from retl_dagster.destinations.impl.http.exceptions import AuthRefused
from retl_dagster.destinations.impl.http.templates import render_json
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.rest_api import FakeRestApi
from retl_dagster_tests.harness import defs_from_yaml, sql

TOKEN = "tok-secret-never-logged"

CRUD = """
    operations:
      added:
        method: POST
        url: /contacts
        body: '{"email": {{ record.email | tojson }}, "name": "{{ record.name }}"}'
        id_path: data.id
      changed:
        method: PATCH
        url: "/contacts/{{ dest_id }}"
        body: '{"email": {{ record.email | tojson }}, "name": {{ record.name | tojson }}}'
      removed:
        method: DELETE
        url: "/contacts/{{ dest_id }}"
        success_codes: [204, 404]
"""


def dest(auth: str = 'auth: {type: bearer, token: "{{ env.API_TOKEN }}"}', ops: str = CRUD) -> str:
    return f"""
destinations:
  api:
    type: http
    base_url: "{{{{ env.API_URL }}}}"
    {auth}
    backoff_initial_s: 0.05
    backoff_max_s: 2
{ops}
"""


def sync(mode: str = "mirror", delete: str = "delete", fields: str = "email, name") -> str:
    mappings = "\n".join(f"  - {{from: {f}, to: {f}}}" for f in fields.split(", "))
    return f"""
name: contacts
model: {{table: users}}
primary_key: id
destination: api
mode: {mode}
mappings:
{mappings}
delete_behavior: {delete}
"""


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRestApi]:
    fake = FakeRestApi(("bearer", TOKEN))
    with fake:
        monkeypatch.setenv("API_URL", fake.url)
        monkeypatch.setenv("API_TOKEN", TOKEN)
        yield fake


def users(path: Path, n: int) -> None:
    sql(
        path,
        f"""create or replace table users as select i as id, 'u' || i || '@example.com' as email,
        'User ' || i as name, cast(i * 10 as varchar) as score from range(1, {n + 1}) t(i)""",
    )


def test_creates_then_changes_and_deletes_by_the_kept_id(
    api: FakeRestApi, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 3)
    defs = defs_from_yaml(dest(), sync())
    out = run_sync(defs, "contacts", instance)
    assert (out.status, out.summary["succeeded"]) == ("succeeded", 3)
    assert sorted(api.contacts) == ["c-1", "c-2", "c-3"]
    state = sql(warehouse_path, "select _retl_key, _retl_dest_id from _retl.contacts__state")
    ids = {str(k): v for k, v in state}
    assert sorted(ids.values()) == ["c-1", "c-2", "c-3"]

    sql(warehouse_path, "update users set name = 'Renamed' where id = 2")
    sql(warehouse_path, "delete from users where id = 3")
    out = run_sync(defs, "contacts", instance)
    assert (out.summary["changed"], out.summary["removed"], out.status) == (1, 1, "succeeded")
    assert api.contacts[ids["2"]]["name"] == "Renamed"
    assert ids["3"] not in api.contacts and len(api.contacts) == 2
    assert [(s.method, s.path) for s in api.sent[-2:]] in (
        [("PATCH", f"/contacts/{ids['2']}"), ("DELETE", f"/contacts/{ids['3']}")],
        [("DELETE", f"/contacts/{ids['3']}"), ("PATCH", f"/contacts/{ids['2']}")],
    )
    # The token reached the API, and never the run's logs, events or the definitions.
    assert api.sent[0].headers["Authorization"] == f"Bearer {TOKEN}"
    logs = "\n".join(repr(e) for e in instance.all_logs(out.result.run_id))
    assert "contacts" in logs and TOKEN not in logs
    assert TOKEN not in repr(defs.resources)


BATCH = """
    operations:
      added:
        method: POST
        url: /contacts/batch
        per: batch
        body: >-
          {"contacts": [{% for r in records %}{"ref": {{ r.key | tojson }},
          "email": {{ r.record.email | tojson }}}{% if not loop.last %},{% endif %}{% endfor %}]}
        errors_path: errors
        error_key: ref
        error_message: message
"""


def test_one_request_per_batch_and_the_record_its_answer_refuses(
    api: FakeRestApi, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 5)
    sql(warehouse_path, "update users set email = 'nope' where id = 4")
    out = run_sync(defs_from_yaml(dest(ops=BATCH), sync("insert", "nothing")), "contacts", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (4, 1)
    assert api.count("/contacts/batch") == 1 and sorted(api.contacts) == ["1", "2", "3", "5"]
    assert sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
    ) == [("4", "invalid email 'nope'")]


def test_a_body_that_renders_invalid_json_rejects_that_record_only(
    api: FakeRestApi, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    users(warehouse_path, 3)
    sql(warehouse_path, "update users set score = 'n/a' where id = 2")
    ops = CRUD.replace(
        '"name": "{{ record.name }}"}', '"name": "{{ record.name }}", "score": {{ record.score }}}'
    )
    defs = defs_from_yaml(dest(ops=ops), sync("insert", "nothing", "email, name, score"))
    out = run_sync(defs, "contacts", instance)
    assert (out.summary["succeeded"], out.summary["rejected"]) == (2, 1)
    [(key, error)] = sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
    )
    assert key == "2" and "operations.added.body rendered invalid JSON" in error
    # Only valid JSON was sent: two contacts, no request the API found malformed.
    assert len(api.contacts) == 2 and api.count("/contacts", 400) == 0
    assert sorted(c["score"] for c in api.contacts.values()) == [10, 30]


def test_a_quote_in_a_value_cannot_add_keys() -> None:
    body = '{"name": "{{ record.name }}"}'
    evil = 'x", "admin": true, "y": "'
    assert render_json(body, "b", {"record": {"name": evil}}) == {"name": evil}


AUTHS = {
    "bearer": (('auth: {type: bearer, token: "{{ env.API_SECRET }}"}'), ("bearer", "s3cr3t")),
    "basic": (
        'auth: {type: basic, username: svc, password: "{{ env.API_SECRET }}"}',
        ("basic", "svc", "s3cr3t"),
    ),
    "api_key": (
        'auth: {type: api_key, header: X-Api-Key, value: "{{ env.API_SECRET }}"}',
        ("api_key", "X-Api-Key", "s3cr3t"),
    ),
    "oauth2": (
        "auth: {type: oauth2_client_credentials, token_url: '{{ env.API_URL }}/oauth/token', "
        'client_id: retl, client_secret: "{{ env.API_SECRET }}", scope: contacts}',
        ("oauth", "retl", "s3cr3t"),
    ),
}


@pytest.mark.parametrize("kind", sorted(AUTHS))
def test_each_auth_type(
    kind: str,
    api: FakeRestApi,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    yaml, api.auth = AUTHS[kind]
    monkeypatch.setenv("API_SECRET", "s3cr3t")
    users(warehouse_path, 2)
    defs = defs_from_yaml(dest(yaml), sync("insert", "nothing"))
    assert "s3cr3t" not in repr(defs.resources)  # an env reference until the run
    out = run_sync(defs, "contacts", instance)
    assert (out.status, len(api.contacts)) == ("succeeded", 2)
    logs = "\n".join(repr(e) for e in instance.all_logs(out.result.run_id))
    assert "s3cr3t" not in logs
    # A wrong secret: the API's 401 fails the run (nothing is marked synced).
    monkeypatch.setenv("API_SECRET", "wrong")
    sql(warehouse_path, "insert into users values (3, 'u3@example.com', 'U', '1')")
    out = run_sync(defs, "contacts", instance)
    assert out.status == "failed" and len(api.contacts) == 2
    assert "401" in out.summary["error"] or "refused" in out.summary["error"]


def options(url: str, **extra: object) -> dict[str, object]:
    return {
        "base_url": url,
        "backoff_initial_s": 0.01,
        "operations": {"added": {"url": "/contacts", "body": '{"email": "{{ record.email }}"}'}},
        **extra,
    }


def batch(*emails: str) -> Batch:
    records = [Record("added", str(i), {"email": e}) for i, e in enumerate(emails)]
    return Batch("s", "run1", "insert", None, records)


def test_an_expired_oauth2_token_is_fetched_again_once() -> None:
    auth = {
        "type": "oauth2_client_credentials",
        "client_id": "retl",
        "client_secret": "s3cr3t",
    }
    with FakeRestApi(("oauth", "retl", "s3cr3t")) as api:
        auth["token_url"] = f"{api.url}/oauth/token"
        d = build_destination("api", "http", options(api.url, auth=auth))
        assert d.deliver(batch("a@x")).rejected == {}
        assert d.deliver(batch("b@x")).rejected == {}
        assert api.tokens_issued == 1  # cached
        api.revoke()
        assert d.deliver(batch("c@x")).rejected == {}
        assert api.tokens_issued == 2 and len(api.contacts) == 3


def test_429_waits_for_retry_after_and_an_api_refusal_names_its_reason() -> None:
    with FakeRestApi() as api:
        api.throttle = 1
        d = build_destination("api", "http", options(api.url))
        started = time.monotonic()
        result = d.deliver(batch("a@x", "bad"))
        assert time.monotonic() - started >= 0.9 and api.throttled == 1
    assert result.rejected == {"1": "HTTP 422: invalid email 'bad'"}
    assert len(api.contacts) == 1


def test_check_sends_the_declared_request_with_the_credentials() -> None:
    with FakeRestApi(("bearer", TOKEN)) as api:
        good = {"type": "bearer", "token": TOKEN}
        check = {"method": "GET", "url": "/me"}
        d = build_destination("api", "http", options(api.url, auth=good, check=check))
        assert "GET" in d.check() and "200" in d.check()
        bad = build_destination(
            "api", "http", options(api.url, auth={**good, "token": "x"}, check=check)
        )
        with pytest.raises(AuthRefused, match="refused the credentials"):
            bad.check()
        plain = build_destination("api", "http", options(api.url))
        assert "reachable (OPTIONS answered HTTP 204)" in plain.check()
    assert [s.method for s in api.sent if s.path == "/contacts"] == []  # nothing was written


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("{{ record.email | tojson }}", "{{ record.email | tojson }"),
            "destination 'api', field 'operations.added.body': template syntax error",
        ),
        (("/contacts", "/{{ recrd.id }}/contacts"), "unknown variable 'recrd'"),
        (("per: batch", "per: batch\n        id_path: x"), "id_path is read from a `per: record`"),
    ],
)
def test_template_errors_are_refused_at_load(change: tuple[str, str], message: str) -> None:
    ops = (BATCH if "per: batch" in change[0] else CRUD).replace(*change, 1)
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace("|", r"\|")):
        defs_from_yaml(dest(ops=ops), sync("insert", "nothing"))


def test_a_sync_that_does_not_fit_the_operations_is_refused_at_load() -> None:
    unmapped = CRUD.replace('"name": "{{ record.name }}"', '"phone": {{ record.phone | tojson }}')
    with pytest.raises(Exception, match=r"operations.added.body reads record.phone, a field"):
        defs_from_yaml(dest(ops=unmapped), sync("insert", "nothing"))
    no_remove = CRUD.split("      removed:")[0]
    with pytest.raises(Exception, match=r"field 'delete_behavior'.*no `operations.removed`"):
        defs_from_yaml(dest(ops=no_remove), sync())


def test_a_secret_written_into_the_auth_is_refused() -> None:
    with pytest.raises(Exception, match=r"field 'auth.token': a secret is written into the YAML"):
        defs_from_yaml(dest("auth: {type: bearer, token: literal}"), sync())


def test_a_client_that_paces_itself_retries_its_first_429_after_one_interval() -> None:
    """At the API's own rate a 429 is a few ms between when a request was sent and when the API
    counted it: the retry waits one interval of the budget's rate. A second 429 in a row, or a
    client with no budget, backs off; a wait the server asks for is always kept."""
    import tenacity

    from retl_dagster.destinations.http import TransientHttpError, _WaitHintOrBackoff

    def wait(pace_s: float | None, attempt: int, error: TransientHttpError) -> float:
        state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        state.set_exception((TransientHttpError, error, None))
        return _WaitHintOrBackoff(0.5, 60.0, pace_s)(state)

    throttled = TransientHttpError("HTTP 429", throttled=True)
    assert wait(0.02, 1, throttled) == 0.02
    assert wait(0.02, 2, throttled) >= 1.0
    assert wait(None, 1, throttled) >= 0.5
    assert wait(0.02, 1, TransientHttpError("HTTP 503")) >= 0.5
    assert wait(0.02, 1, TransientHttpError("HTTP 429", 7.0, throttled=True)) == 7.0
