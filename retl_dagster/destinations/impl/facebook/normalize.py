"""Customer information parameters, normalised and SHA-256 hashed the way Meta's Conversions API
documents them (developers.facebook.com, "Customer Information Parameters"): the same person
must hash to the same value as Meta's own pixel and SDKs produce, or nothing matches.

A value that already is a SHA-256 hex digest is passed on as it is (lower-cased). Hashed keys go
out as lists, as Meta's Business SDK sends them. A phone number or date of birth that cannot be
normalised is left out of the event (with a reason), not the whole event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from retl_dagster.destinations import phones
from retl_dagster.destinations.impl.facebook.exceptions import InvalidValue

HASHED_KEYS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
"""Keys Meta wants hashed (external_id: hashing recommended; we always hash it)."""
LEFT_OUT_WHEN_INVALID = ("ph", "db")
"""Keys whose unusable value is dropped from the event (which still goes) rather than failing
it: the event's other identifiers still match."""
UNHASHED_KEYS = (
    "client_ip_address",
    "client_user_agent",
    "fbc",
    "fbp",
    "subscription_id",
    "fb_login_id",
    "lead_id",
    "anon_id",
    "madid",
    "page_id",
    "page_scoped_user_id",
    "ctwa_clid",
    "ig_account_id",
    "ig_sid",
)
"""Keys Meta must receive as they are: hashing them would make them useless."""
USER_DATA_KEYS = HASHED_KEYS + UNHASHED_KEYS

IDENTIFYING_KEYS = frozenset(
    {
        "em",
        "ph",
        "external_id",
        "fbc",
        "fbp",
        "fb_login_id",
        "lead_id",
        "anon_id",
        "madid",
        "subscription_id",
        "page_scoped_user_id",
        "ctwa_clid",
    }
)
"""Keys that point at one person by themselves (IP address and user agent only together)."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# ANSI codes of the US states: "California" and "CA" both become "ca", as Meta asks.
US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc",
    "florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id", "illinois": "il",
    "indiana": "in", "iowa": "ia", "kansas": "ks", "kentucky": "ky", "louisiana": "la",
    "maine": "me", "maryland": "md", "massachusetts": "ma", "michigan": "mi", "minnesota": "mn",
    "mississippi": "ms", "missouri": "mo", "montana": "mt", "nebraska": "ne", "nevada": "nv",
    "newhampshire": "nh", "newjersey": "nj", "newmexico": "nm", "newyork": "ny",
    "northcarolina": "nc", "northdakota": "nd", "ohio": "oh", "oklahoma": "ok", "oregon": "or",
    "pennsylvania": "pa", "rhodeisland": "ri", "southcarolina": "sc", "southdakota": "sd",
    "tennessee": "tn", "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va",
    "washington": "wa", "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy",
    "puertorico": "pr",
}  # fmt: skip


def sha256(text: str) -> str:
    """Lower-case hex SHA-256 of the UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _text(value: Any) -> str:
    # NFC: "é" typed as e + combining accent hashes like the single code point Meta expects.
    return unicodedata.normalize("NFC", str(value)).strip().lower()


def _letters(text: str) -> str:
    """Letters only (any script): no spaces, punctuation, symbols or digits."""
    return "".join(c for c in text if c.isalpha())


def _no_punctuation(text: str) -> str:
    """No punctuation, symbols or white space; letters and digits of any script stay."""
    return "".join(
        c for c in text if not c.isspace() and unicodedata.category(c)[0] not in ("P", "S")
    )


def email(value: Any) -> str:
    """Trimmed and lower-cased (`John_Smith@gmail.com` -> `john_smith@gmail.com`)."""
    return _text(value)


def phone(value: Any, default_country_code: str | None = None) -> str:
    """E.164 digits without the `+`, as Meta asks (`+1 (650) 555-1212` -> `16505551212`,
    `+44 (0)20 7946 0958` -> `442079460958`). A number written without `+` or `00` is national
    to `default_country_code` (calling code or region); raises phones.PhoneError when the
    country cannot be told or the number is invalid."""
    return phones.e164(value, default_country_code).lstrip("+")


def name(value: Any) -> str:
    """Lower-case, no punctuation; other scripts and accents stay as UTF-8 (`Valéry` ->
    `valéry`)."""
    return _no_punctuation(_text(value))


def city(value: Any) -> str:
    """Lower-case letters only, no spaces or punctuation (`Menlo Park` -> `menlopark`)."""
    return _letters(_text(value))


def state(value: Any) -> str:
    """Two-letter code, lower-case (`California` or `CA` -> `ca`); outside the US, lower-case
    letters without spaces or punctuation."""
    s = _letters(_text(value))
    return US_STATES.get(s, s)


def zip_code(value: Any, country: str | None = None) -> str:
    """Lower-case, no spaces or dashes; a US ZIP+4 keeps its first 5 digits (`94025-1234` ->
    `94025`, `SW1A 1AA` -> `sw1a1aa`)."""
    z = re.sub(r"\s", "", _text(value))
    if re.fullmatch(r"\d{5}-?\d{4}", z) or (country == "us" and re.fullmatch(r"[\d-]{5,}", z)):
        return re.sub(r"\D", "", z)[:5]
    return z.replace("-", "")


def country_code(value: Any) -> str:
    """ISO 3166-1 alpha-2, lower-case (`US` -> `us`)."""
    c = _letters(_text(value))
    if len(c) != 2:
        raise InvalidValue(
            f"country '{value}' is not a 2-letter ISO 3166-1 alpha-2 code (e.g. us, fr); Meta "
            "cannot match it"
        )
    return c


def date_of_birth(value: Any) -> str:
    """YYYYMMDD (`1991-05-26` -> `19910526`)."""
    text = str(value).strip()
    m = re.match(r"^(\d{4})-?(\d{2})-?(\d{2})", text)
    try:
        if not m:
            raise ValueError(text)
        return dt.date(int(m[1]), int(m[2]), int(m[3])).strftime("%Y%m%d")
    except ValueError:
        # The value itself stays out of the reason: reasons are logged.
        raise InvalidValue(
            "db is not a date of birth (YYYY-MM-DD or YYYYMMDD), so it was left out"
        ) from None


def gender(value: Any) -> str:
    """`f` or `m`; anything else is left out, as Meta asks for unknown genders."""
    g = _letters(_text(value))
    return {"f": "f", "female": "f", "m": "m", "male": "m"}.get(g, "")


def external_id(value: Any) -> str:
    """Trimmed only: Meta's normalisation of external_id is trimming, and the pixel sends the
    id with its case (lower-casing would make `AB1` and `ab1` one person and hash unlike the
    pixel's)."""
    return str(value).strip()


NORMALIZERS: dict[str, Callable[[Any], str]] = {
    "em": email,
    "fn": name,
    "ln": name,
    "ct": city,
    "st": state,
    "country": country_code,
    "db": date_of_birth,
    "ge": gender,
    "external_id": external_id,
}


def hash_value(
    key: str, value: Any, *, country: str | None = None, phone_country_code: str | None = None
) -> str | None:
    """The hashed value Meta expects for `key`, or None when nothing is left to send."""
    if value is None or str(value).strip() == "":
        return None
    if _SHA256.match(str(value).strip().lower()):
        return str(value).strip().lower()
    if key == "ph":
        normalized = phone(value, phone_country_code)
    elif key == "zp":
        normalized = zip_code(value, country)
    else:
        normalized = NORMALIZERS[key](value)
    return sha256(normalized) if normalized else None


def user_data(
    fields: dict[str, Any],
    phone_country_code: str | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """Meta's `user_data` from a record's mapped customer information keys: hashed keys
    normalised, hashed and sent as lists (element by element, duplicates once, as the SDK
    does), the others as they are. A phone or date of birth that cannot be normalised is left
    out and its reason appended to `notes`."""
    raw_country = fields.get("country")
    country = None
    if raw_country not in (None, "") and not _SHA256.match(str(raw_country).lower()):
        country = country_code(raw_country)
    out: dict[str, Any] = {}
    for key in USER_DATA_KEYS:
        value = fields.get(key)
        if value is None:
            continue
        if key in UNHASHED_KEYS:
            out[key] = value
            continue
        hashed: list[str] = []
        for v in value if isinstance(value, list) else [value]:
            try:
                h = hash_value(key, v, country=country, phone_country_code=phone_country_code)
            except ValueError as exc:
                if key not in LEFT_OUT_WHEN_INVALID:
                    raise
                if notes is not None:
                    notes.append(str(exc))
                continue
            if h and h not in hashed:
                hashed.append(h)
        if hashed:
            out[key] = hashed
    return out


def identifies(data: dict[str, Any]) -> bool:
    """Whether `user_data` can point Meta at one person."""
    if any(data.get(k) for k in IDENTIFYING_KEYS):
        return True
    return bool(data.get("client_ip_address") and data.get("client_user_agent"))
