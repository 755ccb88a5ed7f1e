"""The subset of SOQL that the Salesforce stand-in understands, with Salesforce's error shapes.

Supported: ``SELECT f, ... | COUNT() FROM obj [WHERE ...] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...]
[LIMIT n] [OFFSET n]``; WHERE takes = != <> < <= > >= LIKE, [NOT] IN (...), AND / OR / NOT and
parentheses. Like real SOQL, AND and OR may not be mixed at one level without parentheses, text
comparisons ignore case, and a literal must match its field's type. Anything else is MALFORMED_QUERY,
so a query that works here is one Salesforce accepts too.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import islice
from typing import Any

Row = Mapping[str, Any]
Predicate = Callable[[Row], bool]

# Field kinds as the evaluator sees them; the stand-in maps describe types onto these.
ID, TEXT, DATETIME, DATE, BOOLEAN, NUMBER = "id", "text", "datetime", "date", "boolean", "number"
_TYPE_NAMES = {TEXT: "string", DATETIME: "dateTime", DATE: "date", BOOLEAN: "boolean", NUMBER: "double"}


class SoqlError(Exception):
    """A query Salesforce would refuse: `code` is its errorCode, `message` its (located) message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Entity:
    """What binding needs to know about an object: its API name and each field's kind."""

    name: str
    kinds: Mapping[str, str]  # canonical field name -> kind


# --- datetimes ------------------------------------------------------------------------------------
@lru_cache(maxsize=1 << 16)  # many records share one second, so the cache hit rate is high
def format_datetime(value: datetime) -> str:
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}+0000"


_DT_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})$"
)


def parse_datetime(text: str) -> datetime | None:
    """Salesforce's datetime forms: Z, +hh:mm or +hhmm offsets, optional fraction. None if invalid."""
    match = _DT_RE.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7) or "0", match.group(8)
    try:
        value = datetime(year, month, day, hour, minute, second, int(fraction[:6].ljust(6, "0")), tzinfo=UTC)
    except ValueError:
        return None
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        value -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return value


# --- tokens ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Token:
    kind: str  # str, datetime, date, num, ident, op, "(", ")", ",", eof
    text: str
    pos: int

    @property
    def word(self) -> str:
        return self.text.upper() if self.kind == "ident" else ""


_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
    | (?P<str>'(?:[^'\\]|\\.)*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2}))
    | (?P<date>\d{4}-\d{2}-\d{2}(?![\dT]))
    | (?P<num>-?\d+(?:\.\d+)?(?![\w.]))
    | (?P<ident>[A-Za-z_][\w.]*)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[(),])""",
    re.VERBOSE,
)
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise _error(text, pos, "MALFORMED_QUERY", f"unexpected token: '{text[pos:].split()[0]}'")
        kind = match.lastgroup or ""
        if kind != "ws":
            value = match.group()
            tokens.append(_Token(value if kind == "punct" else kind, value, pos))
        pos = match.end()
    tokens.append(_Token("eof", "<EOF>", len(text)))
    return tokens


def _error(text: str, pos: int, code: str, message: str) -> SoqlError:
    """Salesforce quotes the offending line with a caret under the column."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    line = text[start : end if end >= 0 else len(text)]
    row, col = text.count("\n", 0, pos) + 1, pos - start + 1
    return SoqlError(code, f"\n{line}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n{message}")


# --- syntax tree ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Name:
    text: str
    pos: int
    kind: str = ""  # set once bound to a field


@dataclass(frozen=True)
class Literal:
    value: Any  # str, datetime, date, int, float, bool or None
    raw: str
    pos: int


@dataclass(frozen=True)
class Compare:
    field: Name
    op: str  # = != < <= > >= LIKE
    value: Literal


@dataclass(frozen=True)
class InList:
    field: Name
    values: tuple[Literal, ...]
    negate: bool


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND | OR
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Compare | InList | BoolOp | Not


@dataclass(frozen=True)
class OrderItem:
    field: Name
    desc: bool
    nulls_first: bool


@dataclass(frozen=True)
class Query:
    text: str
    fields: tuple[Name, ...] | None  # None: SELECT COUNT()
    sobject: Name
    where: Node | None
    order: tuple[OrderItem, ...]
    limit: int | None
    offset: int


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def fail(self, token: _Token | None = None) -> SoqlError:
        token = token or self.tok
        return _error(self.text, token.pos, "MALFORMED_QUERY", f"unexpected token: '{token.text}'")

    def take(self) -> _Token:
        token = self.tok
        self.i += 1
        return token

    def accept(self, *words: str) -> bool:
        if self.tok.word in words or self.tok.kind in words:
            self.i += 1
            return True
        return False

    def expect(self, word: str) -> _Token:
        if not (self.tok.word == word or self.tok.kind == word):
            raise self.fail()
        return self.take()

    def name(self) -> Name:
        if self.tok.kind != "ident":
            raise self.fail()
        token = self.take()
        return Name(token.text, token.pos)

    def query(self) -> Query:
        self.expect("SELECT")
        fields: tuple[Name, ...] | None
        if self.tok.word == "COUNT" and self.tokens[self.i + 1].kind == "(":
            self.i += 1
            self.expect("(")
            self.expect(")")
            fields = None
        else:
            items = [self.name()]
            while self.accept(","):
                items.append(self.name())
            fields = tuple(items)
        self.expect("FROM")
        sobject = self.name()
        where = self.condition() if self.accept("WHERE") else None
        order: list[OrderItem] = []
        if self.accept("ORDER"):
            self.expect("BY")
            order.append(self.order_item())
            while self.accept(","):
                order.append(self.order_item())
        limit = self.integer() if self.accept("LIMIT") else None
        offset = self.integer() if self.accept("OFFSET") else 0
        if self.tok.kind != "eof":
            raise self.fail()
        return Query(self.text, fields, sobject, where, tuple(order), limit, offset)

    def integer(self) -> int:
        token = self.tok
        if token.kind != "num" or not token.text.isdigit():
            raise self.fail()
        self.i += 1
        return int(token.text)

    def order_item(self) -> OrderItem:
        field = self.name()
        desc = self.take().word == "DESC" if self.tok.word in ("ASC", "DESC") else False
        nulls_first = not desc
        if self.accept("NULLS"):
            if self.tok.word not in ("FIRST", "LAST"):
                raise self.fail()
            nulls_first = self.take().word == "FIRST"
        return OrderItem(field, desc, nulls_first)

    def condition(self) -> Node:
        items = [self.unary()]
        joiner = ""
        while self.tok.word in ("AND", "OR"):
            if joiner and self.tok.word != joiner:
                raise self.fail()  # SOQL wants parentheses around mixed AND / OR
            joiner = self.take().word
            items.append(self.unary())
        return items[0] if len(items) == 1 else BoolOp(joiner, tuple(items))

    def unary(self) -> Node:
        if self.accept("NOT"):
            return Not(self.unary())
        if self.accept("("):
            node = self.condition()
            self.expect(")")
            return node
        field = self.name()
        if self.tok.kind == "op":
            op = self.take().text
            return Compare(field, "!=" if op == "<>" else op, self.literal())
        if self.accept("LIKE"):
            return Compare(field, "LIKE", self.literal())
        negate = self.accept("NOT")
        self.expect("IN")
        self.expect("(")
        values = [self.literal()]
        while self.accept(","):
            values.append(self.literal())
        self.expect(")")
        return InList(field, tuple(values), negate)

    def literal(self) -> Literal:
        token = self.tok
        value: Any
        if token.kind == "str":
            value = self.unquote(token)
        elif token.kind == "datetime":
            value = parse_datetime(token.text)
        elif token.kind == "date":
            try:
                value = date.fromisoformat(token.text)
            except ValueError:
                value = None
        elif token.kind == "num":
            value = float(token.text) if "." in token.text else int(token.text)
        elif token.word in ("TRUE", "FALSE", "NULL"):
            value = {"TRUE": True, "FALSE": False, "NULL": None}[token.word]
        else:
            raise self.fail()
        if value is None and token.kind in ("datetime", "date"):
            raise self.fail()
        self.i += 1
        return Literal(value, token.text[1:-1] if token.kind == "str" else token.text, token.pos)

    def unquote(self, token: _Token) -> str:
        out: list[str] = []
        body = iter(token.text[1:-1])
        for char in body:
            if char != "\\":
                out.append(char)
                continue
            escaped = next(body)
            if escaped in "%_":  # only meaningful to LIKE, which reads the raw text
                out.append("\\" + escaped)
            elif escaped in _ESCAPES:
                out.append(_ESCAPES[escaped])
            else:
                raise _error(self.text, token.pos, "MALFORMED_QUERY", "Invalid string literal: illegal escape")
        return "".join(out)


def parse(text: str) -> Query:
    return _Parser(text).query()


# --- binding to an object's fields ----------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """A query checked against its object, ready to run over rows (dicts keyed by canonical names)."""

    entity: str
    columns: tuple[str, ...]  # empty for COUNT()
    kinds: tuple[str, ...]  # kind of each column, for rendering
    count_only: bool
    predicate: Predicate | None
    order: tuple[tuple[str, str, bool, bool], ...]  # field, kind, desc, nulls_first
    limit: int | None
    offset: int
    id_hint: frozenset[str] | None  # the result can only hold these Ids
    where: Node | None

    def run(self, rows: Iterable[Row], *, presorted: bool = False) -> list[Row]:
        """Filter, order, offset and limit: the rows of the result, not yet projected.

        `presorted` rows already come in the ORDER BY order, so a LIMIT stops the scan early: an
        incremental pull reads one page, not every row after its cursor.
        """
        matches = filter(self.predicate, rows) if self.predicate is not None else iter(rows)
        end = None if self.limit is None else self.offset + self.limit
        if presorted:
            return list(islice(matches, self.offset, end))
        result = list(matches)
        for field, kind, desc, nulls_first in reversed(self.order):  # stable sorts, last key first
            result.sort(key=_sort_key(field, kind, nulls_first != desc), reverse=desc)
        return result[self.offset : end] if self.offset or end is not None else result

    def follows(self, *fields: str) -> bool:
        """Whether rows sorted ascending on `fields` are already in this query's order."""
        names = [name for name, _, _, _ in self.order]
        return not any(desc for _, _, desc, _ in self.order) and names == list(fields[: len(names)])

    def floor(self, first: str, second: str) -> tuple[Any, str] | None:
        """The least (first, second) key a matching row can have, for an index sorted on that pair."""
        return _pair_floor(self.where, first, second) if self.where is not None else None


def _sort_key(field: str, kind: str, nulls_low: bool) -> Callable[[Row], tuple[int, Any]]:
    null_key = (0 if nulls_low else 2, 0)
    if kind == TEXT:
        return lambda r: null_key if r[field] is None else (1, r[field].casefold())
    return lambda r: null_key if r[field] is None else (1, r[field])


def bind(
    query: Query,
    resolve: Callable[[str], Entity | None],
    normalize_id: Callable[[str], str | None],
) -> Plan:
    """Check the query against its object; raise SoqlError as Salesforce would."""
    text = query.text
    entity = resolve(query.sobject.text)
    if entity is None:
        raise _error(
            text, query.sobject.pos, "INVALID_TYPE",
            f"sObject type '{query.sobject.text}' is not supported. If you are attempting to use a custom "
            "object, be sure to append the '__c' after the entity name. Please reference your WSDL or the "
            "describe call for the appropriate names.",
        )
    lower = {name.lower(): name for name in entity.kinds}

    def field(name: Name) -> str:
        if "." in name.text:
            raise _error(
                text, name.pos, "INVALID_FIELD",
                f"Didn't understand relationship '{name.text.split('.')[0]}' in field path. If you are "
                "attempting to use a custom relationship, be sure to append the '__r' after the custom "
                "relationship name. Please reference your WSDL or the describe call for the appropriate names.",
            )
        canonical = lower.get(name.text.lower())
        if canonical is None:
            raise _error(
                text, name.pos, "INVALID_FIELD",
                f"No such column '{name.text}' on entity '{entity.name}'. If you are attempting to use a "
                "custom field, be sure to append the '__c' after the custom field name. Please reference "
                "your WSDL or the describe call for the appropriate names.",
            )
        return canonical

    columns: list[str] = []
    for name in query.fields or ():
        canonical = field(name)
        if canonical in columns:
            raise _error(text, name.pos, "MALFORMED_QUERY", f"duplicate field selected: {canonical}")
        columns.append(canonical)
    if query.offset > 2000:
        raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000")
    binder = _Binder(text, field, entity.kinds, normalize_id)
    where = binder.node(query.where) if query.where is not None else None
    order = tuple((f := field(o.field), entity.kinds[f], o.desc, o.nulls_first) for o in query.order)
    return Plan(
        entity=entity.name,
        columns=tuple(columns),
        kinds=tuple(entity.kinds[c] for c in columns),
        count_only=query.fields is None,
        predicate=_compile(where) if where is not None else None,
        order=order,
        limit=query.limit,
        offset=query.offset,
        id_hint=_id_hint(where, lower.get("id", "Id")) if where is not None else None,
        where=where,
    )


class _Binder:
    """Rewrites a parsed condition onto canonical field names and typed values."""

    def __init__(
        self,
        text: str,
        field: Callable[[Name], str],
        kinds: Mapping[str, str],
        normalize_id: Callable[[str], str | None],
    ) -> None:
        self.text, self.field, self.kinds, self.normalize_id = text, field, kinds, normalize_id

    def node(self, node: Node) -> Node:
        if isinstance(node, BoolOp):
            return BoolOp(node.op, tuple(self.node(item) for item in node.items))
        if isinstance(node, Not):
            return Not(self.node(node.item))
        canonical = self.field(node.field)
        kind = self.kinds[canonical]
        name = Name(canonical, node.field.pos, kind)
        if isinstance(node, InList):
            return InList(name, tuple(self.value(name.text, kind, v) for v in node.values), node.negate)
        if node.op == "LIKE" and (kind not in (TEXT, ID) or not isinstance(node.value.value, str)):
            raise _error(self.text, node.field.pos, "INVALID_FIELD",
                         f"invalid operator on field '{name.text}': LIKE")
        if node.value.value is None and node.op not in ("=", "!="):
            raise _error(self.text, node.value.pos, "MALFORMED_QUERY", "unexpected token: 'null'")
        value = node.value if node.op == "LIKE" else self.value(name.text, kind, node.value)
        return Compare(name, node.op, value)

    def value(self, name: str, kind: str, literal: Literal) -> Literal:
        value = literal.value
        if value is None:
            return literal
        if kind == ID:
            normal = self.normalize_id(value) if isinstance(value, str) else None
            if normal is None:
                raise _error(self.text, literal.pos, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value}")
            return Literal(normal, literal.raw, literal.pos)
        if not _LITERAL_CHECKS[kind](value):
            quoted = "be enclosed" if kind == TEXT else "not be enclosed"
            raise _error(
                self.text, literal.pos, "INVALID_FIELD",
                f"value of filter criterion for field '{name}' must be of type {_TYPE_NAMES[kind]} "
                f"and should {quoted} in quotes",
            )
        return literal


_LITERAL_CHECKS: dict[str, Callable[[Any], bool]] = {
    TEXT: lambda v: isinstance(v, str),
    DATETIME: lambda v: isinstance(v, datetime),
    DATE: lambda v: isinstance(v, date) and not isinstance(v, datetime),
    BOOLEAN: lambda v: isinstance(v, bool),
    NUMBER: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def _compile(node: Node) -> Predicate:
    if isinstance(node, BoolOp):
        items = [_compile(item) for item in node.items]
        if node.op == "AND":
            return lambda r: all(p(r) for p in items)
        return lambda r: any(p(r) for p in items)
    if isinstance(node, Not):
        inner = _compile(node.item)
        return lambda r: not inner(r)
    name = node.field.text
    text = node.field.kind == TEXT  # text compares without regard to case; Ids and the rest exactly
    if isinstance(node, InList):
        with_null = any(v.value is None for v in node.values)
        members = frozenset(_fold(v.value, text) for v in node.values if v.value is not None)
        if node.negate:  # as with !=, a null field is "not in" a list without null
            return lambda r: (not with_null) if r[name] is None else _fold(r[name], text) not in members
        return lambda r: with_null if r[name] is None else _fold(r[name], text) in members
    if node.op == "LIKE":
        pattern = _like_regex(node.value.raw)
        return lambda r: r[name] is not None and pattern.fullmatch(r[name]) is not None
    target = node.value.value
    if target is None:
        return (lambda r: r[name] is None) if node.op == "=" else (lambda r: r[name] is not None)
    compare = _OPS[node.op]
    keep_null = node.op == "!="  # SOQL's != matches nulls, unlike SQL's
    if text:
        folded = target.casefold()
        return lambda r: keep_null if r[name] is None else compare(r[name].casefold(), folded)
    return lambda r: keep_null if r[name] is None else compare(r[name], target)


def _fold(value: Any, text: bool) -> Any:
    return value.casefold() if text else value


def _like_regex(raw: str) -> re.Pattern[str]:
    parts: list[str] = []
    chars = iter(raw)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "\\")
            parts.append(re.escape(_ESCAPES.get(escaped, escaped)))
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


# --- index hints ------------------------------------------------------------------------------------
def _id_hint(node: Node, id_field: str) -> frozenset[str] | None:
    """The Ids a row must have to match, when the condition pins them down."""
    if isinstance(node, Compare):
        if node.field.text == id_field and node.op == "=" and node.value.value is not None:
            return frozenset([node.value.value])
        return None
    if isinstance(node, InList):
        if node.field.text == id_field and not node.negate:
            return frozenset(v.value for v in node.values if v.value is not None)
        return None
    if isinstance(node, Not):
        return None
    hints = [_id_hint(item, id_field) for item in node.items]
    if node.op == "AND":
        known = [h for h in hints if h is not None]
        return min(known, key=len) if known else None
    if any(h is None for h in hints):
        return None
    return frozenset().union(*(h for h in hints if h is not None))


_AFTER_EVERY_ID = "~"  # sorts after any Id, all of whose characters are alphanumeric


def _pair_floor(node: Node, first: str, second: str) -> tuple[Any, str] | None:
    """Keyset paging's `first > X OR (first = X AND second > Y)` starts at (X, Y), not at the top."""
    if isinstance(node, Compare):
        value = node.value.value
        if node.field.text != first or node.field.kind == TEXT or value is None:
            return None
        return {">": (value, _AFTER_EVERY_ID), ">=": (value, ""), "=": (value, "")}.get(node.op)
    if isinstance(node, InList):
        values = [v.value for v in node.values]
        if node.field.text != first or node.field.kind == TEXT or node.negate or None in values:
            return None
        return (min(values), "")
    if isinstance(node, Not):
        return None
    floors = [_pair_floor(item, first, second) for item in node.items]
    if node.op == "OR":
        known = [f for f in floors if f is not None]
        return min(known) if len(known) == len(floors) else None
    known = [f for f in floors if f is not None]
    compares = [i for i in node.items if isinstance(i, Compare) and i.value.value is not None]
    pinned = [c.value.value for c in compares if c.field.text == first and c.op == "=" and c.field.kind != TEXT]
    after = [c.value.value for c in compares if c.field.text == second and c.op in (">", ">=", "=")
             and isinstance(c.value.value, str) and c.field.kind == ID]
    if pinned and after:
        known.append((pinned[0], max(after)))
    return max(known) if known else None


def project(rows: Sequence[Row], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """Copy the selected values out of the rows, so later writes don't change a paged result."""
    if not columns:
        return []
    if len(columns) == 1:
        (only,) = columns
        return [(r[only],) for r in rows]
    getter = operator.itemgetter(*columns)
    return [getter(r) for r in rows]
