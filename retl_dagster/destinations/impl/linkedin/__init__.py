"""LinkedIn Marketing API destinations: Matched Audiences (DMP segment users) and the
Conversions API."""

from retl_dagster.destinations.impl.linkedin.audience import LinkedInAudienceDestination
from retl_dagster.destinations.impl.linkedin.config import (
    LinkedInAudienceConfig,
    LinkedInConversionsConfig,
)
from retl_dagster.destinations.impl.linkedin.conversions import LinkedInConversionsDestination

__all__ = [
    "LinkedInAudienceConfig",
    "LinkedInAudienceDestination",
    "LinkedInConversionsConfig",
    "LinkedInConversionsDestination",
]
