"""Identifiers normalised and SHA-256 hashed as TikTok matches them: an email trimmed and
lower-cased, a phone number in E.164 with its `+` (`+16505551212`), an external id trimmed, a
mobile advertising id in the form its device reports it (an IDFA upper-case, a GAID
lower-case). TikTok hashes its own users' identifiers the same way, so another form of the same
person hashes to nobody.

A value that already is a SHA-256 hex digest is passed on as it is (lower-cased).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from retl_dagster.destinations import phones
from retl_dagster.destinations.hashing import prehashed, sha256
from retl_dagster.destinations.impl.tiktok.exceptions import InvalidValue

_MAID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def email(value: Any) -> str:
    """`" Jane.Doe@Example.COM "` -> `jane.doe@example.com`."""
    return str(value).strip().lower()


def phone(value: Any, default_country_code: str | None = None) -> str:
    """E.164 with its `+` (`(650) 555-1212` with default 1 -> `+16505551212`, `+44 (0)20 7946
    0958` -> `+442079460958`); raises phones.PhoneError (a ValueError) when the country cannot
    be told or the number is not a valid one."""
    return phones.e164(value, default_country_code)


def external_id(value: Any) -> str:
    """Trimmed only: its case is part of the id."""
    return str(value).strip()


def _maid(value: Any, name: str) -> str:
    text = str(value).strip().lower()
    if not _MAID.match(text):
        raise InvalidValue(
            f"{name} is not a mobile advertising id (8-4-4-4-12 hexadecimal digits), so it "
            "cannot match anyone"
        )
    return text


def idfa(value: Any) -> str:
    """Apple's IDFA as iOS reports it: upper-case with dashes."""
    return _maid(value, "idfa").upper()


def gaid(value: Any) -> str:
    """Google's advertising id as Android reports it: lower-case with dashes."""
    return _maid(value, "gaid")


NORMALIZERS: dict[str, Callable[[Any], str]] = {
    "email": email,
    "external_id": external_id,
    "idfa": idfa,
    "gaid": gaid,
}


def hashed(key: str, value: Any, phone_country_code: str | None = None) -> str | None:
    """The SHA-256 TikTok expects for identifier `key` (email, phone, external_id, idfa,
    gaid), or None when the value is empty. Raises ValueError (InvalidValue, PhoneError) when
    the value cannot be put in TikTok's form."""
    if value is None or str(value).strip() == "":
        return None
    if (already := prehashed(value)) is not None:
        return already
    if key == "phone":
        return sha256(phone(value, phone_country_code))
    return sha256(NORMALIZERS[key](value))
