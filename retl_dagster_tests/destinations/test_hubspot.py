"""HubSpot: real syncs through Dagster against the fake HubSpot API on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.components.references import remote_property_errors
from retl_dagster.destinations.base import Batch, Record
from retl_dagster.destinations.impl.hubspot import HubSpotConfig, HubSpotDestination
from retl_dagster.engine.config import ConfigError
from retl_dagster.runner import run_sync
from retl_dagster_tests.fakes.hubspot import FakeHubSpot
from retl_dagster_tests.harness import defs_from_yaml, sql

TOKEN = "pat-na1-fake-token"


@pytest.fixture
def hubspot(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHubSpot]:
    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    fake = FakeHubSpot(TOKEN)
    with fake:
        monkeypatch.setenv("HUBSPOT_URL", fake.url)
        yield fake
    # Every body any test sent matched HubSpot's own request models (contracts/hubspot.py).
    assert fake.contract_errors == []


def destination(extra: str = "") -> str:
    return f"""
destinations:
  hubspot:
    type: hubspot
    token: "{{{{ env.HUBSPOT_TOKEN }}}}"
    base_url: "{{{{ env.HUBSPOT_URL }}}}"
    backoff_initial_s: 0.05
    backoff_max_s: 1
    {extra}
"""


def sync(mode: str = "mirror", delete: str = "delete") -> str:
    return f"""
name: contacts
model: {{table: people}}
primary_key: id
destination: hubspot
object: contacts
mode: {mode}
match: {{column: email, field: email}}
mappings:
  - {{from: email, to: email}}
  - {{from: first, to: firstname}}
  - {{from: plan, to: plan}}
delete_behavior: {delete}
"""


def people(path: Path, n: int) -> None:
    sql(
        path,
        f"""create or replace table people as select i as id,
        'person' || i || '@example.com' as email, 'First' || i as first,
        case when i % 2 = 0 then 'pro' else 'free' end as plan from range(1, {n + 1}) t(i)""",
    )


def contacts(fake: FakeHubSpot) -> dict[str, dict[str, str]]:
    return {p["email"]: p for p in fake.objects["contacts"].values()}


def test_upsert_changes_and_deletes(
    hubspot: FakeHubSpot, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 150)
    defs = defs_from_yaml(destination(), sync())
    first = run_sync(defs, "contacts", instance)
    assert first.status == "succeeded", first.summary
    assert len(contacts(hubspot)) == 150
    assert hubspot.count("/batch/upsert") == 2  # 100 + 50: HubSpot's batch limit
    assert contacts(hubspot)["person7@example.com"]["firstname"] == "First7"

    sql(warehouse_path, "update people set plan = 'enterprise' where id <= 3")
    sql(warehouse_path, "delete from people where id > 140")
    second = run_sync(defs, "contacts", instance)
    assert (second.summary["changed"], second.summary["removed"]) == (3, 10)
    assert second.status == "succeeded"
    assert len(contacts(hubspot)) == 140 and len(hubspot.archived["contacts"]) == 10
    assert contacts(hubspot)["person2@example.com"]["plan"] == "enterprise"
    # Deletes used the ids HubSpot returned on the first run: no lookups needed.
    assert hubspot.count("/batch/read") == 0


def test_an_invalid_value_is_isolated_and_rejected_with_hubspots_message(
    hubspot: FakeHubSpot, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 60)
    sql(warehouse_path, "update people set email = 'broken-at-example.com' where id = 17")
    outcome = run_sync(
        defs_from_yaml(destination(), sync("upsert", "nothing")), "contacts", instance
    )
    assert outcome.status == "partial"
    assert (outcome.summary["succeeded"], outcome.summary["rejected"]) == (59, 1)
    [(key, error)] = sql(
        warehouse_path,
        "select _retl_key, error from _retl.sync_record_results where status = 'rejected'",
    )
    assert key == "17"
    assert error.startswith("VALIDATION_ERROR: Property values were not valid")
    assert "INVALID_EMAIL" in error
    assert len(contacts(hubspot)) == 59


def test_rate_limit_survived_with_nothing_lost_or_doubled(
    hubspot: FakeHubSpot, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    hubspot.rate_limit, hubspot.window_s = 2, 0.5
    people(warehouse_path, 500)
    defs = defs_from_yaml(destination("batch_size: 20"), sync("upsert", "nothing"))
    outcome = run_sync(defs, "contacts", instance)
    assert outcome.status == "succeeded"
    assert hubspot.count("/batch/upsert", 429) > 0  # the fake did push back
    assert len(hubspot.objects["contacts"]) == 500  # no duplicates, none lost


def test_a_client_side_limit_avoids_429s(
    hubspot: FakeHubSpot, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    hubspot.rate_limit, hubspot.window_s = 3, 1.0
    people(warehouse_path, 100)
    defs = defs_from_yaml(
        destination("batch_size: 20\n    requests_per_second: 2"), sync("upsert", "nothing")
    )
    assert run_sync(defs, "contacts", instance).status == "succeeded"
    assert hubspot.count("/batch/upsert", 429) == 0
    assert len(hubspot.objects["contacts"]) == 100


def test_update_reports_unknown_contacts_from_a_207(
    hubspot: FakeHubSpot, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 5)
    hubspot.objects["contacts"]["1"] = {"email": "person1@example.com"}
    hubspot.objects["contacts"]["2"] = {"email": "person2@example.com"}
    outcome = run_sync(
        defs_from_yaml(destination(), sync("update", "nothing")), "contacts", instance
    )
    assert (outcome.summary["succeeded"], outcome.summary["rejected"]) == (2, 3)
    errors = {
        e
        for (e,) in sql(
            warehouse_path,
            "select distinct error from _retl.sync_record_results where status = 'rejected'",
        )
    }
    assert errors == {
        "OBJECT_NOT_FOUND: Could not get some CONTACT objects, they may be deleted "
        "or not exist. Check that ids are valid."
    }
    assert len(hubspot.objects["contacts"]) == 2  # update never creates


def test_insert_leaves_existing_contacts_alone(
    hubspot: FakeHubSpot, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 4)
    hubspot.objects["contacts"]["9"] = {"email": "person2@example.com", "firstname": "Keep"}
    outcome = run_sync(
        defs_from_yaml(destination(), sync("insert", "nothing")), "contacts", instance
    )
    assert outcome.status == "succeeded"
    assert contacts(hubspot)["person2@example.com"]["firstname"] == "Keep"
    assert len(contacts(hubspot)) == 4


def test_a_wrong_token_fails_the_run_saying_so(
    hubspot: FakeHubSpot,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUBSPOT_TOKEN", "wrong")
    people(warehouse_path, 3)
    outcome = run_sync(defs_from_yaml(destination(), sync()), "contacts", instance)
    assert outcome.status == "failed"
    assert "INVALID_AUTHENTICATION" in outcome.summary["error"]
    assert "wrong" not in outcome.summary["error"]


def test_validate_refuses_a_property_hubspot_does_not_have(hubspot: FakeHubSpot) -> None:
    defs = defs_from_yaml(destination(), sync().replace("to: firstname", "to: first_name"))
    [error] = remote_property_errors(defs)
    assert error.startswith(
        "sync 'contacts', field 'mappings[2].to': 'first_name' is not a "
        "property of hubspot contacts. Fix: use one of city, company, email,"
    )
    assert remote_property_errors(defs_from_yaml(destination(), sync())) == []


def test_validate_reports_a_bad_token_without_showing_it(
    hubspot: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBSPOT_TOKEN", "pat-wrong-secret")
    [error] = remote_property_errors(defs_from_yaml(destination(), sync()))
    assert "INVALID_AUTHENTICATION" in error and "pat-wrong-secret" not in error


def test_a_malformed_answer_rejects_the_batch_with_its_body(
    hubspot: FakeHubSpot, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    people(warehouse_path, 30)
    hubspot.garbage = 1
    out = run_sync(defs_from_yaml(destination(), sync("upsert", "nothing")), "contacts", instance)
    assert out.status == "partial" and out.summary["rejected"] == 30
    [(error,)] = sql(warehouse_path, "select distinct error from _retl.sync_record_results")
    assert error.startswith("malformed answer from the destination (JSONDecodeError")
    assert "<html>upstream proxy error</html>" in error
    again = run_sync(defs_from_yaml(destination(), sync("upsert", "nothing")), "contacts", instance)
    assert again.summary["succeeded"] == 30 and len(hubspot.objects["contacts"]) == 30


def test_secrets_appear_nowhere(
    hubspot: FakeHubSpot,
    instance: dg.DagsterInstance,
    warehouse_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    people(warehouse_path, 20)
    sql(warehouse_path, "update people set email = 'bad' where id = 2")
    defs = defs_from_yaml(destination(), sync("upsert", "nothing"))
    outcomes = [run_sync(defs, "contacts", instance)]
    monkeypatch.setenv("HUBSPOT_TOKEN", "pat-na1-wrong-secret-token")
    outcomes.append(
        run_sync(defs_from_yaml(destination(), sync("upsert", "nothing")), "contacts", instance)
    )
    assert outcomes[0].status == "partial" and outcomes[1].status == "failed"
    texts = [repr(o.summary) for o in outcomes]
    for run in instance.get_runs():
        texts += [repr(e) for e in instance.all_logs(run.run_id)]
    for table in (
        "sync_runs",
        "sync_record_results",
        "contacts__state",
        "contacts__pending",
        "contacts__diff",
    ):
        texts.append(repr(sql(warehouse_path, f"select * from _retl.{table}")))
    texts.append(repr(defs.resources))
    blob = "\n".join(texts)
    assert "INVALID_AUTHENTICATION" in blob and "INVALID_EMAIL" in blob  # the errors are there
    assert TOKEN not in blob and "pat-na1-wrong-secret-token" not in blob


def test_numbers_booleans_dates_and_nulls_arrive_as_hubspots_strings(
    hubspot: FakeHubSpot, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    sql(
        warehouse_path,
        """create or replace table people as select * from (values
        (1, 'a@example.com', 1234.5::decimal(10, 2), true, date '2015-05-01',
            timestamp '2015-04-02 18:02:46', null::varchar),
        (2, 'b@example.com', 7::decimal(10, 2), false, date '2024-02-29',
            timestamptz '2024-02-29 12:00:00+01:00', 'Paris')
        ) t(id, email, ltv, newsletter, signup_date, last_seen, city)""",
    )
    config = sync("upsert", "nothing").replace(
        "  - {from: first, to: firstname}\n  - {from: plan, to: plan}\n",
        "  - {from: ltv, to: ltv}\n  - {from: newsletter, to: newsletter}\n"
        "  - {from: signup_date, to: signup_date}\n  - {from: last_seen, to: last_seen}\n"
        "  - {from: city, to: city}\n",
    )
    outcome = run_sync(defs_from_yaml(destination(), config), "contacts", instance)
    assert outcome.status == "succeeded", outcome.summary
    a, b = contacts(hubspot)["a@example.com"], contacts(hubspot)["b@example.com"]
    # HubSpot's docs: numbers as decimal text, checkboxes "true"/"false", date properties as
    # Unix ms at midnight UTC, datetimes as Unix ms; "" clears a property.
    assert (a["ltv"], a["newsletter"], a["city"]) == ("1234.5", "true", "")
    assert (b["ltv"], b["newsletter"], b["city"]) == ("7", "false", "Paris")
    assert a["signup_date"] == "1430438400000"  # 2015-05-01T00:00:00Z
    assert a["last_seen"] == "1427997766000"  # 2015-04-02T18:02:46Z, HubSpot's own example
    assert b["signup_date"] == "1709164800000"
    assert b["last_seen"] == "1709204400000"  # 11:00 UTC
    [body] = [e.body for e in hubspot.log if "/batch/upsert" in e.path]
    assert all(isinstance(v, str) for item in body["inputs"] for v in item["properties"].values())


def test_an_object_mapping_is_refused_when_the_sync_is_declared(hubspot: FakeHubSpot) -> None:
    config = sync("upsert", "nothing").replace(
        "  - {from: plan, to: plan}\n", "  - {to: city, object: {name: first, tier: plan}}\n"
    )
    with pytest.raises(ConfigError) as exc:
        defs_from_yaml(destination(), config)
    error = str(exc.value)
    assert error.startswith("sync 'contacts', field 'mappings[3]'")
    assert "every HubSpot property value is a string" in error and "Fix: map a scalar" in error


def test_a_struct_column_fails_the_run_before_anything_is_sent(
    hubspot: FakeHubSpot, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    # Only the warehouse knows `plan` is a STRUCT here: refused once its type is read.
    people(warehouse_path, 3)
    sql(
        warehouse_path,
        "create or replace table people as select id, email, first, "
        "{'tier': plan} as plan from people",
    )
    outcome = run_sync(
        defs_from_yaml(destination(), sync("upsert", "nothing")), "contacts", instance
    )
    assert outcome.status == "failed"
    error = str(outcome.summary["error"])
    assert "every HubSpot property value is a string" in error
    assert "Fix: map a scalar column, or cast the value to text" in error
    assert hubspot.count("/batch/") == 0


def test_a_delete_without_a_known_id_reads_then_archives_within_the_contract(
    hubspot: FakeHubSpot,
) -> None:
    hubspot.objects["contacts"]["7"] = {"email": "gone@example.com"}
    config = HubSpotConfig(token=TOKEN, base_url=hubspot.url)  # type: ignore[arg-type]
    with HubSpotDestination("hubspot", config) as dest:
        result = dest.deliver(
            Batch(
                "contacts",
                "20260101T000000Z",
                "mirror",
                "contacts",
                [Record("removed", "k1", match_value="gone@example.com")],
                match_field="email",
            )
        )
    assert result.rejected == {}
    [read] = [e.body for e in hubspot.log if e.path.endswith("/batch/read")]
    assert read["propertiesWithHistory"] == []  # required by HubSpot's model
    assert hubspot.archived["contacts"] == {"7"}


def test_overwrite_false_fills_only_what_hubspot_has_empty(
    hubspot: FakeHubSpot, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    """A sales rep's typed value survives; an empty field is filled; a new contact gets all."""
    people(warehouse_path, 3)
    hubspot.objects["contacts"]["901"] = {
        "email": "person1@example.com",
        "firstname": "Typed By A Rep",
        "plan": "",
    }
    yaml = (
        sync(mode="upsert", delete="nothing")
        .replace("{from: first, to: firstname}", "{from: first, to: firstname, overwrite: false}")
        .replace("{from: plan, to: plan}", "{from: plan, to: plan, overwrite: false}")
    )
    outcome = run_sync(defs_from_yaml(destination(), yaml), "contacts", instance)
    assert outcome.status == "succeeded", outcome.summary
    people_now = contacts(hubspot)
    assert people_now["person1@example.com"]["firstname"] == "Typed By A Rep"  # kept
    assert people_now["person1@example.com"]["plan"] == "free"  # was empty: filled
    assert people_now["person2@example.com"]["firstname"] == "First2"  # new: everything


def test_overwrite_false_is_refused_where_the_destination_cannot_read_values() -> None:
    from retl_dagster_tests.harness import WEBHOOK_DESTINATION
    from retl_dagster_tests.test_sync_e2e import SYNC

    yaml = SYNC.replace("{from: plan, to: plan}", "{from: plan, to: plan, overwrite: false}")
    with pytest.raises(Exception, match=r"mappings\[2\]\.overwrite.*webhook cannot read"):
        defs_from_yaml(WEBHOOK_DESTINATION, yaml)
