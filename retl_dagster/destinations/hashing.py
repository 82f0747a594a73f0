"""Hashing shared by the ad platforms: SHA-256 of normalised identifiers, digests passed through
as they are, and the stable per-row ids platforms deduplicate resent events by. Each platform's
own normalisation rules (what to lower-case, strip or reformat) stay in its `normalize.py`."""

from __future__ import annotations

import hashlib
import re
from typing import Any

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
"""A lower-case hex SHA-256 digest (a value the warehouse already hashed)."""


def sha256(text: str) -> str:
    """Lower-case hex SHA-256 of the UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prehashed(value: Any) -> str | None:
    """The value itself (trimmed, lower-cased) when it already is a SHA-256 hex digest."""
    text = str(value).strip().lower()
    return text if SHA256_HEX.match(text) else None


def stable_event_id(sync: str, key: str) -> str:
    """The same for a row on every send, resend and replay, so the platform keeps one event:
    `retl-` + 32 hex digits of the sync's name and the row's key."""
    return "retl-" + hashlib.sha256(f"{sync}\x1f{key}".encode()).hexdigest()[:32]
