"""Reading YAML with the line of every key, and turning validation errors into `file:line: message`.

The loader works on ruamel's node tree rather than its objects so that it can report duplicate keys
alongside every other problem, keep dates as the strings the user wrote, and read `on:` as a string
(YAML 1.2; PyYAML's 1.1 rules would make it the boolean True).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from connector.errors import ConfigError, Problem

KeyPath = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}\n]*))?\}")
_PLACEHOLDER = re.compile(r"__connector_env_\d+__")

# Keys whose values are never echoed back, whatever the error.
SECRET_KEYS = frozenset(
    {"access_token", "client_secret", "password", "security_token", "private_key", "refresh_token", "token"}
)


@dataclass
class YamlDocument:
    """Plain data (dicts, lists, scalars) and the line of every key path in it."""

    file: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    env_refs: dict[str, str] = field(default_factory=dict)  # placeholder -> `${NAME}` as written

    def line(self, path: KeyPath) -> int | None:
        # The nearest enclosing key that has a position: an error about a missing key points at its parent.
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def problem(self, path: KeyPath, message: str, *, warning: bool = False) -> None:
        self.problems.append(self.at(path, message, warning=warning))

    def at(self, path: KeyPath, message: str, *, warning: bool = False) -> Problem:
        """A problem located at `path`, not yet added to this document's list."""
        return Problem(self.file, self.line(path), message, warning, dotted(path) if path else None)


def load_yaml(file: Path, *, env_refs: bool = False) -> YamlDocument:
    """Read a YAML file; syntax errors and duplicate keys are collected in `problems`.

    With `env_refs`, each `${NAME}` becomes a placeholder before parsing: YAML does not allow `{` in
    a plain scalar inside a flow mapping, yet `auth: {access_token: ${TOKEN}}` is how people write it.
    """
    doc = YamlDocument(file=file, data=None)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        doc.problems.append(Problem(file, None, "file not found"))
        return doc
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the path
        doc.problems.append(Problem(file, None, f"cannot read the file: {exc}"))
        return doc
    if env_refs:
        text = _ENV.sub(lambda m: _placeholder(doc, m.group(0)), text)
    yaml = YAML(typ="rt")
    try:
        node = yaml.compose(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        doc.problems.append(Problem(file, line, f"YAML syntax error: {what}"))
        return doc
    except ReaderError as exc:
        line = text.count("\n", 0, max(0, exc.position)) + 1
        doc.problems.append(Problem(file, line, f"YAML syntax error: {exc.reason} (character {exc.character!r})"))
        return doc
    except YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        doc.problems.append(Problem(file, None, f"YAML syntax error: {first}"))
        return doc
    if node is None:
        doc.data = {}
        doc.lines[()] = 1
        return doc
    doc.data = _convert(node, (), doc)
    # An empty document (`---`, `null`) is reported at the top of the file.
    doc.lines[()] = 1 if doc.data is None else node.start_mark.line + 1
    return doc


_SCALAR_TAGS: dict[str, Callable[[str], Any]] = {
    "tag:yaml.org,2002:null": lambda _v: None,
    "tag:yaml.org,2002:bool": lambda v: v.lower() == "true",
    "tag:yaml.org,2002:int": lambda v: int(v.replace("_", ""), 0) if v[:2] in ("0x", "0o") else int(v),
    "tag:yaml.org,2002:float": float,
}


def _convert(node: Node, path: KeyPath, doc: YamlDocument, active: frozenset[int] = frozenset()) -> Any:
    if id(node) in active:
        doc.problems.append(Problem(doc.file, node.start_mark.line + 1, "a YAML alias refers to itself"))
        return None
    active = active | {id(node)}
    if isinstance(node, MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                doc.problems.append(Problem(doc.file, key_node.start_mark.line + 1, "a key must be a plain name"))
                continue
            # Keys stay exactly as written: `true:` or `010:` are CRM values, not a boolean or a number.
            key = str(key_node.value)
            key_path = (*path, key)
            if key in result:
                first = doc.lines.get(key_path)
                doc.problems.append(
                    Problem(doc.file, key_node.start_mark.line + 1, f"duplicate key '{key}' (first at line {first})")
                )
                continue
            doc.lines[key_path] = key_node.start_mark.line + 1
            result[key] = _convert(value_node, key_path, doc, active)
        return result
    if isinstance(node, SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            doc.lines[(*path, index)] = item.start_mark.line + 1
            items.append(_convert(item, (*path, index), doc, active))
        return items
    assert isinstance(node, ScalarNode)
    tag = node.tag
    convert = _SCALAR_TAGS.get(str(getattr(tag, "value", tag)))
    if convert is None or node.style in ("'", '"'):
        return node.value  # strings, and dates and times left as the user wrote them
    try:
        return convert(node.value)
    except ValueError:
        return node.value




def _placeholder(doc: YamlDocument, reference: str) -> str:
    name = f"__connector_env_{len(doc.env_refs)}__"
    doc.env_refs[name] = reference
    return name


def interpolate_env(doc: YamlDocument, environ: dict[str, str] | os._Environ[str] | None = None) -> None:
    """Replace `${NAME}` (or `${NAME:-default}`) in every string; a missing variable is a problem."""
    env = os.environ if environ is None else environ

    def walk(value: Any, path: KeyPath) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        value = _PLACEHOLDER.sub(lambda m: doc.env_refs.get(m.group(0), m.group(0)), value)
        if "${" not in value:
            return value

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            doc.problem(path, f"{dotted(path)}: environment variable {name} is not set")
            return ""

        return _ENV.sub(substitute, value)

    doc.data = walk(doc.data, ())


def dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _data_path(data: Any, loc: tuple[int | str, ...]) -> KeyPath:
    """Drop the union tags pydantic puts in an error's location, keeping the keys that exist in the data."""
    path: list[str | int] = []
    current = data
    for index, part in enumerate(loc):
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            path.append(part)
            current = current[part]
        elif isinstance(current, dict) and index == len(loc) - 1:
            path.append(part)  # a missing or unknown key: name it
    return tuple(path)


def report_validation_error(doc: YamlDocument, exc: ValidationError, model: type[BaseModel]) -> None:
    """Add one problem per pydantic error, located at its line, never echoing a secret value."""
    seen: set[tuple[KeyPath, str]] = set()
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        path = _data_path(doc.data, loc)
        if error["type"] == "union_tag_invalid":  # point at the tag's own line, e.g. `type:`
            path = (*path, str(error.get("ctx", {}).get("discriminator", "")).strip("'"))
        if error["type"] == "too_short" and _value_at(doc.data, path):
            continue  # items that failed on their own are reported; the list itself was not empty
        known = keys_at(model, loc[:-1]) if error["type"] == "extra_forbidden" else []
        message = _describe(error, path, known)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        doc.problem(path, f"{dotted(path)}: {message}")


def _value_at(data: Any, path: KeyPath) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _member_for(annotation: Any, part: str | int) -> tuple[Any, bool] | None:
    """The union member a location part selects, and whether the part was the union's tag."""
    for member in get_args(annotation):
        tags = [m.tag for m in getattr(member, "__metadata__", ()) if isinstance(m, Tag)]
        model = _unwrap(member)
        if part in tags:
            return model, True
        if isinstance(model, type) and issubclass(model, BaseModel):
            for info in model.model_fields.values():
                if get_origin(info.annotation) is Literal and part in get_args(info.annotation):
                    return model, True
    for member in get_args(annotation):
        model = _unwrap(member)
        origin = get_origin(model)
        if (isinstance(part, int) and origin in (list, tuple)) or (isinstance(part, str) and origin is dict):
            return model, False
    return None


def keys_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed at a location of the model, for a did-you-mean; [] when it cannot tell."""
    current: Any = model
    parts = list(loc)
    while parts:
        current = _unwrap(current)
        part = parts[0]
        if get_origin(current) in (Union, UnionType):
            chosen = _member_for(current, part)
            if chosen is None:
                return []
            current, consumed = chosen
            if consumed:
                parts.pop(0)
            continue
        parts.pop(0)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) in (list, tuple):
            current = get_args(current)[0]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [info.alias or name for name, info in current.model_fields.items()]
    return []


def suggest(word: str, candidates: Iterable[str]) -> str:
    options = list(candidates)
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not match:
        lowered = {c.lower(): c for c in options}
        if word.lower() in lowered:
            match = [lowered[word.lower()]]
    return f" (did you mean '{match[0]}'?)" if match else ""


def _describe(error: Any, path: KeyPath, known: list[str]) -> str:
    kind = error["type"]
    key = path[-1] if path else ""
    secret = key in SECRET_KEYS
    value = error.get("input")
    if kind == "extra_forbidden":
        return f"unknown key '{key}'{suggest(str(key), known)}"
    if kind == "missing":
        return f"missing required key '{key}'"
    if kind in ("bool_type", "bool_parsing"):
        return f"{value!r} is not true or false"
    if kind in ("literal_error", "enum"):
        expected = error.get("ctx", {}).get("expected", "")
        shown = "" if secret else f"{value!r} "
        return f"{shown}is not one of {expected}".strip()
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a mapping of keys to values"
    if kind == "too_short":
        return "must list at least one"
    if kind in ("list_type", "tuple_type"):
        return "must be a list"
    if kind == "string_type":
        return "must be text" if secret else f"{value!r} must be text"
    if kind in ("int_type", "int_parsing"):
        return "must be a whole number" if secret else f"{value!r} must be a whole number"
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        return f"{ctx.get('tag')!r} is not one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"missing required key '{error.get('ctx', {}).get('discriminator', '').strip(chr(39))}'"
    return str(error["msg"])


def raise_if_problems(problems: list[Problem]) -> None:
    if any(not p.warning for p in problems):
        raise ConfigError(problems)
