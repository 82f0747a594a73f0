"""Phone numbers as E.164 (`+16505551212`), the one form both Meta and Google hash: Meta's
`ph` is its digits without the `+`, Google's `hashedPhoneNumber` keeps the `+`.

Parsing, national trunk prefixes (`+44 (0)20 ...`) and validity come from `phonenumbers`
(Google's libphonenumber data): hand-written digit rules got both wrong, and a wrongly
normalised number hashes to a person nobody has.
"""

from __future__ import annotations

from typing import Any

import phonenumbers

UNKNOWN_REGION = "ZZ"


class PhoneError(ValueError):
    """A number that cannot be put in E.164: the identifier is left out, with this reason."""


def region(code: str | None) -> str | None:
    """The ISO 3166 region `phonenumbers` parses national numbers in, from a destination's
    `default_phone_country_code`: a calling code (`1`, `44`, `+44`) or a region (`US`, `gb`).
    Raises ValueError for neither."""
    if code is None or not str(code).strip():
        return None
    text = str(code).strip().lstrip("+")
    if text.isdigit():
        # A calling code shared by several countries (1: US, CA...) maps to its main one; the
        # number's own digits still decide which country it is in.
        found = phonenumbers.region_code_for_country_code(int(text))
        if found == UNKNOWN_REGION:
            raise ValueError(f"'{code}' is not a country calling code")
        return str(found)
    if text.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"'{code}' is neither a country calling code nor an ISO 3166 region")
    return text.upper()


def _tail(text: str) -> str:
    # Reasons end up in logs: name the number by its last digits, not all of it.
    digits = "".join(c for c in text if c.isdigit())
    return f"phone ending {digits[-4:]}" if len(digits) > 4 else "phone"


def e164(value: Any, default_code: str | None = None) -> str:
    """`value` in E.164. A number without `+` or `00` is national, in the region of
    `default_code` (see `region`). Raises PhoneError when the country cannot be told (no
    country code and no default) or the number is not a valid one of its country."""
    text = str(value).strip()
    if text.startswith("00"):  # the international prefix of most of the world
        text = "+" + text[2:]
    default = region(default_code)
    try:
        number = phonenumbers.parse(text, default)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            if not text.startswith("+") and default is None:
                raise PhoneError(
                    f"{_tail(text)} has no country code (no + or 00) and the destination sets "
                    "no default_phone_country_code, so it was left out. Fix: store numbers "
                    "with their country code, or set default_phone_country_code (e.g. 1 or US)"
                ) from None
            raise PhoneError(f"{_tail(text)} has an unknown country code: left out") from None
        raise PhoneError(f"{_tail(text)} is not a phone number: left out") from None
    if not phonenumbers.is_valid_number(number):
        code = number.country_code or 0
        where = phonenumbers.region_code_for_country_code(code)
        raise PhoneError(f"{_tail(text)} is not a valid number in {where} (+{code}): left out")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
