"""One webhook receiver per source that has `webhooks:` in the config."""

from __future__ import annotations

from connector.config import Config
from connector.webhooks.base import Receiver


def build_receivers(config: Config) -> dict[str, Receiver]:
    return {}
