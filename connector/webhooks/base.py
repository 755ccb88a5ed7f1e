"""What a webhook receiver turns a CRM's request into, and how it refuses one.

A webhook never changes the store by itself. A receiver only checks that the request is genuine and
names records (`Notice`); the intake then pulls those records from the CRM through the same engine as a
scheduled pull, so the rules and the conflict check stay in one place, and a lost or forged webhook
costs at most a poll interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

MAX_BODY = 1024 * 1024  # bytes; HubSpot sends at most 100 events a request, Salesforce 100 notifications


class NoticeKind(StrEnum):
    CHANGE = "change"  # a property of a synced record changed (the status field, a criteria field)
    CREATION = "creation"
    DELETION = "deletion"
    MERGE = "merge"


@dataclass(frozen=True)
class Notice:
    """These records of one synced object changed in the CRM (the object's name as in the config)."""

    object: str
    record_ids: tuple[str, ...]
    kind: NoticeKind = NoticeKind.CHANGE


@dataclass(frozen=True)
class WebhookRequest:
    method: str
    url: str  # as the CRM called it: scheme://host[:port]/path[?query]
    headers: Mapping[str, str]  # keys in lower case
    body: bytes
    received_at: datetime


@dataclass(frozen=True)
class WebhookReply:
    status: int
    content_type: str
    body: bytes


class RefusalReason(StrEnum):
    """The `reason` label of the refused-webhook counter in /metrics."""

    SIGNATURE = "signature"  # missing or wrong signature
    REPLAY = "replay"  # a timestamp outside the accepted window
    MALFORMED = "malformed"  # not the CRM's format
    ORGANIZATION = "organization"  # a Salesforce org other than ours
    METHOD = "method"
    TOO_LARGE = "too_large"
    NOT_CONFIGURED = "not_configured"  # webhooks are not set up for this source


class Refused(Exception):
    """The request is not accepted: answered with `status` and a short text, counted by `reason`.

    The message never echoes the request's body or its secrets; it says what was wrong.
    """

    def __init__(self, status: int, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class Receiver(Protocol):
    """One source's webhook endpoint (`/webhooks/<source>`)."""

    source: str

    def receive(self, request: WebhookRequest) -> tuple[Sequence[Notice], WebhookReply]:
        """Check the request and name the records it is about; raises `Refused`."""
        ...
