"""A fake Fivetran REST API v1 (fivetran.com/docs/rest-api), the endpoints dagster-fivetran's
`FivetranWorkspace` and polling sensor call: `GET /v1/groups`, `GET /v1/destinations/{id}` (a
group's destination has the group's id), `GET /v1/groups/{id}/connectors` (cursor paging: `limit`,
`cursor` -> `next_cursor`), `GET /v1/connectors/{id}` (`id`, `group_id`, `service`, `schema`,
`paused`, `status.setup_state/sync_state`, `succeeded_at`, `failed_at`, `sync_frequency`,
`schedule_type`) and `GET /v1/connectors/{id}/schemas` (the schema config: schemas -> tables, each
`enabled` and `name_in_destination`). `connections` is accepted for `connectors` (the API's newer
name). Every answer is wrapped in `{"code": "Success", "data": ...}`; an error is `{"code":
"AuthFailed" | "NotFound_<Thing>", "message": ...}`. HTTP basic auth with the API key and secret:
anything else -> 401. `finish_sync` is a connector's sync (scheduled in Fivetran) finishing."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.fakes.base import FakeServer

GROUP, WAREHOUSE = "projected_sickle", "analytics"
STARTED = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
"""The connectors' first (historical) sync: they have schemas, so Dagster lists them."""


def _stamp(when: dt.datetime) -> str:
    """Fivetran's timestamps: ISO 8601, UTC, milliseconds, `Z`."""
    return (
        when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    )


class FakeFivetran(FakeServer):
    url_map = Map(
        [
            Rule("/v1/groups", endpoint="api_groups", methods=["GET"]),
            Rule("/v1/destinations/<destination>", endpoint="api_destination", methods=["GET"]),
            Rule("/v1/groups/<group>/connectors", endpoint="api_group_connectors", methods=["GET"]),
            Rule(
                "/v1/groups/<group>/connections", endpoint="api_group_connectors", methods=["GET"]
            ),
            Rule("/v1/connectors/<connector>", endpoint="api_connector", methods=["GET"]),
            Rule("/v1/connections/<connector>", endpoint="api_connector", methods=["GET"]),
            Rule("/v1/connectors/<connector>/schemas", endpoint="api_schemas", methods=["GET"]),
            Rule("/v1/connections/<connector>/schemas", endpoint="api_schemas", methods=["GET"]),
        ]
    )

    def __init__(self, api_key: str = "ft_key_test", api_secret: str = "ft_secret_test") -> None:
        super().__init__()
        self.api_key, self.api_secret = api_key, api_secret
        self.groups: dict[str, dict[str, Any]] = {
            GROUP: {"id": GROUP, "name": "Production", "created_at": _stamp(STARTED)}
        }
        self.connectors: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, dict[str, Any]] = {}

    def add_connector(
        self, connector_id: str, schema: str, tables: list[str], service: str = "salesforce"
    ) -> None:
        """A connected connector of `service` in the group, loading `tables` into `schema`, with
        one sync done (its historical sync, long ago)."""
        self.connectors[connector_id] = {
            "id": connector_id,
            "group_id": GROUP,
            "service": service,
            "service_version": 1,
            "schema": schema,
            "connected_by": "monitoring_assuring",
            "created_at": _stamp(STARTED),
            "succeeded_at": _stamp(STARTED),
            "failed_at": None,
            "paused": False,
            "pause_after_trial": False,
            "sync_frequency": 360,
            "schedule_type": "auto",
            "daily_sync_time": "03:00",
            "status": {
                "setup_state": "connected",
                "sync_state": "scheduled",
                "update_state": "on_schedule",
                "is_historical_sync": False,
                "tasks": [],
                "warnings": [],
            },
            "config": {},
        }
        self.schemas[connector_id] = {
            "enable_new_by_default": True,
            "schema_change_handling": "ALLOW_ALL",
            "schemas": {
                schema: {
                    "name_in_destination": schema,
                    "enabled": True,
                    "tables": {
                        table: {
                            "name_in_destination": table,
                            "enabled": True,
                            "sync_mode": "SOFT_DELETE",
                            "enabled_patch_settings": {"allowed": True},
                        }
                        for table in tables
                    },
                }
            },
        }

    def finish_sync(self, connector_id: str, failed: bool = False) -> str:
        """A sync of `connector_id` (on Fivetran's schedule) finishes now: `succeeded_at` (or
        `failed_at`) moves on, and the connector waits for its next scheduled sync. Returns the
        new timestamp."""
        connector = self.connectors[connector_id]
        previous = max(
            dt.datetime.fromisoformat(t)
            for t in (connector["succeeded_at"], connector["failed_at"])
            if t
        )
        # Strictly after the last one, even within the same millisecond.
        now = max(dt.datetime.now(dt.UTC), previous + dt.timedelta(milliseconds=1))
        connector["failed_at" if failed else "succeeded_at"] = _stamp(now)
        connector["status"]["sync_state"] = "scheduled"
        connector["status"]["update_state"] = "on_schedule"
        return _stamp(now)

    # -- the API

    def _refused(self, request: Request) -> Response | None:
        expected = base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return self._error(
                401, "AuthFailed", "Authentication failed: invalid API key or secret."
            )
        return None

    def api_groups(self, request: Request) -> Response:
        if refused := self._refused(request):
            return refused
        return self._page(request, list(self.groups.values()))

    def api_destination(self, request: Request, destination: str) -> Response:
        if refused := self._refused(request):
            return refused
        if destination not in self.groups:
            return self._not_found("Destination", destination)
        return self._data(
            {
                "id": destination,
                "group_id": destination,
                "service": "snowflake",
                "region": "GCP_US_EAST4",
                "time_zone_offset": "0",
                "setup_status": "connected",
                "config": {"host": "acme.snowflakecomputing.com", "database": WAREHOUSE},
            }
        )

    def api_group_connectors(self, request: Request, group: str) -> Response:
        if refused := self._refused(request):
            return refused
        if group not in self.groups:
            return self._not_found("Group", group)
        return self._page(request, [c for c in self.connectors.values() if c["group_id"] == group])

    def api_connector(self, request: Request, connector: str) -> Response:
        if refused := self._refused(request):
            return refused
        if connector not in self.connectors:
            return self._not_found("Connector", connector)
        return self._data(self.connectors[connector])

    def api_schemas(self, request: Request, connector: str) -> Response:
        if refused := self._refused(request):
            return refused
        if connector not in self.connectors:
            return self._not_found("Connector", connector)
        return self._data(self.schemas[connector])

    # -- helpers

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        """Cursor paging: `limit` 1..1000 (100 by default); the cursor is an opaque offset."""
        try:
            limit = int(request.args.get("limit", 100))
            offset = int(base64.b64decode(request.args.get("cursor", "MA==")).decode())
        except ValueError:
            return self._error(400, "InvalidInput", "Invalid cursor or limit.")
        if not 1 <= limit <= 1000:
            return self._error(400, "InvalidInput", "limit must be in the range 1..1000.")
        data: dict[str, Any] = {"items": items[offset : offset + limit]}
        if offset + limit < len(items):
            data["next_cursor"] = base64.b64encode(str(offset + limit).encode()).decode()
        return self._data(data)

    def _not_found(self, thing: str, ident: str) -> Response:
        return self._error(404, f"NotFound_{thing}", f"{thing} with id '{ident}' doesn't exist")

    def _error(self, status: int, code: str, message: str) -> Response:
        return self._json({"code": code, "message": message}, status)

    def _data(self, data: Any) -> Response:
        return self._json({"code": "Success", "data": data})

    @staticmethod
    def _json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, content_type="application/json")
