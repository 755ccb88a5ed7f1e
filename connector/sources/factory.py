"""Builds the configured sources; each CRM's module is imported only when it is used."""

from __future__ import annotations

from connector.config import Config, HubSpotSource, SalesforceSource
from connector.sources.base import Source


def open_source(name: str, settings: SalesforceSource | HubSpotSource) -> Source:
    if isinstance(settings, SalesforceSource):
        from connector.sources.salesforce import Salesforce

        return Salesforce(name, settings)
    from connector.sources.hubspot import HubSpot

    return HubSpot(name, settings)


def open_sources(config: Config) -> dict[str, Source]:
    return {name: open_source(name, settings) for name, settings in config.sources.items()}
