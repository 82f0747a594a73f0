from __future__ import annotations

import pydantic

from retl_dagster.destinations.http import HttpSettings


class SegmentConfig(HttpSettings):
    write_key: pydantic.SecretStr
    """Source write key (HTTP basic auth user, empty password)."""
    base_url: pydantic.AnyHttpUrl = pydantic.AnyHttpUrl("https://api.segment.io")
    """`https://events.eu1.segmentapis.com` for the EU workspace region."""
    batch_size: int = pydantic.Field(default=200, ge=1, le=2500)
    """Calls considered per request; requests are also split to stay under 500 KB."""
