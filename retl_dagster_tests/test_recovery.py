"""Nothing lost, nothing doubled: faults, crashes, concurrent runs, reset and replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from retl_dagster.cli import ensure_dagster_home
from retl_dagster.components.sync import job_name
from retl_dagster.runner import SyncAlreadyRunning, run_sync
from retl_dagster_tests.fakes.webhook_receiver import WebhookReceiver
from retl_dagster_tests.harness import ALL_WAREHOUSES, WEBHOOK_DESTINATION, defs_from_yaml
from retl_dagster_tests.test_sync_e2e import SYNC, make_customers, sql

WAREHOUSES = ALL_WAREHOUSES

ROOT = Path(__file__).resolve().parents[1]


def model_ids(path: Path) -> set[str]:
    return {str(i) for (i,) in sql(path, "select id from customers")}


def test_faults_leave_the_destination_equal_to_the_model(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    receiver.chaos = 0.25
    make_customers(warehouse_path, 600)
    dest = WEBHOOK_DESTINATION.replace(
        "backoff_max_s: 0.2", "backoff_max_s: 0.2\n    timeout_s: 0.4\n    max_attempts: 12"
    )
    defs = defs_from_yaml(dest, SYNC.replace("delete_behavior: delete", "delete_behavior: delete"))
    first = run_sync(defs, "customers_hook", instance)
    assert first.status == "succeeded", first.summary
    sql(warehouse_path, "update customers set plan = 'changed' where id % 7 = 0")
    sql(warehouse_path, "delete from customers where id % 11 = 0")
    second = run_sync(defs, "customers_hook", instance)
    assert second.status == "succeeded", second.summary

    faults = Counter(r.status for r in receiver.requests)
    assert faults[429] + faults[503] > 0
    assert receiver.duplicates_dropped > 0  # answers lost after applying: resent, dropped once
    assert set(receiver.store) == model_ids(warehouse_path)
    assert all(f["plan"] == "changed" for i, f in receiver.store.items() if int(i) % 7 == 0)


def child(
    tmp: Path, env: dict[str, str], sync_yaml: str, name: str, destinations: str = ""
) -> subprocess.Popen[str]:
    (tmp / f"{name}.yaml").write_text(sync_yaml)
    (tmp / "destinations.yaml").write_text(destinations or WEBHOOK_DESTINATION)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retl_dagster_tests.child_sync",
            str(tmp / "destinations.yaml"),
            str(tmp / f"{name}.yaml"),
            name,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def home_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    """An instance at a DAGSTER_HOME that child processes share with the test."""
    home = tmp_path / "shared_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_home()  # the instance `retl` makes: pool and run-queue limits included
    return dg.DagsterInstance.get()


def test_a_killed_sync_resumes_without_loss_and_resends_only_the_last_batches(
    receiver: WebhookReceiver,
    home_instance: dg.DagsterInstance,
    warehouse_path: Path,
    tmp_path: Path,
) -> None:
    make_customers(warehouse_path, 500)  # 10 batches of 50
    # Slow enough that a commit (several statements to the fake Snowflake server, on a busy
    # machine) ends before the next batch is answered.
    receiver.delay_s = 0.3
    # One batch in flight at a time, so what can be resent is exactly countable.
    serial = WEBHOOK_DESTINATION + "    concurrency: 1\n"
    proc = child(tmp_path, dict(os.environ), SYNC, "customers_hook", serial)
    deadline = time.monotonic() + 60
    while len([r for r in receiver.requests if r.status == 200]) < 6:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # What the dead run committed: acknowledged batches (a batch in flight may still land).
    [(committed,)] = sql(warehouse_path, "select count(*) from _retl.customers_hook__state")
    # Acknowledged batches are committed at least every COMMIT_EVERY_S (0.25 s): with 0.3 s
    # a batch, at most 2 of the 6 answered are not committed yet.
    assert committed >= 200

    # The dead run is seen for what it is, and the sync shows Incomplete.
    [run] = home_instance.get_runs(dg.RunsFilter(job_name=job_name("customers_hook")))
    assert run.status == dg.DagsterRunStatus.STARTED
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
    receiver.delay_s = 0
    resumed = run_sync(defs, "customers_hook", home_instance)
    assert home_instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    statuses = dict(sql(warehouse_path, "select run_id, status from _retl.sync_runs"))
    assert statuses[run.tags["dagster/partition"]] == "incomplete"

    assert resumed.status == "succeeded"
    ids = [r["id"] for r in receiver.delivered()]
    assert set(ids) == model_ids(warehouse_path)  # lost = 0
    resent = len(ids) - len(set(ids))
    # At most the batch in flight and those acknowledged since the last commit (<= 0.25 s).
    assert resent <= 150
    assert resumed.summary["added"] == 500 - committed


def test_the_same_sync_twice_runs_once(
    receiver: WebhookReceiver,
    home_instance: dg.DagsterInstance,
    warehouse_path: Path,
    tmp_path: Path,
) -> None:
    make_customers(warehouse_path, 200)
    receiver.delay_s = 0.2
    # The first batch is held until the second run has been tried, so the first run is still
    # running then however slowly this process builds its definitions (a busy machine once
    # let the first run finish first).
    arrived, released = threading.Event(), threading.Event()

    def hold(body: dict[str, object]) -> None:
        if arrived.is_set():
            return  # only the first request is held
        arrived.set()
        released.wait(timeout=120)

    receiver.before_answer = hold
    proc = child(tmp_path, dict(os.environ), SYNC, "customers_hook")
    deadline = time.monotonic() + 60
    while not arrived.wait(timeout=0.02):
        assert time.monotonic() < deadline and proc.poll() is None
    try:
        defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
        with pytest.raises(SyncAlreadyRunning, match="sync customers_hook is already running"):
            run_sync(defs, "customers_hook", home_instance)
    finally:
        released.set()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["succeeded"] == 200


@pytest.mark.warehouses("duckdb", "postgres")  # DuckDB's single writer; a server for contrast
def test_two_syncs_on_one_duckdb_file_at_once_both_succeed(
    receiver: WebhookReceiver,
    home_instance: dg.DagsterInstance,
    warehouse_path: Path,
    tmp_path: Path,
) -> None:
    make_customers(warehouse_path, 300)
    other = SYNC.replace("name: customers_hook", "name: customers_copy")
    procs = [
        child(tmp_path, dict(os.environ), SYNC, "customers_hook"),
        child(tmp_path, dict(os.environ), other, "customers_copy"),
    ]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["succeeded"] == 300
    ids = Counter(r["id"] for r in receiver.delivered())
    assert set(ids) == model_ids(warehouse_path) and set(ids.values()) == {2}


@pytest.mark.warehouses("duckdb", "postgres")  # DuckDB's single writer; a server for contrast
def test_syncs_to_different_destinations_deliver_side_by_side_on_one_duckdb_file(
    receiver: WebhookReceiver,
    home_instance: dg.DagsterInstance,
    warehouse_path: Path,
    tmp_path: Path,
) -> None:
    """DuckDB has one writer per file, yet a load holds it only to commit: two syncs to two
    destinations are delivering at the same time (each in its own destination's pool).

    However slowly the two processes start, the receiver answers neither sync until both have
    sent a request: that can only happen if nothing serialises them (a load that held the
    warehouse, or one pool for both, keeps the other from sending until it is done, and the
    wait runs out)."""
    make_customers(warehouse_path, 300)  # 6 batches of 50 per sync, one at a time
    receiver.delay_s = 0.05
    arrived = {"customers_hook": threading.Event(), "customers_b": threading.Event()}
    waited_out: list[str] = []

    def gate(body: dict[str, object]) -> None:
        sync = str(body.get("sync"))
        arrived[sync].set()
        other = next(e for s, e in arrived.items() if s != sync)
        if not waited_out and not other.wait(timeout=20):  # below the client's 30 s timeout
            waited_out.append(sync)  # serialised: the other never sent while this one did

    receiver.before_answer = gate
    serial = WEBHOOK_DESTINATION + "    concurrency: 1\n"
    destinations = serial + serial.split("destinations:")[1].replace("  hook:", "  hook_b:")
    other = SYNC.replace("name: customers_hook", "name: customers_b").replace(
        "destination: hook", "destination: hook_b"
    )
    procs = [
        child(tmp_path, dict(os.environ), SYNC, "customers_hook", destinations),
        child(tmp_path, dict(os.environ), other, "customers_b", destinations),
    ]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["succeeded"] == 300
    # Each sync's first batch was answered only once the other had sent: they overlapped.
    assert not waited_out, f"{waited_out[0]} delivered while the other sync could not send"
    sent = Counter(r.body.get("sync") for r in receiver.requests)
    assert sent == {"customers_hook": 6, "customers_b": 6}
    assert Counter(r["id"] for r in receiver.delivered()) == Counter(
        {i: 2 for i in model_ids(warehouse_path)}
    )
    assert home_instance.event_log_storage.get_concurrency_info("retl_dest_hook_b").slot_count == 4


def test_reset_resends_everything_and_warns_where_unsafe(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 30)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
    run_sync(defs, "customers_hook", instance)
    job = defs.resolve_job_def("reset_customers_hook")
    refused = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not refused.success  # needs confirm: true
    warnings = [e.message for e in refused.all_events if e.event_type_value == "ENGINE_EVENT"]
    logs = [r.user_message for r in instance.all_logs(refused.run_id)]
    assert any("will never be deleted or cleared" in m for m in logs), warnings
    ok = job.execute_in_process(
        instance=instance,
        run_config={"ops": {"reset_customers_hook_op": {"config": {"confirm": True}}}},
    )
    assert ok.success
    receiver.requests.clear()
    again = run_sync(defs, "customers_hook", instance)
    assert (again.summary["added"], again.summary["succeeded"]) == (30, 30)


def test_replay_resends_every_record_of_a_run_with_new_batch_ids(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 80)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
    first = run_sync(defs, "customers_hook", instance)
    sql(warehouse_path, "update customers set plan = 'x' where id <= 3")
    run_sync(defs, "customers_hook", instance)
    first_batches = {r.body["batch_id"] for r in receiver.requests[:2]}
    receiver.requests.clear()
    replay = run_sync(defs, "customers_hook", instance, replay_of=first.summary["run_id"])
    assert replay.status == "succeeded" and replay.summary["added"] == 80
    assert len(receiver.delivered()) == 80
    assert not first_batches & {r.body["batch_id"] for r in receiver.requests}
    assert receiver.duplicates_dropped == 0  # a replay is new work, not a duplicate
    # The replayed (older) values are now what the destination has: the next run fixes it.
    receiver.requests.clear()
    after = run_sync(defs, "customers_hook", instance)
    assert after.summary["changed"] == 3

    # Materialising a past run's partition again (the UI's way) resends it too.
    receiver.requests.clear()
    again = defs.resolve_job_def("sync_customers_hook").execute_in_process(
        instance=instance, partition_key=first.summary["run_id"]
    )
    assert again.success and len(receiver.delivered()) == 80


def test_replay_of_an_unknown_run_says_so(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 3)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
    run_sync(defs, "customers_hook", instance)
    out = run_sync(defs, "customers_hook", instance, replay_of="20200101T000000Z-000000")
    assert out.status == "failed" and "has no stored diff to replay" in out.summary["error"]


def test_runs_past_retention_are_pruned_with_their_partitions(
    receiver: WebhookReceiver, instance: dg.DagsterInstance, warehouse_path: Path
) -> None:
    make_customers(warehouse_path, 5)
    defs = defs_from_yaml(WEBHOOK_DESTINATION, SYNC)
    old = run_sync(defs, "customers_hook", instance).summary["run_id"]
    sql(
        warehouse_path,
        "update _retl.sync_runs set started_at = now() - interval '31 days' "
        f"where run_id = '{old}'",
    )
    sql(warehouse_path, "update customers set plan = 'p' where id = 1")
    new = run_sync(defs, "customers_hook", instance).summary["run_id"]
    assert instance.get_dynamic_partitions("retl_customers_hook_runs") == [new]
    assert sql(warehouse_path, "select distinct _retl_run_id from _retl.customers_hook__diff") == [
        (new,)
    ]
    assert sql(warehouse_path, "select distinct run_id from _retl.sync_record_results") == [(new,)]
    assert sql(warehouse_path, "select run_id from _retl.sync_runs") == [(new,)]
