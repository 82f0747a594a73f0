"""Destination types by name, each imported on first use: `import retl_dagster.destinations`
loads no API client (nor its dependencies) until a sync asks for its type.

Besides the built-in types, an installed package may add its own through the Python entry point
group `retl_dagster.destinations` (`<type> = "<module>:<Destination subclass>"`): their names are
read from the packages' metadata once, and each is imported on first use like a built-in. A
plugin cannot take a built-in's name."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import typing
from typing import Any

import pydantic
from pydantic_core import ErrorDetails

from retl_dagster.destinations.base import Destination, DestinationConfigError

_IMPL = "retl_dagster.destinations.impl"

DESTINATIONS: dict[str, str] = {
    "webhook": f"{_IMPL}.webhook.client:WebhookDestination",
    "http": f"{_IMPL}.http.client:HttpDestination",
    "file": f"{_IMPL}.file.client:FileDestination",
    "postgres": f"{_IMPL}.postgres.client:PostgresDestination",
    "hubspot": f"{_IMPL}.hubspot.client:HubSpotDestination",
    "segment": f"{_IMPL}.segment.client:SegmentDestination",
    "mixpanel": f"{_IMPL}.mixpanel.client:MixpanelDestination",
    "braze": f"{_IMPL}.braze.client:BrazeDestination",
    "salesforce": f"{_IMPL}.salesforce.client:SalesforceDestination",
    "google_sheets": f"{_IMPL}.google_sheets.client:GoogleSheetsDestination",
    "facebook_conversions": f"{_IMPL}.facebook.client:FacebookConversionsDestination",
    "google_ads": f"{_IMPL}.google_ads.client:GoogleAdsDestination",
    "klaviyo": f"{_IMPL}.klaviyo.client:KlaviyoDestination",
    "zendesk": f"{_IMPL}.zendesk.client:ZendeskDestination",
    "customerio": f"{_IMPL}.customerio.client:CustomerIODestination",
    "iterable": f"{_IMPL}.iterable.client:IterableDestination",
    "intercom": f"{_IMPL}.intercom.client:IntercomDestination",
    "sfmc": f"{_IMPL}.sfmc.client:SfmcDestination",
    "facebook_audience": f"{_IMPL}.facebook.audience:FacebookAudienceDestination",
    "linkedin_audience": f"{_IMPL}.linkedin.audience:LinkedInAudienceDestination",
    "linkedin_conversions": f"{_IMPL}.linkedin.conversions:LinkedInConversionsDestination",
    "tiktok_events": f"{_IMPL}.tiktok.events:TikTokEventsDestination",
    "tiktok_audience": f"{_IMPL}.tiktok.audience:TikTokAudienceDestination",
    "snowflake": f"{_IMPL}.snowflake.client:SnowflakeDestination",
}
"""Type name -> `module:ClassName` of its Destination."""

_loaded: dict[str, type[Destination[Any]]] = {}

ENTRY_POINT_GROUP = "retl_dagster.destinations"


@functools.cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Plugin type name -> its entry point (metadata only: nothing is imported)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _plugin_label(ep: importlib.metadata.EntryPoint) -> str:
    package = ep.dist.name if ep.dist is not None else "an installed package"
    return f"package '{package}' (entry point {ENTRY_POINT_GROUP}: {ep.name} = {ep.value})"


def plugins() -> dict[str, str]:
    """Plugin type name -> `module:Class`, built-in names left out (they are refused)."""
    return {n: ep.value for n, ep in _entry_points().items() if n not in DESTINATIONS}


def destination_types() -> list[str]:
    """Every type name a destination may declare, sorted: built-ins and installed plugins."""
    return sorted({*DESTINATIONS, *plugins()})


def _claimed_builtin(name: str, type_: str) -> DestinationConfigError | None:
    ep = _entry_points().get(type_)
    if ep is None or type_ not in DESTINATIONS:
        return None
    return DestinationConfigError(
        name,
        "type",
        f"{_plugin_label(ep)} claims '{type_}', the name of the built-in destination "
        f"{DESTINATIONS[type_]}; a plugin cannot replace a built-in",
        f"give the plugin's destination another type name in its pyproject.toml "
        f'[project.entry-points."{ENTRY_POINT_GROUP}"], or uninstall it',
    )


def _load(type_: str) -> type[Destination[Any]]:
    cls = _loaded.get(type_)
    if cls is None:
        target = DESTINATIONS.get(type_) or plugins()[type_]
        where = target if type_ in DESTINATIONS else _plugin_label(_entry_points()[type_])
        module, _, attr = target.partition(":")
        try:
            loaded = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            if type_ in DESTINATIONS:
                raise
            raise TypeError(f"destination type '{type_}' of {where} cannot load: {exc}") from exc
        if not (isinstance(loaded, type) and issubclass(loaded, Destination)):
            raise TypeError(f"{where}: {target} is not a Destination subclass")
        if getattr(loaded, "type", None) != type_:
            raise TypeError(
                f"{where}: {target} has type '{getattr(loaded, 'type', None)}', not '{type_}'"
            )
        cls = _loaded[type_] = loaded
    return cls


def destination_class(name: str, type_: str) -> type[Destination[Any]]:
    """The client class of type `type_` (imported now if it is not yet); an unknown type is
    destination `name`'s declaration error."""
    claimed = _claimed_builtin(name, type_)
    if claimed is not None:
        raise claimed
    if type_ not in DESTINATIONS and type_ not in plugins():
        raise DestinationConfigError(
            name, "type", f"unknown type '{type_}'", f"use one of {destination_types()}"
        )
    return _load(type_)


def _secret_paths(model: type[pydantic.BaseModel], prefix: str = "") -> set[str]:
    """Fields typed SecretStr, nested models' as `outer.inner`."""
    out: set[str] = set()
    for name, f in model.model_fields.items():
        stack: list[Any] = [f.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, pydantic.BaseModel):
                out |= _secret_paths(t, f"{prefix}{name}.")
            elif t is pydantic.SecretStr:
                out.add(f"{prefix}{name}")
            else:
                stack += typing.get_args(t)
    return out


def secret_fields(type_: str) -> set[str]:
    """Config fields that hold secrets (typed SecretStr): they must come from the environment.
    A nested model's are dotted (`auth.token`)."""
    if type_ not in destination_types():
        return set()
    return _secret_paths(_load(type_).config_class)


def verbatim_fields(type_: str) -> set[str]:
    """Config fields Dagster's templating must leave as written (the type's own templates)."""
    if type_ not in destination_types():
        return set()
    return set(_load(type_).config_class.verbatim_fields)


def _first_error(exc: pydantic.ValidationError, names: list[str]) -> ErrorDetails:
    """The error of the field declared first (then keys the config does not know, then the
    config's own rules): pydantic checks inherited fields such as `batch_size` first, but a
    config's own declaration order is the one its messages follow."""
    order = {n: i for i, n in enumerate(names)}

    def rank(err: ErrorDetails) -> int:
        loc = err["loc"]
        return order.get(str(loc[0]), len(order)) if loc else len(order)

    return min(exc.errors(), key=rank)  # min keeps pydantic's order among equals


def build_destination(name: str, type_: str, options: dict[str, Any]) -> Destination[Any]:
    """Validate `options` against the type's config and return a ready client."""
    cls = destination_class(name, type_)
    try:
        config = cls.config_class.model_validate(options)
    except pydantic.ValidationError as exc:
        names = cls.config_class.field_names()
        err = _first_error(exc, names)
        field = ".".join(str(p) for p in err["loc"]) or "(config)"
        fields = ", ".join(names)
        raise DestinationConfigError(
            name, field, err["msg"], f"give a valid value; '{type_}' accepts: {fields}"
        ) from None
    return cls(name, config)
