"""The `http` destination's templates: sandboxed Jinja2 (the templates come from YAML, so they may
read only what they are given and call nothing unsafe), strict about undefined names, and
rendered per context: a URL quotes every value it prints, a body JSON-escapes every value it
prints and must render valid JSON.

Jinja2 rather than our own `{field}` substitution: users need loops (a batch body), conditions
(`sync_nulls: false` leaves a field out) and filters, and Jinja2's sandbox is well kept (it is
already a Dagster dependency)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from retl_dagster.common.encoding import dumps

RECORD_VARS = frozenset(
    {"record", "key", "dest_id", "match_value", "op", "sync", "run_id", "batch_id"}
)
"""What a `per: record` template may use."""
BATCH_VARS = frozenset({"records", "op", "sync", "run_id", "batch_id"})
"""What a `per: batch` template may use; each of `records` has `record`, `key`, `dest_id`,
`match_value`."""
CHECK_VARS: frozenset[str] = frozenset()


class JsonText(str):
    """Text that already is JSON (the `tojson` filter's output): printed as it is."""


class MissingValue(ValueError):
    """A URL printed a null (e.g. a `dest_id` the destination never answered)."""


def tojson(value: Any) -> JsonText:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # StrictUndefined: says which name is missing
    return JsonText(dumps(value).decode())


def _json_value(value: Any) -> Any:
    """What `{{ x }}` prints in a body: inside quotes a string stays one string (its quotes and
    backslashes escaped, so a value cannot add keys); numbers, booleans, null, objects and
    arrays print as JSON."""
    if isinstance(value, JsonText):
        return value
    if isinstance(value, str):
        return dumps(value).decode()[1:-1]
    return dumps(value).decode()


def _url_value(value: Any) -> str:
    """What `{{ x }}` prints in a URL: percent-quoted, so a value stays one path segment."""
    if value is None:
        raise MissingValue("a value printed in the URL is null")
    return quote(str(value), safe="")


def _environment(finalize: Any) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        finalize=finalize,
        autoescape=False,
        keep_trailing_newline=False,
    )
    env.filters["tojson"] = tojson
    return env


BODY = _environment(_json_value)
URL = _environment(_url_value)
TEXT = _environment(lambda v: "" if v is None else str(v))
"""Headers."""


class TemplateProblem(ValueError):
    """A template that cannot be compiled or names what it is not given: (problem, fix)."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}. Fix: {fix}")
        self.problem, self.fix = problem, fix


def compile_template(env: SandboxedEnvironment, source: str, allowed: frozenset[str]) -> None:
    """Refuse a syntax error or a name the template is not given."""
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(
            f"template syntax error at line {exc.lineno}: {exc.message}",
            "correct the Jinja2 syntax (`{{ record.email }}`, `{% for r in records %}`)",
        ) from None
    unknown = sorted(meta.find_undeclared_variables(ast) - allowed)
    if unknown:
        raise TemplateProblem(
            f"unknown variable '{unknown[0]}'",
            f"use only {', '.join(sorted(allowed)) or 'literal text'}"
            + (" (a mapped field is `record.<field>`)" if "record" in allowed else "")
            + (" (each of `records` has .record, .key, .dest_id)" if "records" in allowed else ""),
        )


def record_fields(source: str) -> Iterator[str]:
    """The fields of `record` a template reads (`record.x`, `record['x']`, and `r.record.x`
    inside `{% for r in records %}`): each must be a field the sync maps."""
    ast = jinja2.Environment().parse(source)
    loop_names = {
        f.target.name
        for f in ast.find_all(nodes.For)
        if isinstance(f.iter, nodes.Name)
        and f.iter.name == "records"
        and isinstance(f.target, nodes.Name)
    }

    def is_record(node: nodes.Node) -> bool:
        if isinstance(node, nodes.Name):
            return node.name == "record"
        if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
            return node.attr == "record" and node.node.name in loop_names
        return False

    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr) and is_record(node.node):
            yield node.attr
        elif (
            isinstance(node, nodes.Getitem)
            and is_record(node.node)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            yield node.arg.value


def uses(source: str, name: str) -> bool:
    return name in meta.find_undeclared_variables(jinja2.Environment().parse(source))


class RenderProblem(ValueError):
    """A template that could not be rendered for these records (their rejection reason)."""


def render(env: SandboxedEnvironment, where: str, source: str, context: dict[str, Any]) -> str:
    try:
        return env.from_string(source).render(context)
    except jinja2.UndefinedError as exc:
        raise RenderProblem(
            f"{where}: {exc.message} (a field left out by `sync_nulls: false` is undefined: "
            "test it with `{% if record.x is defined %}`)"
        ) from None
    except MissingValue:
        raise RenderProblem(
            f"{where}: a value printed in the URL is null (e.g. a dest_id the destination never "
            "answered: set id_path on the `added` operation, or use key / match_value)"
        ) from None
    except (jinja2.TemplateError, TypeError, ValueError) as exc:
        raise RenderProblem(f"{where}: {type(exc).__name__}: {exc}") from None


def render_json(source: str, where: str, context: dict[str, Any]) -> Any:
    """The body as a JSON value; RenderProblem when the text is not JSON (never sent)."""
    text = render(BODY, where, source, context)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        start = max(0, exc.pos - 30)
        raise RenderProblem(
            f"{where} rendered invalid JSON ({exc.msg} at char {exc.pos}: "
            f"...{text[start : exc.pos + 30]}...); nothing was sent. Fix: print a string "
            'outside quotes with `| tojson`, inside quotes as "{{ record.x }}"'
        ) from None
