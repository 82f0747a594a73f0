"""File destination, in two forms.

`path`: each delivered record is appended to one local JSON Lines file (fsynced before it is
acknowledged), in the webhook's record shape plus its sync, run and batch ids. Works offline
with nothing else running, so the demo and first-time users can watch a sync without any
account.

`url`: a folder (local, `s3://` through s3fs, `gs://` through gcsfs) where each run of a sync
writes Parquet, CSV or JSON Lines part files under `<url>/<sync>/<run>/`, either the run's
changes (with an `_op` column) or a full snapshot, then a `_manifest.json` last. Types follow
the warehouse's (arrow_types), files appear whole (storage), and the run protocol (manifests,
runs cut short, snapshots) is in runs.
"""

from retl_dagster.destinations.impl.file.client import FileDestination
from retl_dagster.destinations.impl.file.config import FileConfig

__all__ = ["FileConfig", "FileDestination"]
