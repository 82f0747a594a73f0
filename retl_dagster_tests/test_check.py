"""`retl check NAME`: each destination's read-only connection test, through the command line on a
project's YAML, against the fakes. A good check says what it verified; a bad one names the
destination and the fix, shows no secret, and the fake saw nothing written."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric import rsa

from retl_dagster import cli
from retl_dagster.destinations import build_destination
from retl_dagster.destinations.http import Unreachable
from retl_dagster.engine import declarations
from retl_dagster_tests.destinations.test_google_sheets import EMAIL, SPREADSHEET, key_json
from retl_dagster_tests.fakes.base import FakeServer
from retl_dagster_tests.fakes.braze import FakeBraze
from retl_dagster_tests.fakes.facebook import FakeMetaConversions
from retl_dagster_tests.fakes.google_ads import FakeGoogleAds
from retl_dagster_tests.fakes.google_sheets import FakeGoogleSheets
from retl_dagster_tests.fakes.hubspot import FakeHubSpot
from retl_dagster_tests.fakes.mixpanel import FakeMixpanel
from retl_dagster_tests.fakes.salesforce import FakeSalesforce
from retl_dagster_tests.fakes.segment import FakeSegment
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import PG_URL

Check = Callable[..., Result]


@pytest.fixture
def check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Check:
    """`check(destinations_yaml, name, *sync_yamls)`: writes a project's defs and runs
    `retl check NAME` on it."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    defs = tmp_path / "proj" / "defs"
    monkeypatch.setattr(declarations, "DEFS_DIR", defs)

    def run(destinations: str, name: str, *syncs: str) -> Result:
        (defs / "destinations").mkdir(parents=True, exist_ok=True)
        (defs / "destinations" / "defs.yaml").write_text(
            "type: retl_dagster.components.Destinations\nattributes:\n  destinations:\n"
            + textwrap.indent(textwrap.dedent(destinations).strip(), "    ")
            + "\n"
        )
        for i, sync in enumerate(syncs):
            (defs / "syncs" / str(i)).mkdir(parents=True, exist_ok=True)
            (defs / "syncs" / str(i) / "defs.yaml").write_text(
                "type: retl_dagster.components.Sync\nattributes:\n"
                + textwrap.indent(textwrap.dedent(sync).strip(), "  ")
                + "\n"
            )
        return CliRunner().invoke(cli.main, ["check", name])

    return run


def failed(result: Result, destination: str, *secrets: str) -> str:
    """The error of a failed check: exit 1, one `error:` naming the destination and a fix, and
    none of `secrets`."""
    out = result.output
    assert result.exit_code == 1, out
    assert out.startswith("error: ") and f"destination '{destination}'" in out, out
    assert "Fix:" in out and "Traceback" not in out, out
    for secret in secrets:
        assert secret not in out
    return out


def nothing_written(fake: FakeServer, *allowed_posts: str) -> None:
    """The fake received reads only (and POSTs to the endpoints that write nothing: OAuth token
    exchanges, searches)."""
    assert fake.log, "the check sent nothing at all"
    for entry in fake.log:
        assert entry.method == "GET" or any(p in entry.path for p in allowed_posts), entry


# -- webhook ----------------------------------------------------------------------------------
HOOK = """
hook:
  type: webhook
  url: "{{ env.CHECK_HOOK_URL }}"
  secret: "{{ env.CHECK_HOOK_SECRET }}"
  timeout_s: 2
"""


def test_webhook_check_sends_options_and_posts_nothing(
    check: Check, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_HOOK_SECRET", "hook-s3cret")
    with WebhookReceiver(secret="hook-s3cret") as r:
        monkeypatch.setenv("CHECK_HOOK_URL", r.url)
        result = check(HOOK, "hook")
    assert result.exit_code == 0, result.output
    # The URL came from the environment: it is redacted like any secret there.
    assert result.output.startswith("ok: destination 'hook' (webhook): *** is reachable")
    assert "OPTIONS answered HTTP 204" in result.output
    assert [m for m, _ in r.probes] == ["OPTIONS"]
    assert r.requests == []  # no POST, no record


def test_webhook_check_through_a_sync_name(check: Check, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECK_HOOK_SECRET", "hook-s3cret")
    with WebhookReceiver() as r:
        monkeypatch.setenv("CHECK_HOOK_URL", r.url)
        sync = """
            name: to_hook
            model: {table: people}
            primary_key: id
            destination: hook
            mappings: [{from: email, to: email}]
        """
        result = check(HOOK, "to_hook", sync)
    assert result.exit_code == 0, result.output
    assert "ok: destination 'hook' (webhook)" in result.output
    assert r.requests == []


def test_an_unreachable_webhook_fails_with_a_fix_and_no_secret(
    check: Check, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_HOOK_SECRET", "hook-s3cret")
    monkeypatch.setenv("CHECK_HOOK_URL", "http://127.0.0.1:9/hook?token=url-t0ken")
    out = failed(check(HOOK, "hook"), "hook", "url-t0ken", "hook-s3cret")
    assert "got no usable answer" in out and "check the URL" in out


def test_a_webhook_answering_5xx_is_not_reachable() -> None:
    with WebhookReceiver() as r:
        r.probe_status = 503
        dest = build_destination("hook", "webhook", {"url": r.url})
        with pytest.raises(Unreachable, match="HTTP 503"):
            dest.check()
    assert r.requests == []


def test_unknown_names_are_listed(check: Check) -> None:
    result = check(HOOK, "nope")
    assert result.exit_code == 1
    assert "no destination or sync named 'nope'. Destinations: hook; syncs: none" in result.output


# -- file -------------------------------------------------------------------------------------
def test_file_check_writes_nothing(check: Check, tmp_path: Path) -> None:
    target = tmp_path / "out" / "sub" / "records.jsonl"
    result = check(f'out: {{type: file, path: "{target}"}}', "out")
    assert result.exit_code == 0, result.output
    assert f"{target} does not exist yet; {tmp_path} is writable" in result.output
    assert not (tmp_path / "out").exists()  # nothing created
    target.parent.mkdir(parents=True)
    target.write_text("{}\n")
    again = check(f'out: {{type: file, path: "{target}"}}', "out")
    assert again.exit_code == 0 and "exists and is writable (3 bytes)" in again.output
    assert target.read_text() == "{}\n"


def test_file_check_refuses_a_path_under_a_file(check: Check, tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    out = failed(check(f'out: {{type: file, path: "{tmp_path}/blocker/a.jsonl"}}', "out"), "out")
    assert "is not a directory" in out


# -- HubSpot ----------------------------------------------------------------------------------
HUBSPOT = """
crm:
  type: hubspot
  token: "{{ env.CHECK_HS_TOKEN }}"
  base_url: "{{ env.CHECK_HS_URL }}"
"""


@pytest.fixture
def hubspot(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHubSpot]:
    with FakeHubSpot(token="pat-good") as fake:
        monkeypatch.setenv("CHECK_HS_URL", fake.url)
        yield fake


def test_hubspot_check_reads_one_record(
    check: Check, hubspot: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_HS_TOKEN", "pat-good")
    result = check(HUBSPOT, "crm")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "ok: destination 'crm' (hubspot): HubSpot token accepted; contacts readable"
    )
    sync = """
        name: companies_to_crm
        model: {table: companies}
        primary_key: id
        destination: crm
        object: companies
        mode: upsert
        match: {column: domain, field: domain}
        mappings: [{from: name, to: name}]
    """
    by_sync = check(HUBSPOT, "companies_to_crm", sync)
    assert by_sync.exit_code == 0, by_sync.output
    assert "companies readable" in by_sync.output
    assert [(e.method, e.path) for e in hubspot.log] == [
        ("GET", "/crm/v3/objects/contacts"),
        ("GET", "/crm/v3/objects/companies"),
    ]


def test_hubspot_check_with_a_bad_token(
    check: Check, hubspot: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_HS_TOKEN", "pat-wrong-secret")
    out = failed(check(HUBSPOT, "crm"), "crm", "pat-wrong-secret")
    assert "HubSpot refused the token" in out and "INVALID_AUTHENTICATION" in out
    assert "check the private app token" in out
    nothing_written(hubspot)


# -- Google Sheets ----------------------------------------------------------------------------
SHEETS = f"""
sheet:
  type: google_sheets
  spreadsheet_id: {SPREADSHEET}
  service_account_json: "{{{{ env.CHECK_SA_JSON }}}}"
  base_url: "{{{{ env.CHECK_SHEETS_URL }}}}"
"""


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def sheets(
    monkeypatch: pytest.MonkeyPatch, private_key: rsa.RSAPrivateKey
) -> Iterator[FakeGoogleSheets]:
    with FakeGoogleSheets({EMAIL: private_key.public_key()}, SPREADSHEET, EMAIL) as fake:
        monkeypatch.setenv("CHECK_SHEETS_URL", fake.url)
        monkeypatch.setenv("CHECK_SA_JSON", key_json(private_key, f"{fake.url}/token"))
        yield fake


def test_google_sheets_check_reads_the_title(check: Check, sheets: FakeGoogleSheets) -> None:
    result = check(SHEETS, "sheet")
    assert result.exit_code == 0, result.output
    assert f"Google accepted service account {EMAIL}; spreadsheet 'Reverse ETL' readable" in (
        result.output
    )
    assert [k for k, _ in sheets.calls] == ["token", "get"]
    assert sheets.contract_errors == []
    nothing_written(sheets, "/token")


def test_google_sheets_check_with_a_key_google_does_not_know(
    check: Check, sheets: FakeGoogleSheets, monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = key_json(stranger, f"{sheets.url}/token")
    monkeypatch.setenv("CHECK_SA_JSON", bad)
    out = failed(check(SHEETS, "sheet"), "sheet", json.loads(bad)["private_key"][40:80])
    assert "the token endpoint refused service account" in out
    assert [k for k, _ in sheets.calls] == ["token"]


def test_google_sheets_check_of_a_spreadsheet_not_shared(
    check: Check, sheets: FakeGoogleSheets
) -> None:
    sheets.spreadsheets[SPREADSHEET].shared_with.clear()
    out = failed(check(SHEETS, "sheet"), "sheet")
    assert f"Fix: share the spreadsheet with {EMAIL}" in out
    nothing_written(sheets, "/token")


# -- Meta Conversions API ---------------------------------------------------------------------
META = """
pixel:
  type: facebook_conversions
  access_token: "{{ env.CHECK_META_TOKEN }}"
  pixel_id: "123456"
  base_url: "{{ env.CHECK_META_URL }}"
"""


@pytest.fixture
def meta(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMetaConversions]:
    with FakeMetaConversions(access_token="EAAgood", pixel_id="123456") as fake:
        monkeypatch.setenv("CHECK_META_URL", fake.url)
        yield fake


def test_facebook_check_reads_the_pixel(
    check: Check, meta: FakeMetaConversions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_META_TOKEN", "EAAgood")
    result = check(META, "pixel")
    assert result.exit_code == 0, result.output
    assert "Meta access token accepted; pixel 123456 ('Fake pixel') readable" in result.output
    assert [(e.method, e.path) for e in meta.log] == [("GET", "/v25.0/123456")]
    assert meta.events == []


def test_facebook_check_with_a_bad_token_and_a_wrong_pixel(
    check: Check, meta: FakeMetaConversions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_META_TOKEN", "EAAwrong-secret")
    out = failed(check(META, "pixel"), "pixel", "EAAwrong-secret")
    assert "Meta refused the access token" in out and "code 190" in out
    monkeypatch.setenv("CHECK_META_TOKEN", "EAAgood")
    other = failed(check(META.replace('"123456"', '"999"'), "pixel"), "pixel", "EAAgood")
    assert "pixel 999 cannot be read" in other and "check pixel_id" in other
    nothing_written(meta)
    assert meta.events == []


# -- Google Ads -------------------------------------------------------------------------------
ADS = """
ads:
  type: google_ads
  customer_id: "123-456-7890"
  developer_token: "{{ env.CHECK_GADS_DEV }}"
  client_id: cid.apps.example
  client_secret: "{{ env.CHECK_GADS_SECRET }}"
  refresh_token: "{{ env.CHECK_GADS_REFRESH }}"
  base_url: "{{ env.CHECK_GADS_URL }}"
  token_url: "{{ env.CHECK_GADS_TOKEN_URL }}"
"""


@pytest.fixture
def gads(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGoogleAds]:
    monkeypatch.setenv("CHECK_GADS_DEV", "dev-token")
    monkeypatch.setenv("CHECK_GADS_SECRET", "client-s3cret")
    monkeypatch.setenv("CHECK_GADS_REFRESH", "1//refresh-good")
    with FakeGoogleAds(
        customer_id="1234567890",
        developer_token="dev-token",
        client_id="cid.apps.example",
        client_secret="client-s3cret",
        refresh_token="1//refresh-good",
    ) as fake:
        fake.user_lists["555"] = set()
        monkeypatch.setenv("CHECK_GADS_URL", fake.url)
        monkeypatch.setenv("CHECK_GADS_TOKEN_URL", f"{fake.url}/token")
        yield fake


def test_google_ads_check_searches_the_customer(check: Check, gads: FakeGoogleAds) -> None:
    result = check(ADS, "ads")
    assert result.exit_code == 0, result.output
    assert "Google Ads credentials accepted; customer 1234567890 readable" in result.output
    assert [e.path for e in gads.log] == ["/token", "/v25/customers/1234567890/googleAds:search"]
    assert gads.jobs == {}


def test_google_ads_check_of_a_customer_match_list(gads: FakeGoogleAds) -> None:
    options = {
        "customer_id": "1234567890",
        "developer_token": "dev-token",
        "client_id": "cid.apps.example",
        "client_secret": "client-s3cret",
        "refresh_token": "1//refresh-good",
        "base_url": gads.url,
        "token_url": f"{gads.url}/token",
    }
    dest = build_destination("ads", "google_ads", options)
    assert dest.check("customer_match:555").endswith("user list 555 exists")
    with pytest.raises(Exception, match="has no user list 556. Fix: set the sync's object"):
        dest.check("customer_match:556")
    assert gads.jobs == {}


def test_google_ads_check_with_a_bad_refresh_token(
    check: Check, gads: FakeGoogleAds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_GADS_REFRESH", "1//refresh-revoked")
    out = failed(check(ADS, "ads"), "ads", "1//refresh-revoked", "client-s3cret")
    assert "Google refused the OAuth refresh token" in out
    assert [e.path for e in gads.log] == ["/token"]
    monkeypatch.setenv("CHECK_GADS_REFRESH", "1//refresh-good")
    monkeypatch.setenv("CHECK_GADS_DEV", "dev-wrong")
    dev = failed(check(ADS, "ads"), "ads", "dev-wrong")
    assert "DEVELOPER_TOKEN" in dev and "check developer_token" in dev
    nothing_written(gads, "/token", "googleAds:search")


# -- Salesforce -------------------------------------------------------------------------------
SALESFORCE = """
sf:
  type: salesforce
  login_url: "{{ env.CHECK_SF_URL }}"
  client_id: cid
  client_secret: "{{ env.CHECK_SF_SECRET }}"
  refresh_token: "{{ env.CHECK_SF_REFRESH }}"
"""


@pytest.fixture
def salesforce(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSalesforce]:
    monkeypatch.setenv("CHECK_SF_REFRESH", "refresh-tok")
    with FakeSalesforce("cid", "sf-s3cret", refresh_token="refresh-tok") as fake:
        monkeypatch.setenv("CHECK_SF_URL", fake.url)
        yield fake


def test_salesforce_check_logs_in_and_reads_limits(
    check: Check, salesforce: FakeSalesforce, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_SF_SECRET", "sf-s3cret")
    result = check(SALESFORCE, "sf")
    assert result.exit_code == 0, result.output
    assert "Salesforce login accepted; API v62.0 answers (" in result.output
    assert "daily API requests left" in result.output
    assert [(e.method, e.path) for e in salesforce.log] == [
        ("POST", "/services/oauth2/token"),
        ("GET", "/services/data/v62.0/limits"),
    ]
    assert salesforce.records == {}


def test_salesforce_check_with_a_bad_client_secret(
    check: Check, salesforce: FakeSalesforce, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_SF_SECRET", "sf-wrong-secret")
    out = failed(check(SALESFORCE, "sf"), "sf", "sf-wrong-secret", "refresh-tok")
    assert "Salesforce login failed" in out and "invalid_client" in out
    assert "check client_id, client_secret and refresh_token" in out
    nothing_written(salesforce, "/services/oauth2/token")


# -- what can only be partly checked ----------------------------------------------------------
def test_segment_and_braze_checks_only_reach_the_endpoint() -> None:
    with FakeSegment(write_key="wk") as seg:
        said = build_destination(
            "seg", "segment", {"write_key": "wk-unchecked", "base_url": seg.url}
        ).check()
    assert "reachable" in said and "write key cannot be checked" in said
    assert "wk-unchecked" not in said
    assert seg.calls == {}
    nothing_written(seg)
    with FakeBraze(api_key="bk") as braze:
        said = build_destination("br", "braze", {"api_key": "bk", "base_url": braze.url}).check()
    assert "reachable" in said and "API key cannot be checked" in said
    nothing_written(braze)


def test_mixpanel_check_of_the_service_account() -> None:
    with FakeMixpanel("tok", "sa.user", "sa-s3cret", project_id="42") as mp:
        base = {"project_token": "tok", "base_url": mp.url, "project_id": "42"}
        good = {**base, "service_account_username": "sa.user"}
        said = build_destination(
            "mp", "mixpanel", {**good, "service_account_secret": "sa-s3cret"}
        ).check()
        assert "service account sa.user accepted, project 42 visible" in said
        assert "project token cannot be checked" in said
        with pytest.raises(Exception, match="refused service account sa.user") as refused:
            build_destination(
                "mp", "mixpanel", {**good, "service_account_secret": "sa-wrong"}
            ).check()
        assert "sa-wrong" not in str(refused.value)
        with pytest.raises(Exception, match="no access to project 7"):
            build_destination(
                "mp",
                "mixpanel",
                {**good, "service_account_secret": "sa-s3cret", "project_id": "7"},
            ).check()
        alone = build_destination("mp", "mixpanel", base).check()
        assert "reachable" in alone
    nothing_written(mp)
    assert mp.updates == [] and mp.events == {}


@pytest.mark.skipif(not PG_URL, reason="no PostgreSQL: export RETL_TEST_PG_URL")
def test_postgres_check(check: Check, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    assert PG_URL
    url = sa.make_url(PG_URL).set(drivername="postgresql+psycopg")
    good = url.render_as_string(hide_password=False)
    dest = build_destination("pg", "postgres", {"url": good})
    assert dest.check().startswith(f"logged in to database {url.database} as {url.username}")
    with pytest.raises(Exception, match="schema retl_check_absent. Fix: create the schema"):
        dest.check("retl_check_absent.t")
    assert "does not exist yet and" in dest.check("retl_check_absent_t")
    engine = sa.create_engine(good)
    with engine.begin() as conn:
        conn.execute(sa.text("create table retl_check_t (id int primary key, email text)"))
    try:
        said = dest.check("public.retl_check_t")
        assert "table public.retl_check_t exists (2 columns) and may be written" in said
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("drop table retl_check_t"))
        engine.dispose()
        dest.close()
    monkeypatch.setenv("CHECK_PG_URL", url.set(password="wrong-pw-123").render_as_string(False))
    out = failed(check('pg: {type: postgres, url: "{{ env.CHECK_PG_URL }}"}', "pg"), "pg")
    assert "cannot connect" in out and "wrong-pw-123" not in out
    assert os.environ["CHECK_PG_URL"] not in out
