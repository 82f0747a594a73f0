"""Isolating the record an API refused when it refuses a whole request for it.

Several APIs apply a batch all or nothing (HubSpot's batch endpoints on a 400, Meta's Conversions
API, Mixpanel's /engage, Google Sheets' values:batchUpdate): one bad record and nothing goes. The
request is halved until each refused record is alone, so only it is rejected with the API's own
reason and the rest are delivered, within a budget of extra requests per batch (a batch full of
bad records would otherwise cost about twice its size in requests against the API's rate limit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

DEFAULT_BUDGET = 64
"""Extra requests one destination batch may spend isolating refused records."""


class RequestBudget:
    """How many more requests isolating refused records may cost (shared by a batch's chunks)."""

    def __init__(self, requests: int = DEFAULT_BUDGET) -> None:
        self.left = requests

    def take(self, n: int) -> bool:
        if self.left < n:
            return False
        self.left -= n
        return True


def send_isolating(
    items: Sequence[T],
    send: Callable[[Sequence[T]], str | None],
    reject: Callable[[T, str], None],
    budget: RequestBudget,
) -> None:
    """Send `items`; where the API refuses the whole request, halve until the refused ones are
    alone and reject only them.

    `send(chunk)` makes one request and returns None when it is settled (delivered, or its
    records rejected or acknowledged by `send` itself), or the API's reason when the API refused
    the whole request because of something in it. Once the budget is spent, a refused chunk of
    several records is rejected whole, saying so.
    """
    reason = send(items)
    if reason is None:
        return
    if len(items) > 1 and budget.take(2):
        half = len(items) // 2
        send_isolating(items[:half], send, reject, budget)
        send_isolating(items[half:], send, reject, budget)
        return
    if len(items) > 1:
        reason = (
            f"{reason} (refused with {len(items) - 1} other record(s); the request budget for "
            "isolating it is spent, so they are retried on the next run)"
        )
    for item in items:
        reject(item, reason)
