"""YAML text -> plain Python data, with the line and column of every key and value.

Pure (text in, data out). Called by ``loader`` for policy files and the reference
histograms they name. Whatever the text, the only exception that leaves ``parse`` is
:class:`PolicyError` (re-exported by ``loader``), holding located problems.

Built on the event stream of PyYAML's parser (libyaml's C parser when the installed
wheel has it, else PyYAML's pure-Python parser; both are iterative). This module composes
the events itself instead of using a ready-made loader, because:

* every value keeps its position, and every problem is located (line, column and the
  data path), including values no loader would construct: a 5,000-digit integer, an
  unknown tag, an alias to nothing;
* nesting depth, the number of values (alias bombs) and recursive aliases are refused
  while composing, before anything recurses;
* scalars follow the YAML 1.2 core schema whatever the ``%YAML`` directive: ``true``,
  ``false``, ``null``, integers (``0x``, ``0o``, ``0b``, ``_`` separators) and floats
  (``.inf``, ``.nan``); ``yes``, ``on`` and dates stay text. Only the core tags (``!!str``,
  ``!!int``, ``!!float``, ``!!bool``, ``!!null``, ``!!map``, ``!!seq``) are accepted;
* a duplicate key is an error; merge keys (``<<: *base``) work as YAML defines them.

ruamel's round-trip loader, used before, took ~15 ms per policy (the policy fuzzer runs
tens of thousands) and raised unlocated errors from its constructors (a ``ValueError`` for
a long integer, an ``OverflowError`` could follow); PyYAML's own loaders drop positions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_NODES = 100_000
MAX_DEPTH = 64
MAX_NUMBER_DIGITS = 100
MAX_SHOWN = 60

DataPath = tuple[str | int, ...]

_Loader: Any = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
_CORE = "tag:yaml.org,2002:"
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_BOOLS = {"true": True, "True": True, "TRUE": True,
          "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?(?:0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+|[0-9][0-9_]*)")
_FLOAT = re.compile(r"""[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                       |[0-9][0-9_]*[eE][-+]?[0-9]+
                       |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?)""", re.X)
_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)")
_BASES = {"0x": 16, "0o": 8, "0b": 2}
# Printable, no tab, no line break of str.splitlines() (\x1c-\x1e, \x85, \u2028, \u2029).
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff"
                          r"\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, order=True)
class Problem:
    """One mistake in one file, located like a compiler error (1-based line and column)."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        """One line whatever the text: control characters, lone surrogates and the like
        in file names, keys or values are shown escaped."""
        where = f"{printable(self.file)}:{self.line}:{self.column}"
        message = printable(self.message)
        return f"{where}: {printable(self.path)}: {message}" if self.path else f"{where}: {message}"


class PolicyError(Exception):
    """One or more problems with policy files; ``str()`` is one line per problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def printable(text: str) -> str:
    """``text`` with anything that is not a printable character (newlines, escapes,
    lone surrogates from undecodable file names) written as a Python escape."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape",
                                                      "backslashreplace").decode("ascii"), text)


def shorten(text: str) -> str:
    """``text`` cut to a readable length for a message."""
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def show(value: Any) -> str:
    """A value in a message: its repr, cut to a readable length."""
    return shorten(repr(value))


def format_path(path: DataPath) -> str:
    """``spec.steps[0].weight``; a key too long to read is cut."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        out += f".{shorten(part)}" if out else shorten(part)
    return out


# --- composing events into nodes ------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Node:
    kind: str                          # "scalar", "seq" or "map"
    line: int                          # 0-based, as the parser marks it
    column: int
    tag: str | None
    value: str = ""                    # a scalar's text
    plain: bool = False                # a plain (unquoted) scalar: its type is resolved
    items: list[_Node] = field(default_factory=list)   # seq items; map key, value, ...
    size: int = 1                      # values below and including this one, aliases expanded
    height: int = 1                    # levels below and including this one, likewise


class _Abort(Exception):
    def __init__(self, line: int, column: int, path: DataPath, message: str) -> None:
        self.where = (line, column, path, message)


def _open_path(stack: Sequence[_Node]) -> DataPath:
    """The data path of the node being composed inside the open collections."""
    path: list[str | int] = []
    for node in stack:
        if node.kind == "seq":
            path.append(len(node.items) - 1)
        elif len(node.items) % 2 == 0 and node.items[-2].kind == "scalar":
            path.append(node.items[-2].value)
    return tuple(path)


def _compose(raw: bytes) -> list[_Node]:
    """The root node of every document; raises ``_Abort`` past the limits."""
    roots: list[_Node] = []
    stack: list[_Node] = []
    anchors: dict[str, _Node] = {}
    open_anchors: set[str] = set()
    closing: list[str | None] = []
    count = 0
    for event in yaml.parse(raw, Loader=_Loader):
        mark = event.start_mark
        line, column = (mark.line, mark.column) if mark is not None else (0, 0)
        if isinstance(event, yaml.DocumentStartEvent):
            anchors, open_anchors = {}, set()
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            done = stack.pop()
            anchor = closing.pop()
            if anchor is not None:
                open_anchors.discard(anchor)
            # Sizes from the children's, so an alias bomb is refused without expanding it.
            done.size = 1 + sum(item.size for item in done.items)
            done.height = 1 + max((item.height for item in done.items), default=0)
            if done.size > MAX_NODES:
                raise _Abort(done.line, done.column, _open_path(stack),
                             f"document has more than {MAX_NODES} values (counting every "
                             "use of an alias)")
            if len(stack) + done.height - 1 > MAX_DEPTH:
                raise _Abort(done.line, done.column, _open_path(stack),
                             f"document is nested more than {MAX_DEPTH} levels (through "
                             "aliases)")
            continue
        if isinstance(event, yaml.AliasEvent):
            name = str(event.anchor)
            if name in open_anchors:
                raise _Abort(line, column, _open_path(stack),
                             f"alias *{name} refers to a value that contains it")
            target = anchors.get(name)
            if target is None:
                raise _Abort(line, column, _open_path(stack),
                             f"alias *{name} refers to no anchor &{name} before it")
            node = target
        elif isinstance(event, yaml.ScalarEvent):
            node = _Node("scalar", line, column, event.tag, event.value,
                         plain=bool(event.implicit[0]) and event.tag in (None, "!"))
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            kind = "seq" if isinstance(event, yaml.SequenceStartEvent) else "map"
            node = _Node(kind, line, column, event.tag)
        else:
            continue                   # stream start and end, document end
        count += 1
        if count > MAX_NODES:
            raise _Abort(line, column, _open_path(stack),
                         f"document has more than {MAX_NODES} values")
        if stack:
            stack[-1].items.append(node)
        else:
            roots.append(node)
        anchor = None if isinstance(event, yaml.AliasEvent) else event.anchor
        if anchor is not None:
            anchors[anchor] = node
        if node.kind != "scalar" and not isinstance(event, yaml.AliasEvent):
            if len(stack) >= MAX_DEPTH:
                raise _Abort(line, column, _open_path(stack),
                             f"document is nested more than {MAX_DEPTH} levels")
            stack.append(node)
            closing.append(anchor)
            if anchor is not None:
                open_anchors.add(anchor)
    return roots


# --- nodes into plain data with positions -----------------------------------------------


@dataclass
class Positions:
    """Where each value (and each mapping key) of a document stands, by data path."""

    values: dict[DataPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[DataPath, tuple[int, int]] = field(default_factory=dict)


class Document:
    """A YAML document as plain data, with positions, and the problems found building it.

    A value that could not be read (an unsupported tag, a non-text key...) is recorded
    as a problem and left out (``None``); ``unreadable`` holds the paths of those
    values so that the validator's complaint about the gap is not reported twice."""

    def __init__(self, file: str, root: _Node) -> None:
        self.file = file
        self.positions = Positions()
        self.problems: list[Problem] = []
        self.unreadable: set[str] = set()
        self._count = 0
        self.positions.values[()] = (root.line, root.column)
        self.data = self._plain(root, (), 0)

    def problem(self, path: DataPath, message: str, *, at_key: bool = False) -> Problem:
        line, col = self.locate(path, at_key=at_key)
        return Problem(self.file, line, col, format_path(path), message)

    def locate(self, path: DataPath, *, at_key: bool = False) -> tuple[int, int]:
        """The position of ``path``, or of its nearest ancestor that exists (1-based)."""
        for cut in range(len(path), -1, -1):
            prefix = path[:cut]
            table = self.positions.keys if at_key or cut < len(path) else self.positions.values
            pos = table.get(prefix) or self.positions.values.get(prefix)
            if pos is not None:
                return pos[0] + 1, pos[1] + 1
        return 1, 1

    def _bad(self, path: DataPath, message: str) -> None:
        self.problems.append(self.problem(path, message))
        self.unreadable.add(format_path(path))

    def _plain(self, node: _Node, path: DataPath, depth: int) -> Any:
        self._count += 1
        if self._count > MAX_NODES:
            raise _Abort(node.line, node.column, path,
                         f"document has more than {MAX_NODES} values (aliases count each time)")
        if depth > MAX_DEPTH:
            raise _Abort(node.line, node.column, path,
                         f"document is nested more than {MAX_DEPTH} levels (through aliases)")
        if node.kind == "scalar":
            try:
                return _scalar(node)
            except ValueError as err:
                self._bad(path, str(err))
                return None
        if node.tag is not None and node.tag != _CORE + node.kind and node.tag != "!":
            self._bad(path, f"unsupported YAML tag {_tag_name(node.tag)} on a "
                            f"{'list' if node.kind == 'seq' else 'mapping'}")
            return None
        if node.kind == "seq":
            out: list[Any] = []
            for i, item in enumerate(node.items):
                child = (*path, i)
                self.positions.values[child] = self.positions.keys[child] = (item.line,
                                                                             item.column)
                out.append(self._plain(item, child, depth + 1))
            return out
        return self._mapping(node, path, depth)

    def _mapping(self, node: _Node, path: DataPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_at: dict[str, int] = {}
        for key_node, value_node, merged in self._pairs(node, path, depth, set()):
            try:
                key = _scalar(key_node) if key_node.kind == "scalar" else None
            except ValueError as err:
                self.problems.append(Problem(self.file, key_node.line + 1, key_node.column + 1,
                                             format_path(path), str(err)))
                continue
            if not isinstance(key, str):
                shown = show(key) if key_node.kind == "scalar" else (
                    "a list" if key_node.kind == "seq" else "a mapping")
                self.problems.append(Problem(self.file, key_node.line + 1, key_node.column + 1,
                                             format_path(path), f"keys must be text, got {shown}"))
                continue
            if key in out:
                if not merged:
                    self.problems.append(Problem(
                        self.file, key_node.line + 1, key_node.column + 1,
                        format_path((*path, key)),
                        f"duplicate key {show(key)} (first at line {first_at[key]})"))
                continue
            first_at[key] = key_node.line + 1
            child = (*path, key)
            self.positions.keys[child] = (key_node.line, key_node.column)
            self.positions.values[child] = (value_node.line, value_node.column)
            out[key] = self._plain(value_node, child, depth + 1)
        return out

    def _pairs(self, node: _Node, path: DataPath, depth: int,
               seen: set[int]) -> list[tuple[_Node, _Node, bool]]:
        """The mapping's (key, value, merged) pairs: its own keys first, then those of the
        mappings merged with ``<<`` in order (the first one to give a key wins)."""
        own: list[tuple[_Node, _Node, bool]] = []
        merged: list[tuple[_Node, _Node, bool]] = []
        seen.add(id(node))
        items = node.items
        for i in range(0, len(items) - 1, 2):
            key, value = items[i], items[i + 1]
            if not (key.kind == "scalar" and ((key.plain and key.value == "<<") or (
                    key.tag == _CORE + "merge"))):
                own.append((key, value, False))
                continue
            sources = value.items if value.kind == "seq" else [value]
            for source in sources:
                self._count += 1
                if source.kind != "map" or id(source) in seen or depth > MAX_DEPTH:
                    self.problems.append(Problem(
                        self.file, source.line + 1, source.column + 1, format_path(path),
                        "a merge key (<<) takes a mapping or a list of mappings, "
                        "none of them containing this one"))
                    continue
                merged += [(k, v, True) for k, v, _ in self._pairs(source, path, depth + 1,
                                                                   seen)]
        seen.discard(id(node))
        return own + merged


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


def _number(text: str, tag: str) -> int | float | None:
    """An int or float in the core schema's forms, or None when ``text`` is neither."""
    if _INT.fullmatch(text):
        sign = -1 if text[0] == "-" else 1
        digits = text.lstrip("+-").replace("_", "")
        base = _BASES.get(digits[:2], 10)
        digits = digits[2:] if base != 10 else digits
        if not digits:
            return None
        if len(digits) > MAX_NUMBER_DIGITS:
            raise ValueError(f"a number with more than {MAX_NUMBER_DIGITS} digits is too large "
                             f"for any policy field, got {show(text)}")
        value = sign * int(digits, base)
        return float(value) if tag == "float" else value
    if _FLOAT.fullmatch(text):
        return float(text.replace("_", ""))
    if _INF.fullmatch(text):
        return float("-inf") if text[0] == "-" else float("inf")
    if _NAN.fullmatch(text):
        return float("nan")
    return None


def _scalar(node: _Node) -> Any:
    """The value of a scalar by the YAML 1.2 core schema; ValueError names what is wrong."""
    text = node.value
    if node.plain:
        if text in _NULLS:
            return None
        if text in _BOOLS:
            return _BOOLS[text]
        number = _number(text, "")
        return text if number is None else number
    if node.tag in (None, "!", _CORE + "str"):
        return text
    tag = node.tag or ""
    kind = tag[len(_CORE):] if tag.startswith(_CORE) else ""
    if kind == "null" and text in _NULLS:
        return None
    if kind == "bool" and text in _BOOLS:
        return _BOOLS[text]
    if kind in ("int", "float"):
        number = _number(text, kind)
        if number is not None and (kind == "float" or isinstance(number, int)):
            return number
    if kind in ("null", "bool", "int", "float"):
        raise ValueError(f"{show(text)} is not a valid {_tag_name(tag)}")
    raise ValueError(f"unsupported YAML tag {_tag_name(tag)}: policies hold text, numbers, "
                     "booleans, lists and mappings")


# --- the whole text ----------------------------------------------------------------------


def _line_col(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def parse(text: str, file: str) -> list[Document]:
    """Every non-empty document of ``text``; raise PolicyError if the text is not YAML
    or is past the limits (depth, values)."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as err:
        line, col = _line_col(text, err.start)
        raise PolicyError([Problem(file, line, col, "", f"text is not valid Unicode: "
                                    f"{printable(text[err.start:err.end])}")]) from None
    try:
        roots = _compose(raw)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(m) for m in (err.context, err.problem) if m) or "invalid YAML"
        raise PolicyError([Problem(file, line, col, "", f"YAML syntax error: {message}")]) \
            from None
    except yaml.reader.ReaderError as err:
        start = len(raw[:err.position].decode("utf-8", "replace"))
        line, col = _line_col(text, start)
        raise PolicyError([Problem(file, line, col, "", "YAML syntax error: unacceptable "
                                    f"character {show(text[start:start + 1])}: "
                                    f"{err.reason}")]) from None
    except yaml.YAMLError as err:
        raise PolicyError([Problem(file, 1, 1, "", f"YAML syntax error: {err}")]) from None
    except _Abort as abort:
        line, col, path, message = abort.where
        raise PolicyError([Problem(file, line + 1, col + 1, format_path(path), message)]) \
            from None
    docs: list[Document] = []
    for root in roots:
        if root.kind == "scalar" and root.plain and root.value in _NULLS:
            continue                   # an empty document (a comment, a lone ---)
        try:
            docs.append(Document(file, root))
        except _Abort as abort:
            line, col, path, message = abort.where
            raise PolicyError([Problem(file, line + 1, col + 1, format_path(path),
                                        message)]) from None
    return docs
