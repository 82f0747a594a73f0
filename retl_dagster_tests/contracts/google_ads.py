"""Google Ads REST request bodies checked against Google's own protos (the `google-ads` package):
each body is parsed into its request message with unknown fields refused, as Google's JSON
transcoding does, then held to what the service accepts beyond the proto's types (the
UserIdentifier kinds a click conversion upload takes, per its reference documentation).

The API version is our client's default (`GoogleAdsConfig.api_version`); when the package is
older than that, its newest version is used instead.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import google.ads.googleads
from google.protobuf.json_format import ParseError

from retl_dagster.destinations.impl.google_ads.config import GoogleAdsConfig


@functools.cache
def api_version() -> str:
    """Our client's version, or the package's newest where ours is newer than it ships."""
    ours = str(GoogleAdsConfig.model_fields["api_version"].default)
    shipped = sorted(
        (m.name for m in pkgutil.iter_modules(google.ads.googleads.__path__)),
        key=lambda n: int(n[1:]) if re.fullmatch(r"v\d+", n) else -1,
    )
    versions = [v for v in shipped if re.fullmatch(r"v\d+", v)]
    return ours if ours in versions else versions[-1]


def _services(name: str) -> ModuleType:
    return importlib.import_module(f"google.ads.googleads.{api_version()}.services.types.{name}")


CLICK_CONVERSION_IDENTIFIERS = ("hashed_email", "hashed_phone_number")
"""UserIdentifier kinds ConversionUploadService accepts ("Accepted for ... ConversionUpload
Service" in UserIdentifier's reference; address_info is "Accepted only for Customer Match,
Store Sales, and ConversionAdjustmentUploadService")."""
MAX_CLICK_CONVERSION_IDENTIFIERS = 5
"""ClickConversion.user_identifiers: "The maximum number of user identifiers for each
conversion is 5"."""


@dataclass(frozen=True)
class Violation:
    """One way a body breaks the contract, as Google would locate it."""

    message: str
    code: tuple[str, str] | None = None
    """(error kind, reason) of the GoogleAdsError Google answers with; None: the body does not
    parse, which Google answers with a google.rpc.BadRequest instead."""
    path: tuple[tuple[str, int | None], ...] = ()


def _request_type(path: str) -> tuple[str, Any]:
    """The method a REST path names and its request message."""
    routes = [
        (r":uploadClickConversions$", "conversion_upload_service", "UploadClickConversionsRequest"),
        (r"offlineUserDataJobs:create$", "offline_user_data_job_service", "CreateOfflineUserDataJobRequest"),  # noqa: E501
        (r"offlineUserDataJobs/[^/]+:addOperations$", "offline_user_data_job_service", "AddOfflineUserDataJobOperationsRequest"),  # noqa: E501
        (r"offlineUserDataJobs/[^/]+:run$", "offline_user_data_job_service", "RunOfflineUserDataJobRequest"),  # noqa: E501
        (r"googleAds:search$", "google_ads_service", "SearchGoogleAdsRequest"),
    ]  # fmt: skip
    for pattern, module, name in routes:
        if re.search(pattern, path):
            return name, getattr(_services(module), name)
    raise KeyError(path)


def _identifier_kind(identifier: Any) -> str | None:
    return type(identifier).pb(identifier).WhichOneof("identifier")


def violations(path: str, body: Any) -> list[Violation]:
    """What in the body sent to `path` Google's API would refuse; empty when it conforms."""
    try:
        name, message_type = _request_type(path)
    except KeyError:
        return [Violation(f"{path}: no such Google Ads API method")]
    try:
        # Path parameters (customer_id, resource_name) come from the URL, not the body.
        request = message_type.from_json(json.dumps(body or {}), ignore_unknown_fields=False)
    except ParseError as exc:
        return [Violation(f"Invalid JSON payload received. {exc}")]
    out: list[Violation] = []
    if name == "UploadClickConversionsRequest":
        for i, conversion in enumerate(request.conversions):
            ids = list(conversion.user_identifiers)
            if len(ids) > MAX_CLICK_CONVERSION_IDENTIFIERS:
                out.append(
                    Violation(
                        f"a click conversion takes at most {MAX_CLICK_CONVERSION_IDENTIFIERS} "
                        "user identifiers",
                        ("conversionUploadError", "INVALID_USER_IDENTIFIER"),
                        (("conversions", i), ("user_identifiers", None)),
                    )
                )
            for j, identifier in enumerate(ids):
                kind = _identifier_kind(identifier)
                if kind not in CLICK_CONVERSION_IDENTIFIERS:
                    out.append(
                        Violation(
                            f"user identifier {kind} is not supported for click conversion "
                            "uploads: only hashed_email and hashed_phone_number",
                            ("conversionUploadError", "UNSUPPORTED_USER_IDENTIFIER"),
                            (("conversions", i), ("user_identifiers", j)),
                        )
                    )
    elif name == "AddOfflineUserDataJobOperationsRequest":
        for i, operation in enumerate(request.operations):
            kind = type(operation).pb(operation).WhichOneof("operation")
            if kind in ("create", "remove"):
                data = getattr(operation, kind)
                for j, identifier in enumerate(data.user_identifiers):
                    if _identifier_kind(identifier) is None:
                        out.append(
                            Violation(
                                "a user identifier sets none of its kinds",
                                ("offlineUserDataJobError", "MISSING_USER_IDENTIFIER"),
                                (("operations", i), (kind, None), ("user_identifiers", j)),
                            )
                        )
            elif kind is None:
                out.append(
                    Violation(
                        "an operation is neither create, remove nor remove_all",
                        ("requestError", "REQUIRED_FIELD_MISSING"),
                        (("operations", i),),
                    )
                )
    elif name == "CreateOfflineUserDataJobRequest":
        job = request.job
        if job.type_.name == "CUSTOMER_MATCH_USER_LIST" and not (
            job.customer_match_user_list_metadata.user_list
        ):
            out.append(
                Violation(
                    "a Customer Match job needs customer_match_user_list_metadata.user_list",
                    ("requestError", "REQUIRED_FIELD_MISSING"),
                    (("job", None),),
                )
            )
    return out
