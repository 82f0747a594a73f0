"""Where things are: the project, its data directory, the warehouse, the dbt project.

Read from the environment each time (tests and `retl` change it between calls): `RETL_DATA_DIR`,
`RETL_WAREHOUSE`.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import quote

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STATE_SCHEMA = "_retl"
"""The warehouse schema retl keeps its state and logs in."""

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_models"
DBT_MANIFEST = DBT_PROJECT_DIR / "target" / "manifest.json"
# The venv's dbt, so nothing depends on the venv being activated (PATH).
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))


def data_dir() -> Path:
    """Where local files live (`RETL_DATA_DIR`, default `<project>/data`, git-ignored)."""
    return Path(os.environ.get("RETL_DATA_DIR") or PROJECT_ROOT / "data")


def warehouse_location() -> str:
    """`RETL_WAREHOUSE` (a DuckDB path or SQLAlchemy URL: `postgresql+psycopg://...`,
    `snowflake://...`), else `<data dir>/warehouse.duckdb`."""
    return os.environ.get("RETL_WAREHOUSE") or str(data_dir() / "warehouse.duckdb")


def is_url(location: str) -> bool:
    return "://" in location


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SECRET_QUERY_KEYS = frozenset(
    {"password", "token", "private_key", "private_key_file_pwd", "passcode", "oauth_token"}
)
"""Query parameters of a warehouse URL that hold secrets (Snowflake's connector takes these)."""


def expand_env_refs(location: str) -> str:
    """`${NAME}` in the warehouse URL replaced by the environment variable NAME (read when the
    warehouse is opened, so a password or token never has to be written into the URL)."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise KeyError(
                f"RETL_WAREHOUSE refers to ${{{name}}}, which is not set. Fix: export {name}, "
                "or write the value into the URL"
            )
        return quote(os.environ[name], safe="")

    return _ENV_REF.sub(value, location)


def safe_location(location: str | None = None) -> str:
    """The warehouse location fit for messages and logs: a URL's password and every secret
    query parameter (token, private key passphrase) hidden."""
    location = location or warehouse_location()
    if not is_url(location):
        return location
    import sqlalchemy as sa

    try:
        url = sa.engine.make_url(location)
        hidden = {k: "***" for k in url.query if k.lower() in SECRET_QUERY_KEYS}
        shown = url.update_query_dict(hidden).render_as_string(hide_password=True)
        return shown.replace("%2A%2A%2A", "***")
    except sa.exc.ArgumentError:
        return location.split("://", 1)[0] + "://***"


def strict_definitions() -> bool:
    """Whether one broken declaration fails the whole code location.

    Strict under `dagster definitions validate` (which sets DAGSTER_IS_DEFS_VALIDATION_CLI) and
    wherever `RETL_STRICT=1` (CI, the tests, `retl validate`), so a mistake never lands unseen.
    Elsewhere (`dagster dev`, a deployment) a broken sync is isolated: the others load, run,
    schedule and alert, and the broken one shows as invalid with its error.
    """
    return (
        os.environ.get("RETL_STRICT") == "1"
        or os.environ.get("DAGSTER_IS_DEFS_VALIDATION_CLI") == "1"
    )
