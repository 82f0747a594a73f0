"""Alert messages about sync runs, and their delivery to Slack (incoming webhook) and SMTP.

No Dagster here: the sensors in components/ gather a run's facts into a `RunAlert`.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

import httpx
import pydantic

MAX_ERRORS = 5


class AlertError(RuntimeError):
    """An alert could not be delivered; says where and what the server answered."""


@dataclass
class RunAlert:
    sync: str
    status: Literal["failed", "partial", "stopped", "warn", "error", "recovered"]
    """`stopped`: a sequence stopped before this sync, because a sync it follows failed.
    `warn` / `error` / `recovered`: the rejected share crossed a guardrail, or is back within."""
    run_id: str
    """The sync run (partition) id."""
    dagster_run_id: str
    counts: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    url: str | None = None
    """The run's page in the Dagster UI."""

    @property
    def headline(self) -> str:
        if self.status == "stopped":
            return f"retl sequence stopped: sync {self.sync} did not run"
        if self.status == "warn":
            return f"retl sync {self.sync}: rejected records above warn_rejected_percent"
        if self.status == "error":
            return f"retl sync {self.sync}: rejected records above max_rejected_percent"
        if self.status == "recovered":
            return f"retl sync {self.sync} recovered: rejected records within its guardrails"
        what = "failed" if self.status == "failed" else "partly failed (records rejected)"
        return f"retl sync {self.sync} {what}"

    def count_line(self) -> str:
        keys = ("rows_queried", "added", "changed", "removed", "succeeded", "rejected")
        return ", ".join(
            f"{k.replace('_', ' ')} {self.counts[k]}"
            for k in keys
            if self.counts.get(k) is not None
        )


def slack_escape(text: str) -> str:
    """Text for a Slack mrkdwn field: Slack parses `&`, `<` and `>` as control characters
    (links, mentions), so text we did not write (error messages, names) must carry them as
    the HTML entities Slack documents. Our own links are added after escaping."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: RunAlert) -> dict[str, Any]:
    """Slack's incoming-webhook format: `text` (notifications, fallback) plus Block Kit blocks.
    Every mrkdwn text is escaped; the header is plain_text, which Slack does not parse."""
    esc = slack_escape
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": alert.headline[:150]}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Sync*\n{esc(alert.sync)}"},
                {"type": "mrkdwn", "text": f"*Status*\n{esc(alert.status)}"},
                {"type": "mrkdwn", "text": f"*Run*\n{esc(alert.run_id)}"},
                {"type": "mrkdwn", "text": f"*Counts*\n{esc(alert.count_line() or 'n/a')}"},
            ],
        },
    ]
    if alert.errors:
        # Cut before escaping, so an entity is never cut in half.
        listing = "\n".join(f"• {esc(e[:500])}" for e in alert.errors[:MAX_ERRORS])
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*First errors*\n{listing}"}}
        )
    if alert.url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open the run"},
                        "url": alert.url,
                    }
                ],
            }
        )
    # `text` is mrkdwn too (notifications): escape ours, then add our own link, unescaped.
    text = esc(f"{alert.headline}: {alert.count_line()}")
    if alert.url:
        text += f" <{alert.url}|run>"
    return {"text": text, "blocks": blocks}


def email_message(alert: RunAlert, sender: str, to: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"[retl] {alert.headline}"
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    lines = [
        alert.headline,
        "",
        f"Sync: {alert.sync}",
        f"Run: {alert.run_id}",
        f"Counts: {alert.count_line() or 'n/a'}",
    ]
    if alert.errors:
        lines += ["", "First errors:"] + [f"- {e}" for e in alert.errors[:MAX_ERRORS]]
    if alert.url:
        lines += ["", f"Open the run: {alert.url}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def send_slack(webhook_url: str, payload: dict[str, Any], timeout_s: float = 10.0) -> None:
    response = httpx.post(webhook_url, json=payload, timeout=timeout_s)
    if response.status_code != 200:
        # Slack answers e.g. 400 invalid_payload, 403 action_prohibited, 404 no_service.
        raise AlertError(f"Slack refused the alert: HTTP {response.status_code} {response.text}")


class SmtpSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    host: str
    port: int = 587
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: pydantic.SecretStr | None = None
    sender: str = "retl@localhost"
    timeout_s: float = 30.0


def send_email(settings: SmtpSettings, message: EmailMessage) -> None:
    try:
        if settings.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                timeout=settings.timeout_s,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
        with smtp:
            if settings.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if settings.username and settings.password is not None:
                smtp.login(settings.username, settings.password.get_secret_value())
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise AlertError(
            f"email to {message['To']} not sent via {settings.host}:{settings.port}: {exc}"
        ) from exc
