"""TikTok Business API bodies checked against TikTok's own Python SDK on PyPI
(`tiktok-business-api-sdk`, package `business_api_client`, generated from TikTok's swagger).

What that release models, and so what is checked from it (types read from its `swagger_types`,
not copied here):
- every answer's envelope: `InlineResponse200` (`code`, `message`, `request_id`, `data`);
- the answer codes the fake sends and the client acts on: `NumericErrorCodes`;
- an event's `properties`, its `contents[]` and its `page`: `PixelProperties`, `PixelContent`,
  `PixelContextPage` (Events API 1.0 models; 2.0 keeps these objects);
- `user` keys: `PixelContextUser` (`email`, `external_id`, `ttp`), plus the keys 2.0 moved into
  `user` from 1.0's context (`ip` and `user_agent` from `PixelContext`, `ttclid` from
  `PixelContextAd.callback`) and renamed (`phone` from `phone_number`): all strings, as 1.0 types
  them;
- how array parameters of a GET go on the wire: `ApiClient.parameters_to_tuples` (as JSON).

The release on PyPI (1.0.1) has no model of Events API 2.0's top-level body or of the DMP
endpoints. TikTok's SDK repository models the audience update body (`CustomAudienceUpdateBody`)
in later, unpublished code: its rules are held here by hand (`update_problems`): `advertiser_id`
and `custom_audience_id` required, `action` one of APPEND, REMOVE, REPLACE (default REPLACE),
`file_paths` a list of strings.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from business_api_client.models import (
    InlineResponse200,
    PixelContent,
    PixelContext,
    PixelContextAd,
    PixelContextPage,
    PixelContextUser,
    PixelProperties,
)
from business_api_client.tiktok_business.tiktok_code import NumericErrorCodes

EVENTS_2_TOP_LEVEL = ("event_source", "event_source_id", "data", "test_event_code", "partner_name")
"""Events API 2.0's body (no model in the PyPI SDK)."""
EVENTS_2_EVENT = (
    "event",
    "event_time",
    "event_id",
    "user",
    "properties",
    "page",
    "app",
    "ad",
    "lead",
    "limited_data_use",
)
EVENTS_2_ONLY_USER = ("locale", "lead_id", "idfa", "idfv", "gaid")
"""User keys 2.0 adds that no 1.0 model has: strings."""
EVENTS_2_ONLY_PROPERTIES = ("content_type", "order_id", "shop_id")
"""2.0's properties beyond 1.0's PixelProperties (content_type moved up from each content)."""
EVENTS_2_ONLY_CONTENT = ("brand",)
HASHED_USER = ("email", "phone", "external_id")
"""User keys TikTok takes only as SHA-256 digests (the fake refuses others with 40062)."""
UPDATE_ACTIONS = ("APPEND", "REMOVE", "REPLACE")
UPDATE_KEYS = {
    "action": "str",
    "advertiser_id": "str",
    "audience_enhancement": "bool",
    "audience_sub_type": "str",
    "context_info": "object",
    "custom_audience_id": "str",
    "custom_audience_name": "str",
    "file_paths": "list[str]",
}
"""CustomAudienceUpdateBody's fields and types (TikTok's SDK repository; not on PyPI)."""


def _is(kind: str) -> Callable[[Any], bool]:
    """A check of one swagger type name, as the value appears in JSON."""
    if kind == "str":
        return lambda v: isinstance(v, str)
    if kind == "int":
        return lambda v: isinstance(v, int) and not isinstance(v, bool)
    if kind == "float":  # JSON has numbers: 10 is as good a float as 10.0
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "bool":
        return lambda v: isinstance(v, bool)
    if kind.startswith("list["):
        item = _is(kind[5:-1])
        return lambda v: isinstance(v, list) and all(item(x) for x in v)
    return lambda v: isinstance(v, dict)  # a nested model or `object`


@functools.cache
def user_types() -> dict[str, str]:
    """user key -> swagger type: 1.0's user model, the keys 2.0 moved into `user`, 2.0's own."""
    types = dict(PixelContextUser.swagger_types)
    types["phone"] = types.pop("phone_number")
    types["ip"] = PixelContext.swagger_types["ip"]
    types["user_agent"] = PixelContext.swagger_types["user_agent"]
    types["ttclid"] = PixelContextAd.swagger_types["callback"]
    for key in EVENTS_2_ONLY_USER:
        types.setdefault(key, "str")
    return types


def known_codes() -> dict[str, int]:
    """The SDK's answer codes by name (`ERROR_CODE_PII_NOT_HASHED` -> 40062)."""
    return {k: v for k, v in vars(NumericErrorCodes).items() if k.startswith("ERROR_CODE_")}


def _typed(where: str, obj: Any, types: dict[str, str], *, open_: bool = False) -> list[str]:
    """Problems of `obj` against a model's types; `open_`: keys it lacks are allowed."""
    if not isinstance(obj, dict):
        return [f"{where}: must be an object"]
    out = []
    for key, value in obj.items():
        kind = types.get(key)
        if kind is None:
            if not open_:
                out.append(f"{where}.{key}: not a field")
        elif not _is(kind)(value):
            out.append(f"{where}.{key}: must be {kind}")
    return out


def _event_problems(where: str, event: Any) -> list[str]:
    if not isinstance(event, dict):
        return [f"{where}: must be an object"]
    out = [f"{where}.{k}: not an event field" for k in event if k not in EVENTS_2_EVENT]
    if "user" in event:
        out += _typed(f"{where}.user", event["user"], user_types())
    if "page" in event:
        out += _typed(f"{where}.page", event["page"], dict(PixelContextPage.swagger_types))
    if "properties" in event:
        props = event["properties"]
        types = dict(PixelProperties.swagger_types)
        types.pop("contents")  # checked item by item below
        types |= dict.fromkeys(EVENTS_2_ONLY_PROPERTIES, "str")
        out += _typed(f"{where}.properties", props, types, open_=True)  # custom properties
        contents = props.get("contents") if isinstance(props, dict) else None
        if contents is not None:
            if not isinstance(contents, list):
                out.append(f"{where}.properties.contents: must be a list")
            else:
                item_types = dict(PixelContent.swagger_types)
                item_types |= dict.fromkeys(EVENTS_2_ONLY_CONTENT, "str")
                for i, item in enumerate(contents):
                    out += _typed(f"{where}.properties.contents[{i}]", item, item_types)
    return out


def event_problems(body: Any) -> list[str]:
    """What in a `POST /event/track/` body TikTok's models do not allow; empty when none."""
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    out = [f"{k}: not a field of the request" for k in body if k not in EVENTS_2_TOP_LEVEL]
    data = body.get("data")
    if not isinstance(data, list):
        return [*out, "data: must be a list of events"]
    for i, event in enumerate(data):
        out += _event_problems(f"data[{i}]", event)
    return out


def update_problems(body: Any) -> list[str]:
    """What in a `POST /dmp/custom_audience/update/` body CustomAudienceUpdateBody refuses."""
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    out = _typed("body", body, UPDATE_KEYS)
    out += [f"{k}: required" for k in ("advertiser_id", "custom_audience_id") if k not in body]
    if "action" in body and body["action"] not in UPDATE_ACTIONS:
        out.append(f"action: must be one of {', '.join(UPDATE_ACTIONS)}")
    if "file_paths" not in body and "custom_audience_name" not in body:
        out.append("one of file_paths or custom_audience_name is required")
    return out


def envelope_problems(body: Any) -> list[str]:
    """What in an answer does not fit the SDK's InlineResponse200 (every field present)."""
    if not isinstance(body, dict):
        return ["the answer must be a JSON object"]
    out = _typed("answer", body, dict(InlineResponse200.swagger_types))
    return out + [
        f"answer.{k}: missing" for k in ("code", "message", "request_id") if k not in body
    ]
