"""Customer.io's Track API v2 batch (`POST /api/v2/batch`) as a contract for every body the fake
receives.

The vendor's own artefact is the `customerio` SDK (the Track client, `customerio.CustomerIO`):
its `batch(operations)` is the envelope (`{"batch": [...]}` posted to `/api/v2/batch` with HTTP
basic auth `site_id:api_key`) and its `constants` name the person identifiers (ID, EMAIL,
CIOID). The SDK does not model the operations themselves, so their rules come from the Track API
v2 reference (docs.customer.io, "Batch requests" and the person entity): each operation an
object with `type` and `action`; a person's `identifiers` exactly one of id / email / cio_id, a
string; `action: event` needs a `name`; `timestamp` is unix seconds (an integer); an event's `id`
is a ULID; `attributes` an object; no keys the entity does not declare.
"""

from __future__ import annotations

import re
from typing import Any

from customerio.constants import CIOID, EMAIL, ID

IDENTIFIERS = (ID, EMAIL, CIOID)
PERSON_ACTIONS = frozenset(
    {
        "identify",
        "delete",
        "event",
        "screen",
        "page",
        "add_relationships",
        "delete_relationships",
        "add_device",
        "delete_device",
        "merge",
        "suppress",
        "unsuppress",
    }
)
PERSON_KEYS = frozenset(
    {"type", "action", "identifiers", "attributes", "name", "id", "timestamp", "cio_relationships"}
)
_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


class ContractError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def operation_problems(op: Any) -> list[str]:
    if not isinstance(op, dict):
        return ["an operation must be an object"]
    problems = [f"unknown key '{k}'" for k in op if k not in PERSON_KEYS]
    if op.get("type") != "person":
        problems.append(f"type '{op.get('type')}': only person operations are checked here")
    if op.get("action") not in PERSON_ACTIONS:
        problems.append(f"action '{op.get('action')}' is not a person action")
    ids = op.get("identifiers")
    if not isinstance(ids, dict) or len(ids) != 1 or next(iter(ids)) not in IDENTIFIERS:
        problems.append(f"identifiers must be exactly one of {', '.join(IDENTIFIERS)}")
    elif not isinstance(next(iter(ids.values())), str):
        problems.append("an identifier's value must be a string")
    if "attributes" in op and not isinstance(op["attributes"], dict):
        problems.append("attributes must be an object")
    if op.get("action") == "event" and not (isinstance(op.get("name"), str) and op["name"]):
        problems.append("an event needs a name")
    if "timestamp" in op and (
        isinstance(op["timestamp"], bool) or not isinstance(op["timestamp"], int)
    ):
        problems.append("timestamp must be unix seconds (an integer)")
    if "id" in op and not (isinstance(op["id"], str) and _ULID.match(op["id"])):
        problems.append(f"id '{op['id']}' is not a ULID")
    return problems


def check_request(body: Any) -> None:
    """Raise ContractError naming every problem of a `/api/v2/batch` body."""
    if not isinstance(body, dict) or set(body) != {"batch"} or not isinstance(body["batch"], list):
        raise ContractError(['the body must be {"batch": [operations]}'])
    if not body["batch"]:
        raise ContractError(["the batch is empty"])
    problems = [
        f"batch[{i}]: {p}" for i, op in enumerate(body["batch"]) for p in operation_problems(op)
    ]
    if problems:
        raise ContractError(problems)
