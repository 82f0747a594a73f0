"""Intercom's REST API request bodies checked against the official SDK's own models
(`python-intercom`, Fern-generated from Intercom's API definition; pydantic).

The SDK's models accept unknown keys (`extra="allow"`) and coerce values, which would let any
body through; so each is copied here with its own fields and types, refusing unknown keys and
coercion (`extra="forbid"`, `strict`):
- `POST /contacts`: `CreateContactRequest`, the union of `CreateContactRequestWithEmail`,
  `...WithExternalId` and `...WithRole`. The API takes those identifiers together (the reference:
  "at least one of role, external_id or email"), so the body is held to the union's fields, with
  at least one member's required field present;
- `PUT /contacts/{id}`: the SDK's `contacts.update(...)` keyword parameters (it has no model);
- `POST /contacts/search`: `SearchRequest` with a `SingleFilterSearchRequest` query (its operator
  one of the SDK's literals; the SDK also lets `Any` through, which is not checked);
- `POST /companies`: `CreateOrUpdateCompanyRequest`;
- `POST /tags`: `CreateOrUpdateTagRequest` (not sent by the destination; checked for a fake
  that receives one).
"""

from __future__ import annotations

import typing
from typing import Any

import pydantic
from intercom.contacts.raw_client import RawContactsClient
from intercom.types.create_contact_request_with_email import CreateContactRequestWithEmail
from intercom.types.create_contact_request_with_external_id import (
    CreateContactRequestWithExternalId,
)
from intercom.types.create_contact_request_with_role import CreateContactRequestWithRole
from intercom.types.create_or_update_company_request import CreateOrUpdateCompanyRequest
from intercom.types.create_or_update_tag_request import CreateOrUpdateTagRequest
from intercom.types.search_request import SearchRequest
from intercom.types.single_filter_search_request import SingleFilterSearchRequest
from intercom.types.single_filter_search_request_operator import (
    SingleFilterSearchRequestOperator,
)

STRICT = pydantic.ConfigDict(extra="forbid", strict=True)
CREATE_MEMBERS = (
    CreateContactRequestWithEmail,
    CreateContactRequestWithExternalId,
    CreateContactRequestWithRole,
)


class ContractError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _strict(name: str, fields: dict[str, tuple[Any, Any]]) -> type[pydantic.BaseModel]:
    return pydantic.create_model(name, __config__=STRICT, **fields)  # type: ignore[call-overload,no-any-return]


def _copy(model: type[pydantic.BaseModel]) -> type[pydantic.BaseModel]:
    return _strict(
        f"Strict{model.__name__}",
        {n: (f.annotation, f) for n, f in model.model_fields.items()},
    )


# The union's fields, none required on its own (checked below: one member's required field).
CREATE_REQUIRED = frozenset(
    n for m in CREATE_MEMBERS for n, f in m.model_fields.items() if f.is_required()
)
CreateContact = _strict(
    "StrictCreateContactRequest",
    {
        n: (typing.Optional[f.annotation], None)  # noqa: UP045 - a runtime annotation
        for m in CREATE_MEMBERS
        for n, f in m.model_fields.items()
    },
)
_UPDATE_HINTS = typing.get_type_hints(RawContactsClient.update)
UpdateContact = _strict(
    "StrictUpdateContactRequest",
    {
        n: (t, None)
        for n, t in _UPDATE_HINTS.items()
        if n not in ("contact_id", "request_options", "return")
    },
)
_OPERATORS = typing.get_args(SingleFilterSearchRequestOperator)[0]  # the Literal, not Any
SearchQuery = _strict(
    "StrictSingleFilterSearchRequest",
    {
        **{n: (f.annotation, f) for n, f in SingleFilterSearchRequest.model_fields.items()},
        "operator": (_OPERATORS, ...),
        "field": (str, ...),
    },
)
Search = _strict(
    "StrictSearchRequest",
    {
        "query": (SearchQuery, ...),
        "pagination": (SearchRequest.model_fields["pagination"].annotation, None),
    },
)
Company = _copy(CreateOrUpdateCompanyRequest)
Tag = _copy(CreateOrUpdateTagRequest)


def _problems(model: type[pydantic.BaseModel], body: Any) -> list[str]:
    try:
        model.model_validate(body)
    except pydantic.ValidationError as exc:
        return [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]
    return []


def request_problems(method: str, path: str, body: Any) -> list[str]:
    """What is wrong with a request body, by the SDK's models (empty: it fits)."""
    if method == "POST" and path == "/contacts":
        problems = _problems(CreateContact, body)
        if isinstance(body, dict) and not CREATE_REQUIRED & {k for k, v in body.items() if v}:
            problems.append(f"a contact needs one of {', '.join(sorted(CREATE_REQUIRED))}")
        return problems
    if method == "PUT" and path.startswith("/contacts/"):
        return _problems(UpdateContact, body)
    if method == "POST" and path == "/contacts/search":
        return _problems(Search, body)
    if method == "POST" and path == "/companies":
        return _problems(Company, body)
    if method == "POST" and path == "/tags":
        return _problems(Tag, body)
    return []


def check_request(method: str, path: str, body: Any) -> None:
    """Raise ContractError naming every problem of the body."""
    problems = request_problems(method, path, body)
    if problems:
        raise ContractError(problems)
