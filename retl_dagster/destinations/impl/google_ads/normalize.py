"""User identifiers normalised and SHA-256 hashed the way the Google Ads API documents them
(enhanced conversions and Customer Match, "normalize and hash user-provided data"): trim,
lower-case, no dots before `@gmail.com` / `@googlemail.com`, phone numbers in E.164. Country
code and postal code are sent as they are (Google does not want them hashed).

A value that already is a SHA-256 hex digest is passed on as it is (lower-cased). A phone number
that cannot be put in E.164 is left out (with a reason); the record's other identifiers still go.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from retl_dagster.destinations import phones
from retl_dagster.destinations.hashing import prehashed, sha256

IDENTIFIER_FIELDS = ("email", "phone", "first_name", "last_name", "country_code", "postal_code")
ADDRESS_FIELDS = ("first_name", "last_name", "country_code", "postal_code")
_GMAIL = ("gmail.com", "googlemail.com")

Identifier = dict[str, Any]
"""One `UserIdentifier` as the REST API spells it, e.g. `{"hashedEmail": "<hex>"}`."""


def email(value: Any) -> str:
    """`" Jane.Doe@GMail.com "` -> `janedoe@gmail.com`; other domains keep their dots."""
    text = str(value).strip().lower()
    local, at, domain = text.rpartition("@")
    if at and domain in _GMAIL:
        local = local.replace(".", "")
    return f"{local}{at}{domain}" if at else text


def phone(value: Any, default_country_code: str | None = None) -> str:
    """E.164 with its `+` (`+1 (650) 555-1212` -> `+16505551212`, `+44 (0)20 7946 0958` ->
    `+442079460958`). A number without `+` or `00` is national to `default_country_code`
    (calling code or region); raises phones.PhoneError when the country cannot be told or the
    number is invalid."""
    return phones.e164(value, default_country_code)


def first_name(value: Any) -> str:
    """Lower-case, no spaces before, after or doubled in between."""
    return " ".join(unicodedata.normalize("NFC", str(value)).lower().split())


def last_name(value: Any) -> str:
    """Lower-case, no punctuation, no extra spaces."""
    text = "".join(c for c in first_name(value) if unicodedata.category(c)[0] != "P")
    return " ".join(text.split())


def hashed(normalizer: Any, value: Any, *args: Any) -> str:
    return prehashed(value) or sha256(normalizer(value, *args))


def identifiers(
    fields: dict[str, Any],
    phone_country_code: str | None = None,
    notes: list[str] | None = None,
    *,
    address: bool = True,
) -> list[Identifier]:
    """The record's user identifiers: hashed email, hashed E.164 phone, and (with `address`)
    an address: hashed first and last name with country and postal code, all four needed. A
    phone that cannot be normalised is left out, its reason appended to `notes`."""
    out: list[Identifier] = []

    def present(key: str) -> bool:
        return fields.get(key) is not None and str(fields[key]).strip() != ""

    if present("email"):
        out.append({"hashedEmail": hashed(email, fields["email"])})
    if present("phone"):
        try:
            out.append({"hashedPhoneNumber": hashed(phone, fields["phone"], phone_country_code)})
        except phones.PhoneError as exc:
            if notes is not None:
                notes.append(str(exc))
    if address and all(present(k) for k in ADDRESS_FIELDS):
        out.append(
            {
                "addressInfo": {
                    "hashedFirstName": hashed(first_name, fields["first_name"]),
                    "hashedLastName": hashed(last_name, fields["last_name"]),
                    # Google validates the country code itself (INVALID_COUNTRY_CODE).
                    "countryCode": str(fields["country_code"]).strip().upper(),
                    "postalCode": str(fields["postal_code"]).strip(),
                }
            }
        )
    return out


def canonical(identifier: Identifier) -> str:
    """One identifier as comparable text."""
    return json.dumps(identifier, sort_keys=True, separators=(",", ":"))
