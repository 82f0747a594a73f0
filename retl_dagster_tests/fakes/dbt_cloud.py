"""A fake dbt Cloud Administrative API v2 (docs.getdbt.com/dbt-cloud/api-v2), the endpoints
dagster-dbt's `cloud_v2` client calls: `GET/POST /api/v2/accounts/{id}/jobs`, `POST
jobs/{id}/run`, `GET runs` (filtered on `finished_at__range`, paginated, `extra.pagination
.total_count`), `GET runs/{id}`, `GET runs/{id}/artifacts` and `runs/{id}/artifacts/{path}`
(manifest.json, run_results.json as dbt wrote them). Every answer but an artifact is wrapped in
`{"data": ..., "status": {...}}`. A wrong token -> 401; another account -> 404 (the token's
account only); an unknown job or run -> 404. A run started through the API (Dagster's `dbt
parse` ad hoc job) finishes at once with the manifest as its artifact; `finish_job_run` is a
scheduled job run finishing in dbt Cloud."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from retl_dagster_tests.fakes.base import FakeServer

SUCCESS, ERROR = 10, 20


class FakeDbtCloud(FakeServer):
    url_map = Map(
        [
            Rule(
                "/api/v2/accounts/<int:account>/jobs", endpoint="api_jobs", methods=["GET", "POST"]
            ),
            Rule(
                "/api/v2/accounts/<int:account>/jobs/<int:job>/run",
                endpoint="api_trigger",
                methods=["POST"],
            ),  # noqa: E501
            Rule("/api/v2/accounts/<int:account>/runs", endpoint="api_runs", methods=["GET"]),
            Rule(
                "/api/v2/accounts/<int:account>/runs/<int:run>", endpoint="api_run", methods=["GET"]
            ),
            Rule(
                "/api/v2/accounts/<int:account>/runs/<int:run>/artifacts",
                endpoint="api_artifacts",
                methods=["GET"],
            ),
            Rule(
                "/api/v2/accounts/<int:account>/runs/<int:run>/artifacts/<path:path>",
                endpoint="api_artifact",
                methods=["GET"],
            ),
        ]
    )

    def __init__(
        self, manifest: dict[str, Any], account_id: int = 11, token: str = "dbtc_test_token"
    ) -> None:
        super().__init__()
        self.manifest = manifest
        self.account_id, self.token = account_id, token
        self.project_id, self.environment_id = 22, 33
        self.jobs: dict[int, dict[str, Any]] = {}
        self.runs: dict[int, dict[str, Any]] = {}
        self.artifacts: dict[int, dict[str, Any]] = {}

    def add_job(self, job_id: int, name: str) -> None:
        self.jobs[job_id] = self._job(job_id, name)

    def finish_job_run(self, job_id: int, models: list[str], status: int = SUCCESS) -> int:
        """A run of job `job_id` (scheduled in dbt Cloud) finishes having built `models`."""
        now = dt.datetime.now(dt.UTC)
        run_id = self._new_run(job_id, status, now)
        results = []
        for name in models:
            [unique_id] = [
                k
                for k, n in self.manifest["nodes"].items()
                if k.split(".")[0] in ("model", "seed") and n["name"] == name
            ]
            results.append(
                {
                    "unique_id": unique_id,
                    "status": "success" if status == SUCCESS else "error",
                    "execution_time": 0.5,
                    "timing": [
                        {
                            "name": "execute",
                            "started_at": now.isoformat(),
                            "completed_at": now.isoformat(),
                        }
                    ],
                    "failures": None,
                }
            )
        self.artifacts[run_id] = {
            "manifest.json": self.manifest,
            "run_results.json": {
                "metadata": {
                    "invocation_id": f"inv-{run_id}",
                    "generated_at": now.isoformat(),
                    # dbt Cloud puts its run's ids in the artifact's env (DBT_CLOUD_*).
                    "env": {
                        "DBT_CLOUD_RUN_ID": str(run_id),
                        "DBT_CLOUD_JOB_ID": str(job_id),
                        "DBT_CLOUD_PROJECT_ID": str(self.project_id),
                        "DBT_CLOUD_ENVIRONMENT_ID": str(self.environment_id),
                    },
                },
                "results": results,
            },
        }
        return run_id

    # -- the API

    def _refused(self, request: Request, account: int) -> Response | None:
        if request.headers.get("Authorization") != f"Token {self.token}":
            return self._json(
                {"status": {"code": 401, "is_success": False, "user_message": "Invalid token."}},
                401,
            )  # noqa: E501
        if account != self.account_id:
            return self._json(
                {"status": {"code": 404, "is_success": False, "user_message": "Not found."}}, 404
            )  # noqa: E501
        return None

    def api_jobs(self, request: Request, account: int) -> Response:
        if refused := self._refused(request, account):
            return refused
        if request.method == "POST":
            body = request.get_json()
            if not body.get("name") or body.get("environment_id") != self.environment_id:
                return self._json({"status": {"code": 400, "is_success": False}}, 400)
            job_id = max([0, *self.jobs]) + 1000
            self.jobs[job_id] = self._job(job_id, body["name"])
            return self._data(self.jobs[job_id], 201)
        args = request.args
        jobs = [
            j
            for j in self.jobs.values()
            if str(j["project_id"]) == args.get("project_id", str(self.project_id))
            and str(j["environment_id"]) == args.get("environment_id", str(self.environment_id))
        ]
        offset, limit = int(args.get("offset", 0)), int(args.get("limit", 100))
        return self._data(jobs[offset : offset + limit], extra=len(jobs))

    def api_trigger(self, request: Request, account: int, job: int) -> Response:
        if refused := self._refused(request, account):
            return refused
        if job not in self.jobs:
            return self._json({"status": {"code": 404, "is_success": False}}, 404)
        run_id = self._new_run(job, SUCCESS, dt.datetime.now(dt.UTC))
        self.artifacts[run_id] = {"manifest.json": self.manifest}
        return self._data(self.runs[run_id])

    def api_runs(self, request: Request, account: int) -> Response:
        if refused := self._refused(request, account):
            return refused
        args = request.args
        low, high = (dt.datetime.fromisoformat(v) for v in json.loads(args["finished_at__range"]))
        found = sorted(
            (
                r
                for r in self.runs.values()
                if r["finished_at"]
                and low <= dt.datetime.fromisoformat(r["finished_at"]) <= high
                and str(r["environment_id"]) == args.get("environment_id")
            ),
            key=lambda r: r["finished_at"],
        )
        offset, limit = int(args.get("offset", 0)), int(args.get("limit", 100))
        return self._data(found[offset : offset + limit], extra=len(found))

    def api_run(self, request: Request, account: int, run: int) -> Response:
        if refused := self._refused(request, account):
            return refused
        if run not in self.runs:
            return self._json({"status": {"code": 404, "is_success": False}}, 404)
        return self._data(self.runs[run])

    def api_artifacts(self, request: Request, account: int, run: int) -> Response:
        if refused := self._refused(request, account):
            return refused
        if run not in self.runs:
            return self._json({"status": {"code": 404, "is_success": False}}, 404)
        return self._data(sorted(self.artifacts.get(run, {})))

    def api_artifact(self, request: Request, account: int, run: int, path: str) -> Response:
        if refused := self._refused(request, account):
            return refused
        if path not in self.artifacts.get(run, {}):
            return self._json({"status": {"code": 404, "is_success": False}}, 404)
        return self._json(self.artifacts[run][path])

    # -- helpers

    def _job(self, job_id: int, name: str) -> dict[str, Any]:
        return {
            "id": job_id,
            "account_id": self.account_id,
            "project_id": self.project_id,
            "environment_id": self.environment_id,
            "name": name,
            "job_type": "scheduled",
        }

    def _new_run(self, job_id: int, status: int, finished: dt.datetime) -> int:
        run_id = max([0, *self.runs]) + 1
        self.runs[run_id] = {
            "id": run_id,
            "account_id": self.account_id,
            "project_id": self.project_id,
            "environment_id": self.environment_id,
            "job_definition_id": job_id,
            "trigger_id": run_id,
            "status": status,
            "finished_at": finished.isoformat(),
            "href": f"{self.url}/deploy/{self.account_id}/projects/{self.project_id}"
            f"/runs/{run_id}/",
        }
        return run_id

    def _data(self, data: Any, status: int = 200, extra: int | None = None) -> Response:
        body: dict[str, Any] = {"status": {"code": status, "is_success": True}, "data": data}
        if extra is not None:
            body["extra"] = {"pagination": {"count": len(data), "total_count": extra}}
        return self._json(body, status)

    @staticmethod
    def _json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, content_type="application/json")
