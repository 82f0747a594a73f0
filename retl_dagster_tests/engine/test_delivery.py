"""The load's delivery loop: batches in flight, and how their answers are settled."""

from __future__ import annotations

import threading
from pathlib import Path

from retl_dagster.destinations.base import Batch, BatchResult
from retl_dagster.destinations.impl.webhook import WebhookConfig, WebhookDestination
from retl_dagster.engine import diff
from retl_dagster.engine.delivery import load
from retl_dagster.engine.warehouse import Warehouse
from retl_dagster_tests.engine.test_mapping import config as mapping_config


class _OneSlowBatch(WebhookDestination):
    """Batches of one record, 4 in flight; the first batch is answered only once 12 others
    have been (as a batch waiting out a backoff is), or fails after 20 s."""

    def __init__(self) -> None:
        super().__init__(
            "hook", WebhookConfig(url="http://127.0.0.1:9/hook", batch_size=1, concurrency=4)
        )
        self.lock = threading.Lock()
        self.first: str | None = None
        self.answered: list[str] = []
        self.others = threading.Semaphore(0)

    def deliver(self, batch: Batch) -> BatchResult:
        (key,) = batch.keys
        with self.lock:
            slow = self.first is None
            if slow:
                self.first = key
        if slow:
            if not all(self.others.acquire(timeout=20) for _ in range(12)):
                raise TimeoutError("the other batches were held behind this one")
        else:
            self.others.release()
        with self.lock:
            self.answered.append(key)
        return BatchResult()


def test_a_batch_waiting_for_its_answer_does_not_hold_the_others(tmp_path: Path) -> None:
    """With several batches in flight, the load hands out the next batch as soon as any one is
    answered: one batch waiting out a 429's backoff holds its own thread only."""
    cfg = mapping_config(mappings=[{"from": "email", "to": "Email"}])
    with Warehouse(str(tmp_path / "w.duckdb")) as wh:
        wh.execute("create table t as select i as id, 'u' || i as email from range(20) r(i)")
        diff.compute_diff(wh, cfg, "select * from t", "r1", 20)
        dest = _OneSlowBatch()
        result = load(wh, cfg, dest, "r1")
    assert result.total_succeeded == 20
    assert dest.first is not None and dest.answered.index(dest.first) >= 12
