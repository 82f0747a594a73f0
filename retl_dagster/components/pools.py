"""Dagster concurrency pools: what runs side by side.

- `retl_warehouse`: steps that write a single-writer warehouse (DuckDB: one writing process
  per file), one at a time. A server warehouse (PostgreSQL, Snowflake) has no such pool: its
  steps run side by side.
- `retl_dest_<destination>`: the load steps delivering to one destination, as many at once as
  its limit (the type's `pool_limit`, or the destination's own `pool_limit:` in YAML). A load
  holds the warehouse only to commit (see `engine.delivery.load`), so loads to different
  destinations overlap on DuckDB too.

Dagster keeps pool limits in the instance, not in code, so the declared limits are written
there: by `retl sync` before it starts a run, and in a deployment by the `retl_pool_limits`
sensor. The YAML is the source of truth: a limit changed in the UI is set back to the
declared one at the sensor's next tick.
"""

import json

import dagster as dg
import pydantic
import sqlalchemy.exc

from retl_dagster.common.settings import is_url, warehouse_location
from retl_dagster.destinations.base import DestinationConfig, DestinationConfigError
from retl_dagster.destinations.registry import destination_class

WAREHOUSE_POOL = "retl_warehouse"
DESTINATION_POOL_PREFIX = "retl_dest_"
POOL_SENSOR = "retl_pool_limits"


def warehouse_pool() -> str | None:
    """The pool of warehouse-writing steps: DuckDB's single writer; None for a server
    warehouse (a `RETL_WAREHOUSE` URL)."""
    return None if is_url(warehouse_location()) else WAREHOUSE_POOL


def destination_pool(destination: str) -> str:
    return f"{DESTINATION_POOL_PREFIX}{destination}"


def pool_limit(name: str, type_: str, options: dict[str, object]) -> int:
    """Destination `name`'s pool limit: its own `pool_limit:` or its type's default.
    DestinationConfigError when the declared one is not a number of syncs (a limit of 0 would
    hold every load of the destination forever)."""
    cls = destination_class(name, type_)
    if options.get("pool_limit") is None:
        return cls.pool_limit
    try:  # the field's own bounds, as every destination's config declares it
        own = DestinationConfig.model_validate({"pool_limit": options["pool_limit"]}).pool_limit
    except pydantic.ValidationError:
        own = None
    if own is not None:
        return own
    raise DestinationConfigError(
        name,
        "pool_limit",
        f"{options['pool_limit']!r} is not a number of syncs from 1 to 64",
        "set how many syncs may deliver to it at once, e.g. pool_limit: 2",
    )


def declared_limits(destinations: dict[str, tuple[str, dict[str, object]]]) -> dict[str, int]:
    """Every retl pool and its limit, from the declared destinations (name -> type, options)."""
    limits = {destination_pool(n): pool_limit(n, t, o) for n, (t, o) in destinations.items()}
    pool = warehouse_pool()
    if pool:
        limits[pool] = 1
    return limits


def limits_of(resources: dict[str, object]) -> dict[str, int]:
    """The declared limits of the destinations among a code location's resources."""
    # Imported here: destination_resources imports this module for its sensor.
    from retl_dagster.components.destination_resources import DestinationResource

    return declared_limits(
        {
            r.name: (r.destination_type, json.loads(r.options_json))
            for r in resources.values()
            if isinstance(r, DestinationResource)
        }
    )


def apply_pool_limits(instance: dg.DagsterInstance, limits: dict[str, int]) -> dict[str, int]:
    """Set each pool's limit in the instance where it differs; returns the ones it changed."""
    storage = instance.event_log_storage
    current = storage.get_concurrency_infos(list(limits))
    changed = {key: n for key, n in limits.items() if current[key].slot_count != n}
    for key, limit in changed.items():
        try:
            storage.set_concurrency_slots(key, limit)
        except sqlalchemy.exc.IntegrityError:
            # Another run's process created the pool at the same moment: it exists now, so
            # setting it again updates it.
            storage.set_concurrency_slots(key, limit)
    return changed


def pool_limits_sensor(limits: dict[str, int], name: str = POOL_SENSOR) -> dg.SensorDefinition:
    """Keeps the instance's limits of retl's pools at what the YAML declares."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sets the limit of each retl pool (retl_dest_<destination>, retl_warehouse) "
        "to what the destinations' YAML declares (pool_limit), so syncs to different "
        "destinations deliver side by side and each destination takes as many as it allows.",
    )
    def retl_pool_limits(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        changed = apply_pool_limits(context.instance, limits)
        if changed:
            said = ", ".join(f"{k}={v}" for k, v in sorted(changed.items()))
            context.log.info(f"pool limits set: {said}")
            return dg.SkipReason(f"pool limits set: {said}")
        return dg.SkipReason("pool limits are as declared")

    return retl_pool_limits
