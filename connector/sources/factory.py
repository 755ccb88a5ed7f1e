"""Builds the configured sources; each CRM's module is imported only when it is used."""

from __future__ import annotations

from collections.abc import Iterable

from connector.config import Config, HubSpotSource, SalesforceSource
from connector.errors import ConfigError
from connector.sources.base import Source


def open_source(name: str, settings: SalesforceSource | HubSpotSource) -> Source:
    if isinstance(settings, SalesforceSource):
        from connector.sources.salesforce import Salesforce

        return Salesforce(name, settings)
    from connector.sources.hubspot import HubSpot

    return HubSpot(name, settings)


def open_sources(config: Config, names: Iterable[str] | None = None) -> dict[str, Source]:
    """The named sources (default all); a ca_bundle or key file that is missing is a config error first."""
    chosen = list(config.sources) if names is None else list(names)
    missing = [p for name in chosen for p in config.missing_files.get(name, ())]
    if missing:
        raise ConfigError(missing)
    return {name: open_source(name, config.sources[name]) for name in chosen}
