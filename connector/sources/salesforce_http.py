"""The HTTP layer under simple-salesforce: trust, timeouts, and the API usage every answer reports."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from connector.sources.base import ApiUsage
from connector.sources.errors import SourcePaused

if TYPE_CHECKING:
    from requests.sessions import _Settings

_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")
RESUME_AFTER = 3600.0  # seconds before a paused source tries one call to see whether the day turned over


class ApiMeter:
    """Reads `Sforce-Limit-Info: api-usage=N/M` from every answer; refuses calls past the budget.

    Once a pause was raised, the next call goes through: whoever calls again after the pause has
    decided it is time to look, and that call's answer tells whether usage fell back under budget.
    """

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.used: int | None = None
        self.limit: int | None = None
        self.calls = 0
        self._probe = False
        self._lock = threading.Lock()

    def observe(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        match = _LIMIT_INFO.search(response.headers.get("Sforce-Limit-Info", ""))
        if match is not None:
            with self._lock:
                self.used, self.limit = int(match.group(1)), int(match.group(2))

    def count(self) -> None:
        with self._lock:
            self.calls += 1

    def check(self) -> None:
        with self._lock:
            used, limit = self.used, self.limit
            if used is None or not limit or used < self.budget * limit:
                return
            if self._probe:
                self._probe = False
                return
            self._probe = True
        raise SourcePaused(
            f"API budget spent: {used} of the org's {limit} daily API calls used, over the source's "
            f"api_budget of {self.budget:.0%}; resumes by itself once usage is back under it",
            resume_after=RESUME_AFTER,
            code="API_BUDGET",
        )

    def paused(self) -> None:
        """The CRM itself refused (REQUEST_LIMIT_EXCEEDED): let the next call look again."""
        with self._lock:
            self._probe = True

    def usage(self) -> ApiUsage:
        with self._lock:
            return ApiUsage(self.used, self.limit, self.calls)


class CrmSession(requests.Session):
    """A requests Session that trusts the configured CA bundle, whatever the environment says.

    requests lets REQUESTS_CA_BUNDLE override a Session's `verify`; switching `trust_env` off would
    also drop the proxy settings users rely on. So the environment is merged as usual, and only
    `verify` is put back to the configured bundle afterwards.
    """

    def __init__(self, *, ca_bundle: Path | None, timeout: float, meter: ApiMeter) -> None:
        super().__init__()
        self.ca_bundle = str(ca_bundle) if ca_bundle is not None else None
        self.timeout = timeout
        self.meter = meter
        self.hooks["response"].append(meter.observe)

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> _Settings:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self.ca_bundle is not None:
            settings["verify"] = self.ca_bundle
        return settings

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None and len(args) < 7:  # after method and url, `timeout` is 7th
            kwargs["timeout"] = self.timeout
        self.meter.count()
        return super().request(method, url, *args, **kwargs)
