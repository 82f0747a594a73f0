"""Destination types from other packages (entry point group `retl_dagster.destinations`): the
sample plugin `retl_dagster_tests/plugin_sample` (type `echo`) is installed by `.ci/run`."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.destinations import destination_class, destination_types, registry
from retl_dagster.destinations.base import DestinationConfigError
from retl_dagster.runner import run_sync
from retl_dagster_tests.harness import defs_from_yaml, sql

SYNC = """
name: echoed
model: {table: users}
primary_key: id
destination: out
mode: upsert
mappings:
  - {from: email, to: email}
"""


def _entry(name: str, value: str = "retl_echo_plugin.echo:EchoDestination") -> object:
    return importlib.metadata.EntryPoint(name, value, registry.ENTRY_POINT_GROUP)


def test_a_plugin_type_runs_through_dagster_and_delivers(
    instance: dg.DagsterInstance, warehouse_path: Path, tmp_path: Path
) -> None:
    sql(
        warehouse_path,
        "create table users as select i as id, 'u' || i || '@x.io' as email from range(3) t(i)",
    )
    out = tmp_path / "echo.jsonl"
    defs = defs_from_yaml(f"destinations:\n  out: {{type: echo, path: '{out}'}}\n", SYNC)
    assert run_sync(defs, "echoed", instance).status == "succeeded"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["fields"]["email"] for r in lines) == ["u0@x.io", "u1@x.io", "u2@x.io"]


def test_an_unknown_type_lists_the_plugins_types() -> None:
    assert "echo" in destination_types() and "http" in destination_types()
    with pytest.raises(Exception, match=r"unknown type 'ecko'. Fix: use one of \[.*'echo'"):
        defs_from_yaml("destinations:\n  out: {type: ecko, path: x}\n", SYNC)


def test_a_plugin_cannot_take_a_builtin_name(monkeypatch: pytest.MonkeyPatch) -> None:
    claims = {"echo": _entry("echo"), "webhook": _entry("webhook")}
    monkeypatch.setattr(registry, "_entry_points", lambda: claims)
    with pytest.raises(DestinationConfigError) as caught:
        destination_class("hook", "webhook")
    message = str(caught.value)
    assert "claims 'webhook'" in message and "retl_echo_plugin.echo:EchoDestination" in message
    assert "webhook.client:WebhookDestination" in message and "another type name" in message
    assert destination_types().count("webhook") == 1


def test_a_plugin_class_is_validated_like_a_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    claims = {
        "mistyped": _entry("mistyped"),
        "not_a_destination": _entry("not_a_destination", "json:JSONDecoder"),
        "missing": _entry("missing", "no_such_module_xyz:Thing"),
    }
    monkeypatch.setattr(registry, "_entry_points", lambda: claims)
    with pytest.raises(TypeError, match="has type 'echo', not 'mistyped'"):
        destination_class("d", "mistyped")
    with pytest.raises(TypeError, match="json:JSONDecoder is not a Destination subclass"):
        destination_class("d", "not_a_destination")
    with pytest.raises(TypeError, match="cannot load: No module named 'no_such_module_xyz'"):
        destination_class("d", "missing")
