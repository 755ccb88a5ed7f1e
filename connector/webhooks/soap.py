"""A small, safe reader for SOAP 1.1 bodies that come from outside (Salesforce Outbound Messages).

The standard library's expat is used directly, with every handler that could expand or fetch
something refused: a document type declaration (and so any entity declaration, internal or
external) stops the parse at once, before an entity is ever defined, so neither "billion laughs"
nor external entities can happen. Depth and element count are bounded too. We chose this over a
new dependency (defusedxml does the same with the same expat handlers) because the whole job is
thirty lines; checking for `<!DOCTYPE` with a string search instead would miss a UTF-16 body.

The tree keeps what a SOAP reader needs: namespace URI, local name, attributes, text, children.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

MAX_DEPTH = 16  # an Outbound Message is 6 deep (Envelope/Body/notifications/Notification/sObject/field)
MAX_ELEMENTS = 30_000  # 100 notifications of up to ~250 fields each; bounds memory well below the body cap


class XmlRefused(ValueError):
    """The body is not XML we read: malformed, a DTD or entity, too deep or too big. Never quotes the body."""


@dataclass
class Element:
    ns: str  # namespace URI, "" when none
    name: str  # local name
    attrs: dict[str, str]  # "uri local" or "local" -> value
    children: list[Element] = field(default_factory=list)
    text: str = ""

    def child(self, ns: str, name: str) -> Element | None:
        return next((c for c in self.children if c.ns == ns and c.name == name), None)

    def all(self, ns: str, name: str) -> list[Element]:
        return [c for c in self.children if c.ns == ns and c.name == name]

    def attr(self, ns: str, name: str) -> str | None:
        return self.attrs.get(f"{ns} {name}" if ns else name)

    @property
    def nil(self) -> bool:
        return self.attr(XSI, "nil") in ("true", "1")


def _split(qualified: str) -> tuple[str, str]:
    ns, sep, local = qualified.rpartition(" ")
    return (ns, local) if sep else ("", qualified)


def parse(body: bytes) -> Element:
    """The document's root element; raises `XmlRefused`."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[Element] = []
    texts: list[list[str]] = []
    root: list[Element] = []
    count = 0

    def refuse_dtd(*_args: Any) -> None:
        raise XmlRefused("a document type declaration (DTD) is not accepted")

    def refuse_entity(*_args: Any) -> Any:
        raise XmlRefused("entity declarations and references are not accepted")

    def start(qualified: str, attrs: dict[str, str]) -> None:
        nonlocal count
        count += 1
        if count > MAX_ELEMENTS:
            raise XmlRefused(f"more than {MAX_ELEMENTS} elements")
        if len(stack) >= MAX_DEPTH:
            raise XmlRefused(f"nested deeper than {MAX_DEPTH} elements")
        ns, name = _split(qualified)
        element = Element(ns, name, dict(attrs))
        if stack:
            stack[-1].children.append(element)
        else:
            root.append(element)
        stack.append(element)
        texts.append([])

    def end(_qualified: str) -> None:
        element = stack.pop()
        element.text = "".join(texts.pop())

    def data(chunk: str) -> None:
        if texts:
            texts[-1].append(chunk)

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_entity
    parser.SkippedEntityHandler = refuse_entity
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    try:
        parser.Parse(body, True)
    except expat.ExpatError as error:
        # expat's own words name a line and column, never the content.
        raise XmlRefused(f"not well-formed XML ({expat.ErrorString(error.code)}, line {error.lineno})") from None
    if not root:
        raise XmlRefused("no root element")
    return root[0]


def body_of(envelope: Element) -> Element:
    """The single element inside a SOAP 1.1 Envelope's Body; raises `XmlRefused` if it is not one."""
    if (envelope.ns, envelope.name) != (SOAP_ENV, "Envelope"):
        raise XmlRefused("not a SOAP 1.1 envelope")
    body = envelope.child(SOAP_ENV, "Body")
    if body is None or len(body.children) != 1:
        raise XmlRefused("the SOAP Body must hold exactly one element")
    return body.children[0]
