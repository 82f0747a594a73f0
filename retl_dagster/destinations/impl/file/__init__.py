"""Local file destination: appends each delivered record to a JSON Lines file.

Works offline with nothing else running, so the demo and first-time users can watch a sync
without any SaaS account. Each line is one record in the webhook's record shape plus its
sync, run and batch ids.
"""

from retl_dagster.destinations.impl.file.client import FileDestination
from retl_dagster.destinations.impl.file.config import FileConfig

__all__ = ["FileConfig", "FileDestination"]
