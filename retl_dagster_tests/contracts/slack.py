"""Slack's Block Kit models (slack_sdk) and Slack's escaping rule as a contract for every alert
payload an incoming webhook receives.

- each block parses with `Block.parse_all`, passes the SDK's `validate_json()` (lengths, required
  fields, element limits), and the SDK's `to_dict()` gives back exactly the block as sent (no key
  the SDK does not know, none it would drop);
- `text` and every mrkdwn text object hold `&`, `<` and `>` only as Slack's entities (`&amp;`
  `&lt;` `&gt;`) or in Slack's own link / mention syntax (`<https://...|label>`, `<@U123>`,
  `<#C123>`, `<!here>`, `<!subteam^ID>`, `<!date^...>`), as Slack's formatting docs require.
"""

from __future__ import annotations

import re
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

# Slack's control sequences: links (URL or mailto, optional |label) and mentions.
_SLACK_SYNTAX = re.compile(
    r"<(?:(?:https?://|mailto:)[^<>|\s]+(?:\|[^<>]*)?"
    r"|[@#][A-Z0-9]+(?:\|[^<>]*)?"
    r"|!(?:here|channel|everyone|subteam\^[A-Z0-9]+|date\^[^<>]+)(?:\|[^<>]*)?)>"
)
_ENTITY = re.compile(r"&(?:amp|lt|gt);")


class ContractError(ValueError):
    """A payload Slack's models or Slack's escaping rule refuse."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def unescaped(text: str) -> list[str]:
    """The control characters in `text` that are neither an entity nor Slack syntax."""
    rest = _ENTITY.sub("", _SLACK_SYNTAX.sub("", text))
    return sorted({c for c in rest if c in "&<>"})


def _mrkdwn_texts(node: Any, path: str) -> list[tuple[str, str]]:
    """(path, text) of every mrkdwn text object under `node`. plain_text is shown as typed
    (Slack parses no links or mentions in it), so it is not checked."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
            found.append((path, node["text"]))
        for key, value in node.items():
            found += _mrkdwn_texts(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _mrkdwn_texts(value, f"{path}[{i}]")
    return found


def check_webhook_payload(payload: Any) -> None:
    """Raise ContractError unless `payload` is a valid, correctly escaped Slack message."""
    if not isinstance(payload, dict):
        raise ContractError(["the payload is not a JSON object"])
    problems: list[str] = []
    text = payload.get("text")
    if not isinstance(text, str) or not text:
        problems.append("text: missing (Slack needs it for notifications)")
        texts: list[tuple[str, str]] = []
    else:
        texts = [("text", text)]
    blocks = payload.get("blocks", [])
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise ContractError([*problems, "blocks: not an array of objects"])
    parsed = Block.parse_all(blocks)
    for i, (sent, block) in enumerate(zip(blocks, parsed, strict=True)):
        if block is None or type(block) is Block:
            problems.append(f"blocks[{i}]: unknown block type {sent.get('type')!r}")
            continue
        try:
            block.validate_json()
        except SlackObjectFormationError as exc:
            problems.append(f"blocks[{i}]: {exc}")
            continue
        if block.to_dict() != sent:
            problems.append(f"blocks[{i}]: the SDK reads it as {block.to_dict()!r:.200}")
    texts += _mrkdwn_texts(blocks, "blocks")
    for where, value in texts:
        bad = unescaped(value)
        if bad:
            problems.append(f"{where}: unescaped {' '.join(bad)} in {value!r:.120}")
    if problems:
        raise ContractError(problems)
