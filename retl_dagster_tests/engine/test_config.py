from __future__ import annotations

import pydantic
import pytest

from retl_dagster.engine.config import ConfigError, FieldMapping, SyncConfig, explain

BASE = {
    "name": "crm",
    "model": {"table": "users"},
    "primary_key": "id",
    "destination": "hook",
    "mappings": [{"from": "email", "to": "email"}],
}


def errors_for(**changes: object) -> list[str]:
    raw = {**BASE, **changes}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(pydantic.ValidationError) as exc:
        SyncConfig.model_validate(raw)
    return explain(exc.value, "crm", "defs/syncs/crm/defs.yaml")


def test_unknown_key_is_named_with_the_accepted_fields() -> None:
    [msg] = errors_for(colour="red")
    assert msg.startswith("sync 'crm' (defs/syncs/crm/defs.yaml), field 'colour'")
    assert "Fix: remove it or fix its spelling" in msg and "primary_key" in msg


def test_missing_primary_key() -> None:
    [msg] = errors_for(primary_key=None)
    assert "field 'primary_key': Field required" in msg


def test_model_needs_exactly_one_source() -> None:
    [msg] = errors_for(model={"table": "users", "sql": "select 1"})
    assert "exactly one of sql, table or dbt" in msg


def test_two_mappings_to_one_field_are_refused() -> None:
    [msg] = errors_for(mappings=[{"from": "a", "to": "x"}, {"from": "b", "to": "x"}])
    # positions count from 1, as a person reads the YAML
    assert msg.startswith(
        "sync 'crm' (defs/syncs/crm/defs.yaml), field 'mappings[2].to': "
        "field 'x' is already fed by "
    )
    assert "mappings[1]. Fix: map each destination field once" in msg


def test_bad_mode_lists_the_modes() -> None:
    [msg] = errors_for(mode="sideways")
    assert "field 'mode'" in msg and "'upsert'" in msg


def test_missing_column_names_the_mapping_index() -> None:
    cfg = SyncConfig.model_validate(
        {**BASE, "mappings": [{"from": "email", "to": "email"}, {"from": "tier", "to": "plan"}]}
    )
    with pytest.raises(ConfigError) as exc:
        cfg.check_columns(["id", "email"])
    assert str(exc.value) == (
        "sync 'crm', field 'mappings[2].from': column 'tier' is not in the model "
        "(columns: id, email). Fix: map an existing column or add it to the model"
    )


@pytest.mark.parametrize(
    ("mapping", "kind", "parts"),
    [
        ({"from": "a", "to": "x"}, "column", [("x::", "a")]),
        ({"static": 5, "to": "y"}, "static", [("y::=5", None)]),
        ({"from": "c", "to": "z", "object": "select"}, "object_select", [("z:select:", "c")]),
        (
            {"to": "o", "object": {"city": "addr.city", "n": "name"}},
            "object_build",
            [
                ("o:{'city': 'addr.city', 'n': 'name'}:", "addr"),
                ("o:{'city': 'addr.city', 'n': 'name'}:", "name"),
            ],
        ),
        ({"from": "items", "to": "i", "array": "select"}, "array_select", [("i::select", "items")]),
        (
            {"from": "items", "to": "i", "array": {"sku": "sku"}},
            "array_pick",
            [("i::{'sku': 'sku'}", "items")],
        ),
    ],
)
def test_each_mapping_kind_hashes_as_state_written_by_earlier_versions(
    mapping: dict[str, object], kind: str, parts: list[tuple[str, str | None]]
) -> None:
    # The state's row hashes are built from these tags: a change here would resend every row.
    m = FieldMapping.model_validate(mapping)
    assert m.kind.tag == kind
    assert m.hash_parts() == parts


def test_a_select_without_from_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="object/array select needs `from`"):
        FieldMapping.model_validate({"static": 1, "to": "x", "array": "select"})


def test_a_misspelt_key_is_named_with_the_key_it_resembles() -> None:
    [msg] = errors_for(primery_key="id")
    assert msg.startswith(
        "sync 'crm' (defs/syncs/crm/defs.yaml), field 'primery_key': "
        "unknown key 'primery_key'. Fix: "
    )
    assert "rename it to `primary_key` (a sync accepts: name, model, primary_key," in msg
    [msg] = errors_for(schedule={"cron": "0 * * * *", "timezon": "UTC"})
    assert (
        "field 'schedule.timezon'" in msg and "rename it to `timezone` (`schedule` accepts" in msg
    )


@pytest.mark.parametrize(
    ("schedule", "field", "words"),
    [
        ({"cron": "*/61 * * * *"}, "schedule.cron", "a step of 61 in the minute field"),
        ({"cron": "61 * * * *"}, "schedule.cron", "is not a cron expression of five fields"),
        ({"cron": "0 0 * * *", "timezone": "Mars/Olympus"}, "schedule.timezone", "time zone"),
        ({"days": ["monday"], "at": "9am"}, "schedule.at", "not a time of day"),
        ({"interval": "7m"}, "schedule.interval", "cannot be a schedule"),
    ],
)
def test_a_schedule_that_cannot_run_is_refused_when_read(
    schedule: dict[str, object], field: str, words: str
) -> None:
    [msg] = errors_for(schedule=schedule)
    assert (
        msg.startswith(f"sync 'crm' (defs/syncs/crm/defs.yaml), field '{field}': ") and words in msg
    )
    assert "Fix: correct the value" not in msg and ". Fix: " in msg


def test_a_model_level_rule_names_its_field() -> None:
    [msg] = errors_for(mode="mirror")
    assert msg.startswith(
        "sync 'crm' (defs/syncs/crm/defs.yaml), field 'delete_behavior': mode mirror deletes"
    )


def test_an_inline_sql_model_reads_the_dbt_models_and_tables_it_names() -> None:
    from retl_dagster.engine.model_sql import sql_reads

    # The demo's dbt project: `users` and `accounts` are models in schema main.
    assert sql_reads("select * from main.users where plan <> 'free'") == [("dbt", "users")]
    assert sql_reads(
        "with recent as (select * from raw.events) "
        "select * from recent join accounts a on a.account_id = recent.account_id"
    ) == [("dbt", "accounts"), ("raw", "events")]  # a CTE is not a table
    assert sql_reads("select from where") == []  # unparseable: runs, only not linked
