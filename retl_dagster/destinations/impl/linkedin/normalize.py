"""Identifiers and member details as LinkedIn's Matched Audiences and Conversions API take them.

Emails are trimmed, lower-cased and SHA-256 hashed (hex) before they leave: LinkedIn matches
`SHA256_EMAIL` against the same digest of its members' verified emails. A value that already is
a SHA-256 hex digest passes as it is (lower-cased). Other identifiers (a Google advertising id,
LinkedIn's first-party click id `li_fat_id`, Acxiom and Oracle Moat ids) go as they are,
trimmed. Names, title and company go in clear text (LinkedIn takes them so), and a country as
its ISO 3166-1 alpha-2 code. A value that cannot be used is left out with a reason; the rest of
the record still goes.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from retl_dagster.destinations.hashing import SHA256_HEX, sha256

UserId = dict[str, str]
"""`{"idType": ..., "idValue": ...}`, as LinkedIn takes a user id."""

_COUNTRY = re.compile(r"^[A-Za-z]{2}$")


def _text(value: Any) -> str:
    return unicodedata.normalize("NFC", str(value)).strip()


def email_hash(value: Any) -> str | None:
    """SHA-256 hex of the trimmed, lower-cased email (`' John@X.com '` -> sha256 of
    `john@x.com`); a SHA-256 digest passes lower-cased; None for an empty value. Raises
    ValueError for text that is no email (its value stays out of the reason: reasons are
    logged)."""
    if value is None:
        return None
    text = _text(value).lower()
    if not text:
        return None
    if SHA256_HEX.match(text):
        return text
    if "@" not in text or any(c.isspace() for c in text):
        raise ValueError(
            "email is neither an email address nor a SHA-256 digest, so it was left out"
        )
    return sha256(text)


def country(value: Any) -> str | None:
    """ISO 3166-1 alpha-2, upper case (`us` -> `US`); raises ValueError otherwise."""
    if value is None or _text(value) == "":
        return None
    text = _text(value)
    if not _COUNTRY.match(text):
        raise ValueError(
            f"country '{text[:20]}' is not an ISO 3166-1 alpha-2 code (e.g. US, FR), so it "
            "was left out"
        )
    return text.upper()


def plain(value: Any) -> str | None:
    """Trimmed text, None when empty."""
    if value is None:
        return None
    text = _text(value)
    return text or None


def user_ids(fields: dict[str, Any], id_fields: dict[str, str], notes: list[str]) -> list[UserId]:
    """LinkedIn user ids from the mapped `id_fields` (field -> idType), one of each type, in
    that order. An email that is no email is left out and its reason appended to `notes`."""
    ids: list[UserId] = []
    for field, id_type in id_fields.items():
        try:
            value = (
                email_hash(fields.get(field))
                if id_type == "SHA256_EMAIL"
                else plain(fields.get(field))
            )
        except ValueError as exc:
            notes.append(str(exc))
            continue
        if value:
            ids.append({"idType": id_type, "idValue": value})
    return ids


def details(fields: dict[str, Any], names: dict[str, str], notes: list[str]) -> dict[str, str]:
    """A member's clear-text details from the mapped `names` (field -> LinkedIn's key); a
    country that is no ISO code is left out and its reason appended to `notes`."""
    out: dict[str, str] = {}
    for field, key in names.items():
        try:
            value = country(fields.get(field)) if field == "country" else plain(fields.get(field))
        except ValueError as exc:
            notes.append(str(exc))
            continue
        if value:
            out[key] = value
    return out


def canonical(user_id: UserId) -> str:
    return f"{user_id['idType']}:{user_id['idValue']}"


def dumps(ids: list[UserId]) -> str:
    """The user ids a member was uploaded with, kept as its destination id (for removal)."""
    return json.dumps(sorted(ids, key=canonical), separators=(",", ":"))


def loads(dest_id: str | None) -> list[UserId]:
    """The user ids kept by `dumps`; [] when there are none or they cannot be read."""
    if not dest_id:
        return []
    try:
        ids = json.loads(dest_id)
    except ValueError:
        return []
    if not isinstance(ids, list):
        return []
    return [
        {"idType": str(i["idType"]), "idValue": str(i["idValue"])}
        for i in ids
        if isinstance(i, dict) and "idType" in i and "idValue" in i
    ]
