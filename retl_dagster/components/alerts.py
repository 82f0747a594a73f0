"""The Alerts component (Slack channels and an SMTP server) and the sensors that alert on a
sync's failed and partly failed runs."""

# No `from __future__ import annotations`: Dagster reads the sensors' resource parameter types.
import json
import os
from typing import Annotated, Any, Literal

import dagster as dg

from retl_dagster.components.env import EnvBackedResource, split_env_refs
from retl_dagster.components.scaffold import AlertsScaffolder
from retl_dagster.engine.config import SyncConfig
from retl_dagster.engine.notify import (
    AlertError,
    RunAlert,
    SmtpSettings,
    email_message,
    send_email,
    send_slack,
    slack_payload,
)

ALERTS_RESOURCE = "retl_alerts"
GUARDRAIL_TAG = "retl/guardrail"
"""Run tag: the run's rejected share graded against the sync's guardrails (healthy/warn/error)."""
GUARDRAIL_CHANGE_TAG = "retl/guardrail_change"
"""Run tag, only on a run whose grade differs from the sync's previous one: `before->after`."""
UI_URL_ENV = "RETL_UI_URL"
"""Base URL of the Dagster UI for links in alerts (default http://localhost:3000)."""


class AlertChannels(EnvBackedResource):
    """Slack channels (incoming webhooks) and an SMTP server, as declared by the Alerts
    component; option names are flattened (`slack.<channel>.webhook_url`, `email.host`)."""

    def _section(self, prefix: str) -> dict[str, Any]:
        return {k[len(prefix) :]: v for k, v in self.options().items() if k.startswith(prefix)}

    def channels(self) -> list[str]:
        names = json.loads(self.options_json).keys() | self.env.keys()
        return sorted({k.split(".")[1] for k in names if k.startswith("slack.")})

    def has_email(self) -> bool:
        names = json.loads(self.options_json).keys() | self.env.keys()
        return "email.host" in names

    def send_slack(self, channel: str, alert: RunAlert) -> None:
        options = self._section(f"slack.{channel}.")
        if "webhook_url" not in options:
            raise AlertError(
                f"no Slack channel '{channel}' is declared (declared: "
                f"{', '.join(self.channels()) or 'none'})"
            )
        send_slack(str(options["webhook_url"]), slack_payload(alert))

    def send_email(self, to: list[str], alert: RunAlert) -> None:
        settings = SmtpSettings.model_validate(self._section("email."))
        send_email(settings, email_message(alert, settings.sender, to))


def _resolve(
    context: dg.ResolutionContext, raw: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    flat: dict[str, Any] = {}
    for name, spec in (raw.get("slack") or {}).items():
        flat |= {f"slack.{name}.{k}": v for k, v in spec.items()}
    flat |= {f"email.{k}": v for k, v in (raw.get("email") or {}).items()}
    secrets = {k for k in flat if k.endswith((".webhook_url", ".password"))}
    return split_env_refs(context, "alerts", flat, secrets)


@dg.scaffold_with(AlertsScaffolder)
class Alerts(dg.Component, dg.Resolvable, dg.Model):
    """Alert channels: `slack: {name: {webhook_url}}` and `email: {host, port, security,
    username, password, sender}`; syncs name them in their `alerts:`."""

    channels: Annotated[
        tuple[dict[str, Any], dict[str, str]],
        dg.Resolver(_resolve, model_field_type=dict[str, Any]),
    ]

    def resource(self) -> AlertChannels:
        options, env = self.channels
        return AlertChannels(name="alerts", options_json=json.dumps(options), env=env)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return dg.Definitions(resources={ALERTS_RESOURCE: self.resource()})


def _run_metadata(instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey) -> dict[str, Any]:
    """Metadata values of `key`'s materialisation in run `run_id`."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in records:
        mat = record.event_log_entry.asset_materialization
        if mat is not None and mat.asset_key == key:
            return {k: v.value for k, v in mat.metadata.items()}
    return {}


def _step_errors(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    errors = []
    for record in records:
        event = record.event_log_entry.dagster_event
        error = event.step_failure_data.error if event and event.step_failure_data else None
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            errors.append(error.message.strip())
    return errors


def deliver_alert(config: SyncConfig, channels: AlertChannels, alert: RunAlert) -> None:
    """Send `alert` to the sync's Slack channel and email recipients, secrets redacted."""
    alerts = config.alerts
    if alerts is None:
        return
    alert.errors = [channels.redact(e) for e in alert.errors]
    base = os.environ.get(UI_URL_ENV, "http://localhost:3000").rstrip("/")
    alert.url = f"{base}/runs/{alert.dagster_run_id}"
    if alerts.slack:
        channels.send_slack(alerts.slack, alert)
    if alerts.email:
        channels.send_email(alerts.email, alert)


def alert_sensors(
    config: SyncConfig,
    job: Any,  # the sync job, as define_asset_job returns it (resolved with the definitions)
    diff_key: dg.AssetKey,
    load_key: dg.AssetKey,
) -> list[dg.SensorDefinition]:
    """A sync's alert sensors: one alert per run (run-level sensors), none for a run that
    Dagster will retry; with guardrails, one alert per change of the rejected share's grade."""
    alerts = config.alerts
    if alerts is None or not (alerts.slack or alerts.email):
        return []
    name = config.name

    def deliver(channels: AlertChannels, alert: RunAlert) -> None:
        deliver_alert(config, channels, alert)

    def counts(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
        return {
            **_run_metadata(instance, run_id, diff_key),
            **_run_metadata(instance, run_id, load_key),
        }

    sensors: list[dg.SensorDefinition] = []
    if "failed" in alerts.on:

        @dg.run_failure_sensor(
            name=f"retl_{name}_failed_alert",
            monitored_jobs=[job],
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=f"Alerts when a run of sync {name} fails.",
        )
        def failed_alert(context: dg.RunFailureSensorContext, retl_alerts: AlertChannels) -> None:
            run = context.dagster_run
            if run.tags.get("dagster/will_retry") == "true":
                return  # Dagster retries it: alert on the final attempt only
            facts = counts(context.instance, run.run_id)
            # Our own words first (e.g. which keys repeat), then Dagster's step errors.
            errors = (
                ([str(facts["error"])] if facts.get("error") else [])
                or _step_errors(context.instance, run.run_id)
                or [context.failure_event.message or "the run failed"]
            )
            deliver(
                retl_alerts,
                RunAlert(
                    name,
                    "failed",
                    run.tags.get("dagster/partition", "?"),
                    run.run_id,
                    facts,
                    errors,
                ),
            )

        sensors.append(failed_alert)
    if "partial" in alerts.on:

        @dg.run_status_sensor(
            run_status=dg.DagsterRunStatus.SUCCESS,
            name=f"retl_{name}_partial_alert",
            monitored_jobs=[job],
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=f"Alerts when a run of sync {name} has rejected records.",
        )
        def partial_alert(context: dg.RunStatusSensorContext, retl_alerts: AlertChannels) -> None:
            run = context.dagster_run
            facts = counts(context.instance, run.run_id)
            if not facts.get("rejected"):
                return  # healthy: nothing to say
            samples = facts.get("rejected_samples") or ""
            errors = str(samples).splitlines()[2:]  # the Markdown table's rows
            deliver(
                retl_alerts,
                RunAlert(
                    name,
                    "partial",
                    run.tags.get("dagster/partition", "?"),
                    run.run_id,
                    facts,
                    errors,
                ),
            )

        sensors.append(partial_alert)
    guarded = config.guardrails is not None and config.guardrails.checks_rejected
    if "guardrails" in alerts.on and guarded:

        @dg.run_status_sensor(
            run_status=dg.DagsterRunStatus.SUCCESS,
            name=f"retl_{name}_guardrail_alert",
            monitored_jobs=[job],
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=f"Alerts when sync {name}'s rejected share crosses a guardrail, once per "
            "change (healthy, warn, error), and when it is back within them.",
        )
        def guardrail_alert(context: dg.RunStatusSensorContext, retl_alerts: AlertChannels) -> None:
            run = context.dagster_run
            # The load stage keeps each sync's grade in _retl.guardrail_state and tags only the
            # run that changed it, so a restart or a re-evaluation never alerts twice.
            change = run.tags.get(GUARDRAIL_CHANGE_TAG)
            if not change:
                return
            before, _, after = change.partition("->")
            facts = counts(context.instance, run.run_id)
            check = _check_evaluation(context.instance, run.run_id, load_key)
            why = str(check.get("description") or f"rejected records: {before} -> {after}")
            status: Literal["warn", "error", "recovered"] = (
                "error" if after == "error" else "warn" if after == "warn" else "recovered"
            )
            samples = str(facts.get("rejected_samples") or "").splitlines()[2:]
            deliver(
                retl_alerts,
                RunAlert(
                    name,
                    status,
                    run.tags.get("dagster/partition", "?"),
                    run.run_id,
                    facts,
                    [f"{why} (was {before})", *samples],
                ),
            )

        sensors.append(guardrail_alert)
    return sensors


def _check_evaluation(
    instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey
) -> dict[str, Any]:
    """The description and metadata of `key`'s asset check evaluation in run `run_id`."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.event_specific_data if event is not None else None
        if isinstance(data, dg.AssetCheckEvaluation) and data.asset_key == key:
            return {
                "description": data.description,
                **{k: v.value for k, v in data.metadata.items()},
            }
    return {}
