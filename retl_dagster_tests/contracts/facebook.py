"""The Conversions API request body checked against Meta's own Business SDK (`facebook-business`,
`facebook_business.adobjects.serverside`): every key our client puts on the wire must be one the
SDK puts there, with the SDK's shape (a list where it sends a list, a number where it sends a
number). The allowed names are read from the SDK's classes, not copied here, so a new SDK
release changes them with it.

Where Meta's documentation ("Customer Information Parameters", "Server Event Parameters") and
the SDK disagree, the documentation wins; each such place says so below.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.delivery_category import DeliveryCategory
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.event_request import EventRequest
from facebook_business.adobjects.serverside.gender import Gender
from facebook_business.adobjects.serverside.messaging_channel import MessagingChannel
from facebook_business.adobjects.serverside.user_data import UserData

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Values that pass the SDK's own normalisation, so `UserData.normalize()` shows every key it
# can send and the shape it sends it in.
_SAMPLES: dict[str, Any] = {
    "emails": ["person@example.com"],
    "phones": ["16505551212"],
    "genders": [Gender.FEMALE],
    "dates_of_birth": ["19910526"],
    "country_codes": ["us"],
    "zip_codes": ["94025"],
    "dobd": "26",
    "dobm": "05",
    "doby": "1991",
}

DOCUMENTED_ONLY_USER_DATA = ("page_scoped_user_id", "ig_account_id", "ig_sid")
"""Meta documents these customer information parameters (business messaging: Messenger and
Instagram) but the SDK's UserData has no field for them: the docs win, they are allowed, as
plain strings like the SDK's other unhashed ids."""


@functools.cache
def user_data_shapes() -> dict[str, tuple[type, bool]]:
    """user_data key -> (wire type, hashed?) as the SDK's `UserData.normalize()` sends it."""
    data = UserData()
    for attr in UserData.param_types:
        setattr(data, attr, _SAMPLES.get(attr, "x"))
    shapes: dict[str, tuple[type, bool]] = {}
    for key, value in data.normalize().items():
        sample = value[0] if isinstance(value, list) else value
        shapes[key] = (type(value), bool(_SHA256.match(str(sample))))
    for key in DOCUMENTED_ONLY_USER_DATA:
        shapes.setdefault(key, (str, False))
    # external_id: the SDK sends it unhashed; Meta's docs recommend hashing it (and we do), so
    # either is accepted here, as the docs allow.
    return shapes


def _is(kind: str) -> Callable[[Any], bool]:
    """A check of one SDK `param_types` type name, as the value appears in JSON."""
    if kind == "str":
        return lambda v: isinstance(v, str)
    if kind == "int":
        return lambda v: isinstance(v, int) and not isinstance(v, bool)
    if kind == "float":  # JSON has numbers: 10 is as good a float as 10.0
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "bool":
        return lambda v: isinstance(v, bool)
    if kind == "dict":
        return lambda v: isinstance(v, dict)
    if kind.startswith("list["):
        item = _is(kind[5:-1])
        return lambda v: isinstance(v, list) and all(item(x) for x in v)
    enums = {"ActionSource": ActionSource, "MessagingChannel": MessagingChannel}
    enums["DeliveryCategory"] = DeliveryCategory
    if kind in enums:
        values = {e.value for e in enums[kind]}
        return lambda v: v in values
    return lambda v: isinstance(v, dict)  # a nested SDK object (AppData...) is a JSON object


def _checks(param_types: dict[str, str]) -> dict[str, Callable[[Any], bool]]:
    return {name: _is(kind) for name, kind in param_types.items()}


@functools.cache
def event_checks() -> dict[str, Callable[[Any], bool]]:
    return _checks(Event.param_types)  # the SDK's attribute names are its wire names


@functools.cache
def custom_data_checks() -> dict[str, Callable[[Any], bool]]:
    checks = _checks(CustomData.param_types)
    # custom_properties is no key of its own: the SDK merges its keys into custom_data, and
    # the docs allow any custom property there.
    checks.pop("custom_properties")
    # currency: the SDK lower-cases it, the docs ask for an ISO 4217 code and show it upper
    # case: the docs win, any case of three letters.
    checks["currency"] = lambda v: isinstance(v, str) and bool(re.fullmatch(r"[A-Za-z]{3}", v))
    return checks


def request_keys() -> set[str]:
    """Top-level keys: EventRequest's params (its events go as `data`) and the token the SDK
    adds when it sends."""
    keys = {k for k in EventRequest.param_types if k != "events"}
    return keys | {"data", "access_token", "appsecret_proof"}


def _user_data_problems(where: str, user: Any) -> list[str]:
    if not isinstance(user, dict):
        return [f"{where}: must be an object"]
    problems = []
    shapes = user_data_shapes()
    for key, value in user.items():
        if key not in shapes:
            problems.append(f"{where}.{key}: not a customer information parameter")
            continue
        wire, hashed = shapes[key]
        if wire is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"{where}.{key}: must be a list of strings, as the SDK sends it")
            elif hashed and not all(_SHA256.match(v) for v in value):
                problems.append(f"{where}.{key}: values must be SHA-256 hex digests")
        elif not isinstance(value, str):
            problems.append(f"{where}.{key}: must be a string")
        elif hashed and not _SHA256.match(value):
            problems.append(f"{where}.{key}: must be a SHA-256 hex digest")
    return problems


def problems(body: Any) -> list[str]:
    """What in a `POST /{pixel}/events` body the SDK would never send; empty when it conforms."""
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    out = [f"{k}: not a parameter of the events endpoint" for k in body if k not in request_keys()]
    data = body.get("data")
    if not isinstance(data, list):
        return [*out, "data: must be a list of events"]
    events, custom = event_checks(), custom_data_checks()
    for i, event in enumerate(data):
        where = f"data[{i}]"
        if not isinstance(event, dict):
            out.append(f"{where}: must be an object")
            continue
        for key, value in event.items():
            if key not in events:
                out.append(f"{where}.{key}: not a server event parameter")
            elif key == "user_data":
                out += _user_data_problems(f"{where}.user_data", value)
            elif key == "custom_data":
                if not isinstance(value, dict):
                    out.append(f"{where}.custom_data: must be an object")
                    continue
                out += [
                    f"{where}.custom_data.{k}: wrong type for {CustomData.param_types[k]}"
                    for k, v in value.items()
                    if k in custom and not custom[k](v)
                ]
            elif not events[key](value):
                out.append(f"{where}.{key}: wrong type for {Event.param_types[key]}")
    return out
