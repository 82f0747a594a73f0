from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pydantic

from retl_dagster.destinations.http import HttpSettings

DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
MAX_BATCH_SIZE = 10_000
_SPREADSHEET_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True, repr=False)
class ServiceAccountKey:
    """The parts of a service account's JSON key file that sign in. `repr=False`: it holds the
    private key, and must never show in a log or a traceback."""

    client_email: str
    private_key: str
    private_key_id: str | None
    token_uri: str | None

    def __repr__(self) -> str:
        return f"ServiceAccountKey({self.client_email})"


def parse_key(text: str) -> ServiceAccountKey:
    """The key file's content; the error never quotes it (it holds the private key)."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(
            "service_account_json is not JSON: give the content of the service account's key "
            "file (IAM > Service accounts > Keys > Add key > JSON)"
        ) from None
    if not isinstance(data, dict):
        raise ValueError("service_account_json must be the key file's JSON object")
    missing = [k for k in ("client_email", "private_key") if not isinstance(data.get(k), str)]
    if missing:
        raise ValueError(
            f"service_account_json lacks {', '.join(missing)}: it must be a service account "
            "key file (type service_account), not an OAuth client or an API key"
        )
    return ServiceAccountKey(
        client_email=data["client_email"],
        private_key=data["private_key"],
        private_key_id=data.get("private_key_id"),
        token_uri=data.get("token_uri"),
    )


class GoogleSheetsConfig(HttpSettings):
    """A spreadsheet written by a Google Cloud service account; share the spreadsheet with the
    account's `client_email` as an editor."""

    spreadsheet_id: str
    """The id in the spreadsheet's URL: `https://docs.google.com/spreadsheets/d/<id>/edit`."""
    service_account_json: pydantic.SecretStr
    """The service account key file's JSON content (from the environment)."""
    token_url: pydantic.AnyHttpUrl | None = None
    """OAuth token endpoint; default: the key's `token_uri`, else Google's."""
    base_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://sheets.googleapis.com")
    batch_size: int = pydantic.Field(default=5000, ge=1, le=MAX_BATCH_SIZE)
    """Rows per batch: one `values:batchUpdate` (split under 2 MB) and at most one
    `batchUpdate` of row deletions each."""

    @pydantic.field_validator("spreadsheet_id")
    @classmethod
    def _plain_id(cls, v: str) -> str:
        if not _SPREADSHEET_ID.match(v):
            raise ValueError(
                "spreadsheet_id must be the id from the spreadsheet's URL "
                "(https://docs.google.com/spreadsheets/d/<id>/edit), not the whole URL"
            )
        return v

    @pydantic.field_validator("service_account_json")
    @classmethod
    def _a_key_file(cls, v: pydantic.SecretStr) -> pydantic.SecretStr:
        parse_key(v.get_secret_value())
        return v

    def key(self) -> ServiceAccountKey:
        return parse_key(self.service_account_json.get_secret_value())

    def resolved_token_url(self) -> str:
        if self.token_url is not None:
            return str(self.token_url)
        return self.key().token_uri or DEFAULT_TOKEN_URL
