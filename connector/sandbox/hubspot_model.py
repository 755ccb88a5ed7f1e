"""The HubSpot stand-in's portal schema: object types, their properties and options, the association
types between them, the scopes each needs, and how HubSpot stores (or refuses) a written value."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from connector.sandbox.hubspot_index import SearchView
from connector.sandbox.hubspot_search import Record, SortedIndex, ms_to_iso, to_ms


# --- the property model --------------------------------------------------------------------------
@dataclass(frozen=True)
class PropertyDef:
    name: str
    label: str
    type: str = "string"  # string | number | datetime | enumeration
    field_type: str = "text"
    group: str = ""  # set per object type
    options: tuple[tuple[str, str], ...] = ()  # (value, label) in display order
    read_only: bool = False
    hubspot_defined: bool = True
    external_options: bool = False  # owners: options HubSpot fills from elsewhere, any id accepted

    @cached_property
    def option_values(self) -> frozenset[str]:
        return frozenset(value for value, _ in self.options)

    def to_json(self) -> dict[str, Any]:
        stamp = "2019-08-06T02:43:01.940Z"
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "description": "",
            "groupName": self.group,
            "options": [
                {"label": label, "value": value, "displayOrder": n, "hidden": False, "description": ""}
                for n, (value, label) in enumerate(self.options)
            ],
            "displayOrder": -1,
            "calculated": False,
            "externalOptions": self.external_options,
            "hasUniqueValue": self.name == "email",
            "hidden": False,
            "hubspotDefined": self.hubspot_defined,
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only,
            },
            "formField": not self.read_only,
            "createdAt": stamp,
            "updatedAt": stamp,
            "archived": False,
        }


def _enum(name: str, label: str, options: Sequence[tuple[str, str]], **kw: Any) -> PropertyDef:
    return PropertyDef(name, label, "enumeration", kw.pop("field_type", "select"), options=tuple(options), **kw)


def _date(name: str, label: str, *, read_only: bool = False) -> PropertyDef:
    return PropertyDef(name, label, "datetime", "date", read_only=read_only)


LEAD_STATUSES = (
    ("NEW", "New"), ("OPEN", "Open"), ("IN_PROGRESS", "In Progress"), ("OPEN_DEAL", "Open Deal"),
    ("UNQUALIFIED", "Unqualified"), ("ATTEMPTED_TO_CONTACT", "Attempted to Contact"),
    ("CONNECTED", "Connected"), ("BAD_TIMING", "Bad Timing"),
)  # fmt: skip
LIFECYCLE_STAGES = (
    ("subscriber", "Subscriber"), ("lead", "Lead"), ("marketingqualifiedlead", "Marketing Qualified Lead"),
    ("salesqualifiedlead", "Sales Qualified Lead"), ("opportunity", "Opportunity"), ("customer", "Customer"),
    ("evangelist", "Evangelist"), ("other", "Other"),
)  # fmt: skip
COMPANY_STAGES = (("target", "Target"), ("engaged", "Engaged"), ("customer", "Customer"), ("lost", "Lost"))
_EMAIL_DIRECTIONS = (("EMAIL", "Email"), ("INCOMING_EMAIL", "Incoming email"), ("FORWARDED_EMAIL", "Forwarded"))
_EMAIL_STATUSES = (("BOUNCED", "Bounced"), ("FAILED", "Failed"), ("SCHEDULED", "Scheduled"),
                   ("SENDING", "Sending"), ("SENT", "Sent"))  # fmt: skip
_MEETING_OUTCOMES = (("SCHEDULED", "Scheduled"), ("COMPLETED", "Completed"), ("RESCHEDULED", "Rescheduled"),
                     ("NO_SHOW", "No Show"), ("CANCELED", "Canceled"))  # fmt: skip
_CALL_STATUSES = tuple((v, v.replace("_", " ").capitalize()) for v in (
    "BUSY", "CALLING_CRM_USER", "CANCELED", "COMPLETED", "CONNECTING", "FAILED", "IN_PROGRESS", "NO_ANSWER",
    "QUEUED", "RINGING"))  # fmt: skip


@dataclass
class ObjectTable:
    name: str
    singular: str
    type_id: str
    created_prop: str
    modified_prop: str
    schema: dict[str, PropertyDef]
    defaults: tuple[str, ...]  # returned when a read names no properties
    records: dict[int, Record] = field(default_factory=dict)
    index: SortedIndex = field(default_factory=SortedIndex)
    links: dict[str, dict[int, list[int]]] = field(default_factory=dict)  # to-type -> id -> ids
    view: SearchView | None = None  # the search index, once a lag is set; None: search reads live
    merged: dict[int, int] = field(default_factory=dict)  # merged-away id -> the id that survived

    def kind(self, name: str) -> str | None:
        prop = self.schema.get(name)
        return prop.type if prop is not None else None

    def links_to(self, to_type: str) -> Mapping[int, list[int]] | None:
        return self.links.get(to_type)

    @property
    def always(self) -> tuple[str, ...]:
        return ("hs_object_id", self.created_prop, self.modified_prop)


_CONTACT_PROPERTIES = (
    PropertyDef("email", "Email"),
    PropertyDef("firstname", "First Name"),
    PropertyDef("lastname", "Last Name"),
    PropertyDef("country", "Country/Region"),
    _enum("hs_lead_status", "Lead Status", LEAD_STATUSES, field_type="radio"),
    _enum("lifecyclestage", "Lifecycle Stage", LIFECYCLE_STAGES, field_type="radio"),
    PropertyDef("hs_merged_object_ids", "Merged Contact IDs", "enumeration", "checkbox", read_only=True),
    # HubSpot calculates the score from its scoring rules: read-only through the API and the UI.
    PropertyDef("hubspotscore", "HubSpot Score", "number", "number", read_only=True),
    PropertyDef("annualrevenue", "Annual Revenue", "number", "number"),
    PropertyDef("jobtitle", "Job Title"),
)
_COMPANY_PROPERTIES = (
    PropertyDef("name", "Company name"),
    PropertyDef("domain", "Company Domain Name"),
    PropertyDef("country", "Country/Region"),
    _enum("lifecyclestage", "Lifecycle Stage", LIFECYCLE_STAGES, field_type="radio"),
    _enum("company_stage", "Company stage", COMPANY_STAGES, hubspot_defined=False),  # a custom property
)
_EMAIL_PROPERTIES = (
    _date("hs_timestamp", "Activity date"),
    _enum("hs_email_direction", "Email direction", _EMAIL_DIRECTIONS),
    _enum("hs_email_status", "Email send status", _EMAIL_STATUSES),
    PropertyDef("hs_email_subject", "Email subject"),
)
_MEETING_PROPERTIES = (
    _date("hs_timestamp", "Activity date"),
    _enum("hs_meeting_outcome", "Meeting outcome", _MEETING_OUTCOMES),
    PropertyDef("hs_meeting_title", "Meeting name"),
)
_CALL_PROPERTIES = (
    _date("hs_timestamp", "Activity date"),
    _enum("hs_call_status", "Call status", _CALL_STATUSES),
    PropertyDef("hs_call_title", "Call title"),
)


def _table(name: str, type_id: str, dates: tuple[str, str], props: Iterable[PropertyDef], group: str) -> ObjectTable:
    created, modified = dates
    fixed: tuple[PropertyDef, ...] = (
        PropertyDef("hs_object_id", "Record ID", "number", "number", read_only=True),
        _date(created, "Create Date", read_only=True),
        _date(modified, "Last Modified Date", read_only=True),
        _enum("hubspot_owner_id", "Owner", (), external_options=True),
    )
    if name in ("contacts", "companies"):  # HubSpot's calculated "Date entered <stage>" properties
        fixed += tuple(_date(f"hs_v2_date_entered_{v}", f"Date entered {label}", read_only=True)
                       for v, label in LIFECYCLE_STAGES)  # fmt: skip
    schema = {p.name: replace(p, group=group) for p in (*props, *fixed)}
    singular = "company" if name == "companies" else name.removesuffix("s")
    defaults = {"contacts": ("email", "firstname", "lastname"), "companies": ("name", "domain")}.get(name, ())
    return ObjectTable(name, singular, type_id, created, modified, schema, defaults)


def build_tables() -> dict[str, ObjectTable]:
    engagement_dates = ("hs_createdate", "hs_lastmodifieddate")
    tables = (
        _table("contacts", "0-1", ("createdate", "lastmodifieddate"), _CONTACT_PROPERTIES, "contactinformation"),
        _table("companies", "0-2", ("createdate", "hs_lastmodifieddate"), _COMPANY_PROPERTIES, "companyinformation"),
        _table("emails", "0-49", engagement_dates, _EMAIL_PROPERTIES, "email"),
        _table("meetings", "0-47", engagement_dates, _MEETING_PROPERTIES, "meeting"),
        _table("calls", "0-48", engagement_dates, _CALL_PROPERTIES, "call"),
    )
    by_name = {t.name: t for t in tables}
    for kind in ENGAGEMENTS:
        for owner in ("contacts", "companies"):
            by_name[kind].links[owner] = {}
            by_name[owner].links[kind] = {}
    return by_name


ENGAGEMENTS = ("emails", "meetings", "calls")
# (from, to) -> HubSpot-defined association type id and v3 label
ASSOCIATION_TYPES = {
    ("emails", "contacts"): (198, "email_to_contact"), ("contacts", "emails"): (197, "contact_to_email"),
    ("meetings", "contacts"): (200, "meeting_event_to_contact"),
    ("contacts", "meetings"): (199, "contact_to_meeting_event"),
    ("calls", "contacts"): (194, "call_to_contact"), ("contacts", "calls"): (193, "contact_to_call"),
    ("emails", "companies"): (186, "email_to_company"), ("companies", "emails"): (185, "company_to_email"),
    ("meetings", "companies"): (188, "meeting_event_to_company"),
    ("companies", "meetings"): (187, "company_to_meeting_event"),
    ("calls", "companies"): (182, "call_to_company"), ("companies", "calls"): (181, "company_to_call"),
}  # fmt: skip
SINGULAR = {"contacts": "contact", "companies": "company"}
# The read scopes HubSpot names for each object type (developers.hubspot.com/scopes; engagements other
# than emails go by the contacts scope, emails' content by sales-email-read).
READ_SCOPES = {
    "contacts": ["crm.objects.contacts.read"],
    "companies": ["crm.objects.companies.read"],
    "emails": ["crm.objects.contacts.read", "sales-email-read"],
    "meetings": ["crm.objects.contacts.read"],
    "calls": ["crm.objects.contacts.read"],
}


def write_scope(object_type: str) -> str:
    return f"crm.objects.{'companies' if object_type == 'companies' else 'contacts'}.write"


ALIASES = {
    alias: name
    for name, aliases in {
        "contacts": ("contact", "0-1"), "companies": ("company", "0-2"), "emails": ("email", "0-49"),
        "meetings": ("meeting", "0-47"), "calls": ("call", "0-48"),
    }.items()
    for alias in (name, *aliases)
}  # fmt: skip


def normalise(prop: PropertyDef, raw: Any) -> tuple[str | None, tuple[str, str] | None]:
    """HubSpot's stored form of a written value, or (message, error code) when it refuses it."""
    if raw is None or raw == "":
        return None, None  # clears the property
    text = raw if isinstance(raw, str) else str(raw).lower() if isinstance(raw, bool) else str(raw)
    if prop.type == "string":
        return text, None
    if prop.type == "enumeration":
        if text != text.strip():
            return None, (f'"{text}" includes leading or trailing whitespace.', "LEADING_TRAILING_WHITESPACE")
        if prop.external_options or text in prop.option_values:
            return text, None
        allowed = ", ".join(label for _, label in prop.options)
        return None, (f"{text} was not one of the allowed options: [{allowed}]", "INVALID_OPTION")
    try:
        if prop.type == "datetime":
            return ms_to_iso(to_ms(text)), None
        float(text)
        return text, None
    except ValueError:
        return None, (f"{text} was not a valid {'long' if prop.type == 'datetime' else 'number'}.", "INVALID_LONG")
