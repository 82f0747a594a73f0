"""destinations.bisect: isolating the records an API refused a whole request for."""

from __future__ import annotations

from collections.abc import Sequence

from retl_dagster.destinations.bisect import DEFAULT_BUDGET, RequestBudget, send_isolating


class FakeApi:
    """Refuses a whole request that holds a bad record, as HubSpot or Meta do."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.requests: list[list[int]] = []
        self.delivered: list[int] = []
        self.rejected: dict[int, str] = {}

    def send(self, chunk: Sequence[int]) -> str | None:
        self.requests.append(list(chunk))
        refused = [i for i in chunk if i in self.bad]
        if refused:
            return f"record {refused[0]} is invalid"
        self.delivered += chunk
        return None

    def reject(self, item: int, reason: str) -> None:
        self.rejected[item] = reason


def test_a_bad_record_among_16_is_isolated_in_9_requests() -> None:
    api = FakeApi(bad={5})
    budget = RequestBudget()
    send_isolating(list(range(16)), api.send, api.reject, budget)
    # The whole batch, then two halves at each of 4 levels (8, 4, 2, 1).
    assert len(api.requests) == 1 + 2 * 4
    assert api.rejected == {5: "record 5 is invalid"}
    assert sorted(api.delivered) == [i for i in range(16) if i != 5]
    assert budget.left == DEFAULT_BUDGET - 8


def test_a_settled_request_costs_one_request_and_no_budget() -> None:
    api = FakeApi(bad=set())
    budget = RequestBudget(0)
    send_isolating(list(range(16)), api.send, api.reject, budget)
    assert api.requests == [list(range(16))]
    assert api.rejected == {}
    assert budget.left == 0


def test_a_spent_budget_rejects_the_rest_whole_saying_why() -> None:
    api = FakeApi(bad={3})
    budget = RequestBudget(2)  # one split, then nothing
    send_isolating(list(range(16)), api.send, api.reject, budget)
    assert api.requests == [list(range(16)), list(range(8)), list(range(8, 16))]
    assert sorted(api.delivered) == list(range(8, 16))
    assert sorted(api.rejected) == list(range(8))
    reason = api.rejected[0]
    assert reason.startswith("record 3 is invalid (refused with 7 other record(s);")
    assert "request budget for isolating it is spent" in reason
    assert "retried on the next run" in reason
    assert budget.left == 0


def test_a_budget_is_shared_by_the_chunks_of_a_batch() -> None:
    api = FakeApi(bad={1, 17})
    budget = RequestBudget(6)
    send_isolating(list(range(16)), api.send, api.reject, budget)  # 16 -> 8 -> 4 -> 2: spent
    assert budget.left == 0
    send_isolating(list(range(16, 20)), api.send, api.reject, budget)
    assert api.requests[-1] == [16, 17, 18, 19]
    assert set(api.rejected) == {0, 1, 16, 17, 18, 19}
    assert api.rejected[1].startswith("record 1 is invalid (refused with 1 other record(s);")


def test_a_lone_refused_record_is_rejected_with_the_apis_reason() -> None:
    api = FakeApi(bad={0})
    send_isolating([0], api.send, api.reject, RequestBudget(0))
    assert api.rejected == {0: "record 0 is invalid"}
