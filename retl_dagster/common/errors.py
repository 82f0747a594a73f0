"""Declaration errors that carry their own fix, so every message can name the field and say what
to do (pydantic keeps the context of a custom error through validation)."""

from __future__ import annotations

from pydantic_core import PydanticCustomError

# pydantic's own "value_error" type: Dagster rebuilds validation errors (to add YAML positions)
# and accepts only pydantic's error types; the context (fix, field) rides along.
INVALID = "value_error"


def invalid(problem: str, fix: str, field: str | None = None) -> PydanticCustomError:
    """Raise from a pydantic validator: `problem` is the message; `fix` what to do; `field` the
    key it is about, relative to the model being validated (a model-level check has no location
    of its own)."""
    ctx = {"error": problem, "fix": fix}
    if field:
        ctx["field"] = field
    return PydanticCustomError(INVALID, "Value error, {error}", ctx)
