"""One webhook receiver per source that has `webhooks:` in the config."""

from __future__ import annotations

from connector.config import Config, HubSpotSource, SalesforceSource
from connector.webhooks.base import Receiver


def build_receivers(config: Config) -> dict[str, Receiver]:
    receivers: dict[str, Receiver] = {}
    for name, source in config.model.sources.items():
        if source.webhooks is None:
            continue
        if isinstance(source, SalesforceSource):
            from connector.webhooks.salesforce import SalesforceReceiver

            receivers[name] = SalesforceReceiver.from_config(name, source)
        elif isinstance(source, HubSpotSource):
            from connector.webhooks.hubspot import HubSpotReceiver

            # The fields criteria triggers read are added to each object's at load: their changes matter too.
            extra = {
                obj: frozenset(synced.read_fields)
                for (src, obj), synced in config.objects.items()
                if src == name
            }
            receivers[name] = HubSpotReceiver.from_config(name, source, extra)
    return receivers
