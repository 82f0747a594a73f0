from __future__ import annotations

from retl_dagster.destinations.base import DestinationError


class MixpanelAuthError(DestinationError):
    """Mixpanel refused the service account at /import (401/403): nothing can be delivered until
    it is fixed."""


class MixpanelEventsNeedServiceAccount(DestinationError):
    """Events go through /import, which needs a service account the config does not give."""
