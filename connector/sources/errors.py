"""The one place where CRM failures are classified by what should happen next.

Every exception the client libraries raise (simple-salesforce, hubspot-api-client, requests, urllib3)
and every per-record error a CRM returns is translated here into a `CrmError` with an `Action`. The
retry policies, the outbox drain and the daemon act on the action, never on the raw exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    RETRY = "retry"  # transient: try again with backoff
    RATE_LIMIT = "rate_limit"  # wait for the CRM's rate-limit window, then try again
    REAUTH = "reauth"  # the session expired: log in again once, then retry
    RECORD = "record"  # this record cannot be written as asked: dead-letter it with the CRM's words
    PAUSE = "pause"  # the daily allocation or our budget is spent: pause the source, resume later
    ADMIN = "admin"  # permissions, a missing field, bad credentials: stop and tell the admin


class CrmError(Exception):
    """A classified CRM failure, carrying the CRM's own words."""

    def __init__(
        self,
        action: Action,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        record_id: str | None = None,
    ) -> None:
        self.action = action
        self.message = message
        self.code = code
        self.status = status
        self.retry_after = retry_after
        self.record_id = record_id
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = [p for p in (self.code, self.message) if p]
        text = ": ".join(parts) if parts else "unknown error"
        return f"{text} (HTTP {self.status})" if self.status else text


class SourcePaused(CrmError):
    """The source must wait: REQUEST_LIMIT_EXCEEDED, the daily limit, or our own api_budget."""

    def __init__(self, message: str, *, resume_after: float, code: str | None = None) -> None:
        super().__init__(Action.PAUSE, message, code=code, retry_after=resume_after)
        self.resume_after = resume_after


# Salesforce errorCode / statusCode -> action. Codes not listed fall back on the HTTP status.
SALESFORCE_CODES: Mapping[str, Action] = {
    "INVALID_SESSION_ID": Action.REAUTH,
    "REQUEST_LIMIT_EXCEEDED": Action.PAUSE,
    "UNABLE_TO_LOCK_ROW": Action.RETRY,
    "SERVER_UNAVAILABLE": Action.RETRY,
    "REQUEST_RUNNING_TOO_LONG": Action.RETRY,
    "QUERY_TIMEOUT": Action.RETRY,
    "ALL_OR_NONE_OPERATION_ROLLED_BACK": Action.RETRY,
    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": Action.RECORD,
    "CANNOT_UPDATE_CONVERTED_LEAD": Action.RECORD,
    "ENTITY_IS_DELETED": Action.RECORD,
    "INVALID_CROSS_REFERENCE_KEY": Action.RECORD,
    "MALFORMED_ID": Action.RECORD,
    "DUPLICATE_VALUE": Action.RECORD,
    "STRING_TOO_LONG": Action.RECORD,
    "FIELD_INTEGRITY_EXCEPTION": Action.RECORD,
    "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY": Action.RECORD,  # a trigger or flow refused this record
    "INVALID_TYPE_FOR_OPERATION": Action.ADMIN,
    "FIELD_CUSTOM_VALIDATION_EXCEPTION": Action.RECORD,
    "REQUIRED_FIELD_MISSING": Action.RECORD,
    "INVALID_FIELD_FOR_INSERT_UPDATE": Action.ADMIN,
    "INSUFFICIENT_ACCESS_OR_READONLY": Action.ADMIN,
    "INSUFFICIENT_ACCESS": Action.ADMIN,
    "INVALID_FIELD": Action.ADMIN,
    "INVALID_TYPE": Action.ADMIN,
    "MALFORMED_QUERY": Action.ADMIN,
    "API_DISABLED_FOR_ORG": Action.ADMIN,
    "NOT_FOUND": Action.ADMIN,
    "invalid_client": Action.ADMIN,
    "invalid_grant": Action.ADMIN,
    "invalid_client_id": Action.ADMIN,  # what Salesforce's token endpoint says for an unknown client id
    "inactive_user": Action.ADMIN,
    "inactive_org": Action.ADMIN,
    "invalid_request": Action.ADMIN,
    "unsupported_grant_type": Action.ADMIN,
}

# HubSpot error category -> action.
HUBSPOT_CATEGORIES: Mapping[str, Action] = {
    "RATE_LIMITS": Action.RATE_LIMIT,
    "INVALID_AUTHENTICATION": Action.ADMIN,
    "EXPIRED_AUTHENTICATION": Action.REAUTH,
    "MISSING_SCOPES": Action.ADMIN,
    "OBJECT_NOT_FOUND": Action.RECORD,
    "VALIDATION_ERROR": Action.RECORD,
    "INVALID_PARAMS": Action.RECORD,
    "CONFLICT": Action.RETRY,
    "INTERNAL_ERROR": Action.RETRY,
}


# HubSpot's per-property refusals in a 400 "Property values were not valid: [...]" that are the
# configuration's fault when they name the status property: it does not exist, or it is read-only.
HUBSPOT_CONFIG_REFUSALS = frozenset({"PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE"})
_INVALID_VALUES = "Property values were not valid: "
_NOT_AN_OPTION = "was not one of the allowed options"


def hubspot_invalid_properties(message: str) -> list[dict[str, Any]]:
    """The entries of HubSpot's "Property values were not valid: [...]" message; [] for any other."""
    at = message.find(_INVALID_VALUES)
    if at < 0:
        return []
    try:
        entries = json.loads(message[at + len(_INVALID_VALUES) :])
    except ValueError:
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def hubspot_write_error(error: CrmError, status_field: str) -> CrmError:
    """A refused batch update, as the admin's problem when it is the configuration's: the status
    property unknown or read-only, or a value its options lack (refused whatever the record). Other
    refusals stay as they were (a record's own problem, or a transient one)."""
    if error.action is not Action.RECORD:
        return error
    for entry in hubspot_invalid_properties(error.message):
        if entry.get("name") != status_field:
            continue
        code, words = str(entry.get("error") or ""), str(entry.get("message") or "")
        if code in HUBSPOT_CONFIG_REFUSALS or (code == "INVALID_OPTION" and _NOT_AN_OPTION in words):
            message = f"HubSpot refuses writes to {status_field}: {words}"
            return CrmError(Action.ADMIN, message, code=code, status=error.status)
    return error


def action_for_status(status: int | None) -> Action:
    if status is None:
        return Action.RETRY
    if status == 429:
        return Action.RATE_LIMIT
    if status == 401:
        return Action.REAUTH
    if status == 403:
        return Action.ADMIN
    if status >= 500 or status in (408, 409, 423):
        return Action.RETRY
    if status >= 400:
        return Action.RECORD
    return Action.RETRY


def _seconds(value: Any) -> float | None:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def salesforce_error(
    code: str | None, message: str, status: int | None = None, record_id: str | None = None
) -> CrmError:
    """One Salesforce error (a response body entry or a per-record result's error)."""
    # A per-record error (no HTTP status of its own) that we do not know is about that record's data:
    # retrying it for hours only delays the dead letter the admin needs to see.
    fallback = Action.RECORD if status is None and record_id is not None else action_for_status(status)
    action = SALESFORCE_CODES.get(code or "", fallback)
    if action is Action.PAUSE and "TotalRequests" not in message:
        # The same code also reports a concurrency limit ("ConcurrentPerOrgLongTxn Limit exceeded."),
        # which clears in seconds: wait for it, rather than pausing the source for an hour.
        return CrmError(Action.RATE_LIMIT, message, code=code, status=status, retry_after=30.0)
    if action is Action.PAUSE:
        return SourcePaused(message, resume_after=3600.0, code=code)
    return CrmError(action, message, code=code, status=status, record_id=record_id)


def _salesforce_body(content: Any) -> tuple[str | None, str]:
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        return first.get("errorCode") or first.get("statusCode"), str(first.get("message", ""))
    if isinstance(content, dict):
        code = content.get("errorCode") or content.get("error")
        return code, str(content.get("message") or content.get("error_description") or "")
    return None, str(content)[:500]


def from_salesforce(exc: BaseException) -> CrmError:
    """Translate what simple-salesforce or requests raised."""
    import requests  # here, not at the top: the store-only commands import this module, not the clients
    from simple_salesforce.exceptions import SalesforceError

    if isinstance(exc, CrmError):
        return exc
    if isinstance(exc, SalesforceError):
        code, message = _salesforce_body(exc.content)
        return salesforce_error(code, message, exc.status)
    if isinstance(exc, requests.exceptions.SSLError):
        return CrmError(Action.ADMIN, f"TLS verification failed: {exc}; check the source's ca_bundle")
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return CrmError(Action.RETRY, f"network error: {type(exc).__name__}: {exc}")
    raise exc


def from_http_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> CrmError:
    """A Salesforce response seen as raw HTTP (the token endpoint, composite calls made directly)."""
    code, message = _salesforce_body(body)
    error = salesforce_error(code, message, status)
    if headers and error.action is Action.RATE_LIMIT:
        error.retry_after = _seconds(headers.get("Retry-After"))
    return error


def hubspot_error(status: int | None, body: Any, headers: Mapping[str, str] | None = None) -> CrmError:
    """One HubSpot error body: `{status, message, correlationId, category}`."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            body = {"message": body.decode(errors="replace") if isinstance(body, bytes) else body}
    body = body if isinstance(body, dict) else {}
    category = body.get("category") or body.get("errorType")
    message = str(body.get("message") or "")
    if status == 429 or category in ("RATE_LIMIT", "RATE_LIMITS"):
        policy = body.get("policyName")
        headers = headers or {}
        wait = _seconds(headers.get("Retry-After"))
        if wait is None and policy == "DAILY":
            return SourcePaused(message or "HubSpot daily limit reached", resume_after=3600.0, code=policy)
        if wait is None:
            wait = 1.0 if policy == "SECONDLY" else _seconds(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds"))
            wait = wait / 1000 if wait and wait > 50 else (wait or 10.0)
        return CrmError(Action.RATE_LIMIT, message, code=policy or category, status=status, retry_after=wait)
    action = HUBSPOT_CATEGORIES.get(category or "", action_for_status(status))
    if status is not None and status >= 500:
        action = Action.RETRY
    scopes = _hubspot_scopes(body)
    if scopes:
        message = f"{message} (required scopes: {', '.join(scopes)})"
    return CrmError(action, message, code=category, status=status)


def _hubspot_scopes(body: Mapping[str, Any]) -> list[str]:
    """The scopes a MISSING_SCOPES answer names, in `errors[].context` (granular or not) or `context`."""
    contexts = [body.get("context")] + [e.get("context") for e in body.get("errors") or [] if isinstance(e, dict)]
    found: list[str] = []
    for context in contexts:
        if isinstance(context, dict):
            for key in ("requiredGranularScopes", "requiredScopes"):
                found += [str(s) for s in context.get(key) or [] if str(s) not in found]
    return found


def from_hubspot(exc: BaseException) -> CrmError:
    """Translate what hubspot-api-client or urllib3 raised."""
    import urllib3.exceptions

    if isinstance(exc, CrmError):
        return exc
    status = getattr(exc, "status", None)
    if status is not None and hasattr(exc, "body"):  # every generated ApiException class has these
        headers = getattr(exc, "headers", None) or {}
        return hubspot_error(int(status), exc.body, dict(headers))
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return CrmError(Action.RETRY, f"network error after retries: {exc.reason}")
    if isinstance(exc, urllib3.exceptions.SSLError):
        return CrmError(Action.ADMIN, f"TLS verification failed: {exc}; check the source's ca_bundle")
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return CrmError(Action.RETRY, f"network error: {type(exc).__name__}: {exc}")
    raise exc
