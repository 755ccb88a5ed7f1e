"""The sandbox org's schema: Ids as Salesforce makes them, field and sObject definitions, standard objects.

Besides Lead, Contact and Account the org holds what the connector reads around them: Tasks and
Events with their Shared Activities relations (TaskRelation, EventRelation), Opportunities (whose
activity rolls up to their Account), the field-history objects, Users and LeadStatus.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connector.sandbox import soql

# --- Ids ------------------------------------------------------------------------------------------
B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase  # ASCII order: sorts as numbers
SUFFIX = string.ascii_uppercase + "012345"
UPPER_BITS = str.maketrans({c: "1" if c.isupper() else "0" for c in B62})
ID_RE = re.compile(r"[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?$")


PAIRS = [a + b for a in B62 for b in B62]  # the last two digits of an Id's counter


def caps(chunk: str) -> int:
    """Bit i set when chunk[i] is upper case: the basis of an 18-character Id's suffix."""
    return int(chunk.translate(UPPER_BITS)[::-1] or "0", 2)


PAIR_CAPS = [caps(pair) for pair in PAIRS]


def checksum(id15: str) -> str:
    """The 3-character suffix that makes an 18-character Id unique without regard to case."""
    return "".join(SUFFIX[caps(id15[i : i + 5])] for i in (0, 5, 10))


def normalize_id(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character Id; None when it is not a well-formed Id."""
    if not ID_RE.match(value):
        return None
    suffix = checksum(value[:15])
    if len(value) == 18 and value[15:] != suffix:
        return None
    return value[:15] + suffix


# --- schema ---------------------------------------------------------------------------------------
KINDS = {
    "id": soql.ID, "reference": soql.ID, "string": soql.TEXT, "email": soql.TEXT, "picklist": soql.TEXT,
    "datetime": soql.DATETIME, "date": soql.DATE, "boolean": soql.BOOLEAN, "int": soql.NUMBER,
    "double": soql.NUMBER, "currency": soql.NUMBER, "percent": soql.NUMBER,
}
SOAP_TYPES = {"id": "tns:ID", "reference": "tns:ID", "datetime": "xsd:dateTime", "date": "xsd:date",
               "boolean": "xsd:boolean", "int": "xsd:int", "double": "xsd:double", "currency": "xsd:double",
               "percent": "xsd:double"}
NUMERIC = frozenset({"int", "double", "currency", "percent"})


@dataclass
class FieldDef:
    name: str
    type: str  # describe type: id, string, email, picklist, reference, datetime, date, boolean, int, double, ...
    updateable: bool = True
    nillable: bool = True
    picklist: list[str] | None = None
    default: str | None = None
    restricted: bool = True
    reference_to: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        base = self.name.removesuffix("__c")
        if base.endswith("Id") and len(base) > 2:
            base = base[:-2] + " ID"
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base).replace("_", " ")

    def describe(self) -> dict[str, Any]:
        picklist = self.picklist or []
        return {
            "name": self.name, "label": self.label, "type": self.type,
            "soapType": SOAP_TYPES.get(self.type, "xsd:string"), "length": 0 if self.type in SOAP_TYPES else 255,
            "custom": self.name.endswith("__c"), "updateable": self.updateable, "createable": self.updateable,
            "nillable": self.nillable, "filterable": True, "sortable": True, "idLookup": self.type == "id",
            "restrictedPicklist": self.picklist is not None and self.restricted,
            "dependentPicklist": False, "defaultValue": None, "referenceTo": list(self.reference_to),
            "picklistValues": [
                {"active": True, "defaultValue": v == self.default, "label": v, "value": v, "validFor": None}
                for v in picklist
            ],
        }


@dataclass
class SObject:
    name: str
    key_prefix: str
    fields: dict[str, FieldDef]
    updateable: bool = True
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (SystemModstamp, Id), kept sorted: keyset pages over 200k records start with a bisect, not a scan
    by_modstamp: list[tuple[datetime, str]] = field(default_factory=list)
    lower: dict[str, str] = field(default_factory=dict)  # Salesforce names are case-insensitive

    def __post_init__(self) -> None:
        self.lower = {name.lower(): name for name in self.fields}

    def add_field(self, definition: FieldDef) -> None:
        self.fields[definition.name] = definition
        self.lower[definition.name.lower()] = definition.name
        for record in self.records.values():
            record.setdefault(definition.name, None)

    def template(self) -> dict[str, Any]:
        blank: dict[str, Any] = {name: f.default for name, f in self.fields.items()}
        blank.update(IsDeleted=False, **({"IsConverted": False} if "IsConverted" in self.fields else {}))
        return blank

    def entity(self) -> soql.Entity:
        return soql.Entity(self.name, {name: KINDS[f.type] for name, f in self.fields.items()})

    def describe(self) -> dict[str, Any]:
        urls = {"sobject": f"/sobjects/{self.name}", "describe": f"/sobjects/{self.name}/describe"}
        return {
            "name": self.name, "label": self.name.removesuffix("__c").replace("_", " "), "keyPrefix": self.key_prefix,
            "custom": self.name.endswith("__c"), "queryable": True, "retrieveable": True, "searchable": True,
            "createable": self.updateable, "updateable": self.updateable, "deletable": self.updateable,
            "urls": urls, "fields": [f.describe() for f in self.fields.values()],
        }


def audited(*specs: FieldDef) -> dict[str, FieldDef]:
    audit = [
        FieldDef("IsDeleted", "boolean", updateable=False, nillable=False),
        FieldDef("CreatedDate", "datetime", updateable=False, nillable=False),
        FieldDef("CreatedById", "reference", updateable=False, reference_to=("User",)),
        FieldDef("LastModifiedDate", "datetime", updateable=False, nillable=False),
        FieldDef("LastModifiedById", "reference", updateable=False, reference_to=("User",)),
        FieldDef("SystemModstamp", "datetime", updateable=False, nillable=False),
    ]
    return {f.name: f for f in [FieldDef("Id", "id", updateable=False, nillable=False), *specs, *audit]}


def ref(name: str, *to: str, updateable: bool = True) -> FieldDef:
    return FieldDef(name, "reference", updateable=updateable, reference_to=to)


def pick(name: str, values: list[str], default: str | None = None, **kw: Any) -> FieldDef:
    return FieldDef(name, "picklist", picklist=list(values), default=default, **kw)  # a copy: each org is its own


LEAD_STATUSES = ["Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"]
CONTACT_STAGES = ["Prospect", "Engaged", "Opportunity", "Customer", "Churned"]
ACCOUNT_STAGES = ["Target", "Engaged", "Customer", "Lost"]
CONVERTED_STATUS = "Closed - Converted"
ORG_BORN = datetime(2020, 1, 1, tzinfo=UTC)  # when the users and lead statuses were set up
PERSON_NAMED = ("Lead", "Contact")  # Name is FirstName + LastName, read-only


ACTIVITY_TYPES = ["Call", "Email", "Meeting", "Other"]
HISTORY_PREFIX = "017"  # every field-history object's Ids start so


def text(name: str, **kw: Any) -> FieldDef:
    return FieldDef(name, "string", **kw)


def history_object(name: str, parent: str, parent_object: str) -> SObject:
    """A field-history object: read-only rows, no SystemModstamp (they are never edited)."""
    fields = [
        FieldDef("Id", "id", updateable=False, nillable=False),
        FieldDef("IsDeleted", "boolean", updateable=False, nillable=False),
        ref(parent, parent_object, updateable=False),
        ref("CreatedById", "User", updateable=False),
        FieldDef("CreatedDate", "datetime", updateable=False, nillable=False),
        text("Field", updateable=False),
        text("OldValue", updateable=False),
        text("NewValue", updateable=False),
    ]
    return SObject(name, HISTORY_PREFIX, {f.name: f for f in fields}, updateable=False)


def standard_objects() -> list[SObject]:
    owner = ref("OwnerId", "User")
    name_ro = text("Name", updateable=False)
    merged = ref("MasterRecordId", "Lead", "Contact", "Account", updateable=False)
    who, what = ref("WhoId", "Lead", "Contact"), ref("WhatId", "Account", "Opportunity")
    account_ro = ref("AccountId", "Account", updateable=False)
    return [
        SObject("Lead", "00Q", audited(
            text("FirstName"), text("LastName", nillable=False), name_ro, text("Company", nillable=False),
            FieldDef("Email", "email"), text("Country"),
            pick("LeadSource", ["Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other"],
                  restricted=False),
            pick("Rating", ["Hot", "Warm", "Cold"], restricted=False), FieldDef("NumberOfEmployees", "int"),
            FieldDef("AnnualRevenue", "currency"), FieldDef("Lead_Score__c", "double"),
            owner, pick("Status", LEAD_STATUSES, LEAD_STATUSES[0], nillable=False),
            FieldDef("IsConverted", "boolean", updateable=False, nillable=False),
            FieldDef("ConvertedDate", "date", updateable=False),
            ref("ConvertedAccountId", "Account", updateable=False),
            ref("ConvertedContactId", "Contact", updateable=False), merged,
        )),
        SObject("Contact", "003", audited(
            text("FirstName"), text("LastName", nillable=False), name_ro, FieldDef("Email", "email"),
            ref("AccountId", "Account"), owner, text("Country"), pick("Stage__c", CONTACT_STAGES), merged,
        )),
        SObject("Account", "001", audited(
            text("Name", nillable=False), owner, merged, pick("Account_Stage__c", ACCOUNT_STAGES),
            pick("Industry", ["Technology", "Finance", "Healthcare", "Manufacturing", "Retail", "Other"],
                  restricted=False),
        )),
        SObject("Opportunity", "006", audited(
            text("Name", nillable=False), ref("AccountId", "Account"), owner,
            pick("StageName", ["Prospecting", "Qualification", "Closed Won", "Closed Lost"], "Prospecting",
                 nillable=False),
        )),
        # Salesforce fills AccountId on an activity from its WhatId (an Account, or an Opportunity's
        # Account) or else from its WhoId's Contact; nobody writes it.
        SObject("Task", "00T", audited(
            text("Subject"), pick("Type", ACTIVITY_TYPES),
            pick("Status", ["Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"],
                 "Not Started", nillable=False),
            who, what, account_ro, FieldDef("ActivityDate", "date"), owner,
        )),
        SObject("Event", "00U", audited(
            text("Subject"), pick("Type", ACTIVITY_TYPES), who, what, account_ro,
            FieldDef("ActivityDate", "date"), FieldDef("ActivityDateTime", "datetime"), owner,
        )),
        # Shared Activities: one row per person (IsWhat = false) or record (IsWhat = true) on an activity.
        SObject("TaskRelation", "0RT", audited(
            ref("RelationId", "Lead", "Contact", "Account", "Opportunity"), ref("TaskId", "Task"),
            FieldDef("IsWhat", "boolean", nillable=False), account_ro,
        )),
        SObject("EventRelation", "0RE", audited(
            ref("RelationId", "Lead", "Contact", "Account", "Opportunity"), ref("EventId", "Event"),
            FieldDef("IsWhat", "boolean", nillable=False), FieldDef("IsParent", "boolean", nillable=False),
            FieldDef("IsInvitee", "boolean", nillable=False), account_ro,
        )),
        history_object("LeadHistory", "LeadId", "Lead"),
        history_object("ContactHistory", "ContactId", "Contact"),
        history_object("AccountHistory", "AccountId", "Account"),
        SObject("User", "005", audited(
            text("Name", nillable=False), text("Username", nillable=False), FieldDef("Email", "email"),
            FieldDef("IsActive", "boolean", nillable=False),
        )),
        SObject("LeadStatus", "01J", audited(
            text("MasterLabel"), text("ApiName"), FieldDef("SortOrder", "int"),
            FieldDef("IsConverted", "boolean"), FieldDef("IsDefault", "boolean"),
        ), updateable=False),
    ]
