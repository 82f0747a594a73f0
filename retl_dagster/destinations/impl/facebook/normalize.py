"""Customer information parameters, normalised and SHA-256 hashed the way Meta's Conversions API
documents them (developers.facebook.com, "Customer Information Parameters"): the same person
must hash to the same value as Meta's own pixel and SDKs produce, or nothing matches.

A value that already is a SHA-256 hex digest is passed on as it is (lower-cased). Hashed keys go
out as lists, as Meta's Business SDK sends them. A phone number or date of birth that cannot be
normalised is left out of the event (with a reason), not the whole event.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from retl_dagster.destinations import phones
from retl_dagster.destinations.hashing import SHA256_HEX, sha256
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
    if SHA256_HEX.match(str(value).strip().lower()):
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
    if raw_country not in (None, "") and not SHA256_HEX.match(str(raw_country).lower()):
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


# -- Customer lists (Custom Audiences from a customer file) -----------------------------------
# Meta's multi-key schema for `POST /{audience_id}/users`, in the order of the Business SDK's
# `CustomAudience.Schema.MultiKeySchema`. Every key is normalised and SHA-256 hashed except
# EXTERN_ID and MADID, which go as they are. Where Meta's "Hashing and normalizing data" table
# and the SDK's `normalize_key` differ, the table wins (the contract tests name each place).

LIST_KEYS = (
    "EXTERN_ID",
    "EMAIL",
    "PHONE",
    "GEN",
    "DOBY",
    "DOBM",
    "DOBD",
    "LN",
    "FN",
    "FI",
    "CT",
    "ST",
    "ZIP",
    "MADID",
    "COUNTRY",
)
UNHASHED_LIST_KEYS = frozenset({"EXTERN_ID", "MADID"})
STANDALONE_LIST_KEYS = frozenset({"EXTERN_ID", "EMAIL", "PHONE", "MADID"})
"""Keys that point at one person by themselves; names need a place or a birth date with them."""
NAME_COMPANIONS = frozenset({"ZIP", "CT", "ST", "COUNTRY", "DOBY"})
LIST_DOB = "dob"
"""A mapped date of birth, sent as DOBY, DOBM and DOBD."""
LIST_FIELDS = (*(k.lower() for k in LIST_KEYS), LIST_DOB)
"""The names a sync maps to: the schema keys in lower case, and `dob`."""

_MADID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_EDGES = re.compile(r"^[\s\0\x0b.]+|[\s\0\x0b.]+$")
_MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip


def list_text(value: Any) -> str:
    """NFC, lower-case, no white space, NUL, vertical tab or dots at either end: what the SDK
    does to every value before its per-key rules (`strip(" \\t\\r\\n\\0\\x0B.").lower()`)."""
    return _EDGES.sub("", unicodedata.normalize("NFC", str(value))).lower()


def ascii_letters(value: Any) -> str:
    """a-z only (`São Paulo` -> `sopaulo`), as Meta's table asks of CT and ST and the SDK does."""
    return re.sub(r"[^a-z]", "", list_text(value))


def list_state(value: Any) -> str:
    """A US state's two-letter code (`California`, `CA` -> `ca`, as the table asks); elsewhere
    a-z only."""
    s = ascii_letters(value)
    return US_STATES.get(s, s)


def list_phone(value: Any, region: str | None) -> str:
    """Digits with the country code, no `+` or leading zeros (`+44 (0)20 7946 0958` ->
    `442079460958`); a national number takes `region`. Raises phones.PhoneError."""
    return phone(value, region)


def birth_year(value: Any) -> str:
    """YYYY, 1900 to this year."""
    digits = re.sub(r"\D", "", str(value))
    if len(digits) != 4 or not 1900 <= int(digits) <= dt.date.today().year:
        raise InvalidValue(
            "doby is not a year of birth (YYYY, 1900 to this year), so it was left out"
        )
    return digits


def birth_month(value: Any) -> str:
    """MM, 01 to 12 (`5`, `05`, `May` -> `05`)."""
    text = list_text(value)
    names = [m for m in _MONTHS if text and len(text) >= 3 and m.startswith(text)]
    if len(names) == 1:
        return f"{_MONTHS.index(names[0]) + 1:02d}"
    digits = re.sub(r"\D", "", text)
    if not digits or not 1 <= int(digits) <= 12:
        raise InvalidValue("dobm is not a month (1-12 or its name), so it was left out")
    return f"{int(digits):02d}"


def birth_day(value: Any) -> str:
    """DD, 01 to 31."""
    digits = re.sub(r"\D", "", str(value))
    if not digits or not 1 <= int(digits) <= 31:
        raise InvalidValue("dobd is not a day of the month (1-31), so it was left out")
    return f"{int(digits):02d}"


def first_initial(value: Any) -> str:
    """The first letter of the first name, lower-case (`F.`, `Frank` -> `f`)."""
    return name(value)[:1]


def madid(value: Any) -> str:
    """An Apple IDFA or Android advertising id, lower-case with its hyphens (Meta: not hashed).
    An all-zero id (a device that limits ad tracking) identifies nobody."""
    text = list_text(value)
    if not _MADID.match(text) or not text.strip("0-"):
        raise InvalidValue(
            "madid is not a mobile advertising id (IDFA or AAID: 8-4-4-4-12 hex digits, not all "
            "zero), so it was left out"
        )
    return text


LIST_NORMALIZERS: dict[str, Callable[[Any], str]] = {
    "EXTERN_ID": external_id,
    "EMAIL": list_text,
    "GEN": gender,
    "DOBY": birth_year,
    "DOBM": birth_month,
    "DOBD": birth_day,
    "LN": name,
    "FN": name,
    "FI": first_initial,
    "CT": ascii_letters,
    "ST": list_state,
    "MADID": madid,
    "COUNTRY": country_code,
}
"""Per schema key, except PHONE and ZIP, which depend on the row's country."""


def list_value(
    key: str, value: Any, *, country: str | None = None, phone_region: str | None = None
) -> str:
    """What Meta's customer list takes for `key`: normalised and SHA-256 hashed (EXTERN_ID and
    MADID normalised only); "" when nothing is left. A value that already is a SHA-256 hex
    digest goes as it is (Meta takes a MADID hashed or not), except an EXTERN_ID, which is never
    hashed. Raises ValueError (InvalidValue, phones.PhoneError) when the value cannot be
    normalised."""
    if value is None or str(value).strip() == "":
        return ""
    text = str(value).strip().lower()
    if key != "EXTERN_ID" and SHA256_HEX.match(text):
        return text
    if key == "PHONE":
        normalized = list_phone(value, phone_region)
    elif key == "ZIP":
        normalized = zip_code(value, country)
    else:
        normalized = LIST_NORMALIZERS[key](value)
    if not normalized or key in UNHASHED_LIST_KEYS:
        return normalized
    return sha256(normalized)


def customer_list_entry(
    fields: dict[str, Any], phone_country_code: str | None = None, notes: list[str] | None = None
) -> dict[str, str]:
    """One customer's values by schema key, from a record's mapped fields (`email`, `fn`,
    `dob`...): each normalised and hashed as Meta asks. A value that cannot be normalised is
    left out and its reason appended to `notes`; the customer's other keys still go. A phone
    number without a country code is read in the row's own COUNTRY, else in
    `phone_country_code`."""
    raw = {k: fields.get(k.lower()) for k in LIST_KEYS}
    dob = fields.get(LIST_DOB)
    if dob not in (None, ""):
        try:
            ymd = date_of_birth(dob)
            raw["DOBY"] = raw["DOBY"] or ymd[:4]
            raw["DOBM"] = raw["DOBM"] or ymd[4:6]
            raw["DOBD"] = raw["DOBD"] or ymd[6:]
        except InvalidValue:
            if notes is not None:
                notes.append(
                    "dob is not a date of birth (YYYY-MM-DD or YYYYMMDD), so it was left out"
                )
    country = None
    raw_country = raw["COUNTRY"]
    if raw_country not in (None, "") and not SHA256_HEX.match(str(raw_country).strip().lower()):
        c = ascii_letters(raw_country)
        country = c if len(c) == 2 else None
    region = None
    if country:
        try:
            region = phones.region(country)
        except ValueError:  # a country phonenumbers has no numbering plan for
            region = None
    entry: dict[str, str] = {}
    for key in LIST_KEYS:
        try:
            value = list_value(
                key, raw[key], country=country, phone_region=region or phone_country_code
            )
        except ValueError as exc:
            if notes is not None:
                notes.append(str(exc))
            continue
        if value:
            entry[key] = value
    return entry


def list_identifies(entry: dict[str, str]) -> bool:
    """Whether a customer list entry can point Meta at one person: an email, phone, mobile
    advertising id or extern id, or a first and last name with a place or a year of birth."""
    if any(entry.get(k) for k in STANDALONE_LIST_KEYS):
        return True
    return bool(entry.get("FN") and entry.get("LN") and any(entry.get(k) for k in NAME_COMPANIONS))
