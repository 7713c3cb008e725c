"""Read rollout policies from YAML and report every problem as ``file:line:column: path: message``.

Pure apart from reading the policy files themselves (and the reference
histogram files they name). Callers: the CLI (`rollwise policy validate`) and the
controller's policy store. Whatever the input, the only exception that leaves
this module is :class:`PolicyError`, holding one :class:`Problem` per mistake.

YAML is parsed with ruamel.yaml because it keeps the line and column of every
key and value and rejects duplicate keys; the parsed tree is turned into plain
Python data plus an index of positions, validated by the pydantic models in
``model``, and pydantic's error locations are mapped back onto that index.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from controller.policy.model import (
    DistributionCheck,
    FieldIssue,
    Histogram,
    RolloutPolicy,
)

MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 64

DataPath = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Problem:
    """One mistake in one file, located like a compiler error (1-based line and column)."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(Exception):
    """One or more problems with policy files; ``str()`` is one line per problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class LoadedPolicy:
    """A valid policy and where it was defined."""

    policy: RolloutPolicy
    file: str
    line: int

    @property
    def name(self) -> str:
        return self.policy.name


@dataclass
class _Positions:
    """Where each value (and each mapping key) of a document stands, by data path."""

    values: dict[DataPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[DataPath, tuple[int, int]] = field(default_factory=dict)


class _Document:
    """A YAML document as plain data, with positions, and the problems found building it."""

    def __init__(self, file: str, root: Any, start: tuple[int, int]) -> None:
        self.file = file
        self.positions = _Positions()
        self.problems: list[Problem] = []
        self._nodes = 0
        self._active: set[int] = set()
        self.positions.values[()] = start
        self.data = self._plain(root, (), start, 0)

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

    def _plain(self, node: Any, path: DataPath, pos: tuple[int, int], depth: int) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Abort(self.problem(path, f"document has more than {MAX_NODES} values"))
        if depth > MAX_DEPTH:
            raise _Abort(self.problem(path, f"document is nested more than {MAX_DEPTH} levels"))
        if isinstance(node, Mapping | list):
            if id(node) in self._active:
                raise _Abort(self.problem(path, "recursive YAML alias"))
            self._active.add(id(node))
            try:
                if isinstance(node, Mapping):
                    return self._mapping(node, path, depth)
                return self._sequence(node, path, depth)
            finally:
                self._active.discard(id(node))
        return self._scalar(node, path)

    def _mapping(self, node: Mapping[Any, Any], path: DataPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        lc = getattr(node, "lc", None)
        for key, value in node.items():
            key_pos = _lc(lambda k=key: lc.key(k)) if lc else None
            value_pos = _lc(lambda k=key: lc.value(k)) if lc else None
            parent_pos = self.positions.values.get(path, (0, 0))
            if not isinstance(key, str) or isinstance(key, bool):
                line, col = key_pos or parent_pos
                self.problems.append(Problem(self.file, line + 1, col + 1, format_path(path),
                                             f"keys must be text, got {key!r}"))
                continue
            child = (*path, key)
            self.positions.keys[child] = key_pos or parent_pos
            self.positions.values[child] = value_pos or key_pos or parent_pos
            out[key] = self._plain(value, child, self.positions.values[child], depth + 1)
        return out

    def _sequence(self, node: list[Any], path: DataPath, depth: int) -> list[Any]:
        lc = getattr(node, "lc", None)
        out = []
        for i, item in enumerate(node):
            child = (*path, i)
            pos = (_lc(lambda i=i: lc.item(i)) if lc else None) or self.positions.values[path]
            self.positions.values[child] = self.positions.keys[child] = pos
            out.append(self._plain(item, child, pos, depth + 1))
        return out

    def _scalar(self, node: Any, path: DataPath) -> Any:
        if node is None or isinstance(node, bool):
            return node
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if isinstance(node, str):
            return str(node)
        if isinstance(node, date):
            return node.isoformat()  # pydantic then names the field that wanted something else
        self.problems.append(self.problem(path, f"unsupported YAML value {node!r}"))
        return None


class _Abort(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def _lc(get: Any) -> tuple[int, int] | None:
    """ruamel's line/column lookups raise for merged keys and the like; treat as unknown."""
    try:
        line, col = get()
        return int(line), int(col)
    except Exception:
        return None


def format_path(path: DataPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _parse_yaml(text: str, file: str) -> list[_Document]:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    docs: list[_Document] = []
    try:
        for root in yaml.load_all(text):
            if root is None:
                continue
            lc = getattr(root, "lc", None)
            start = (int(lc.line), int(lc.col)) if lc is not None else (0, 0)
            docs.append(_Document(file, root, start))
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(m) for m in (err.context, err.problem) if m) or "invalid YAML"
        raise PolicyError([Problem(file, line, col, "", f"YAML syntax error: {message}")]) from err
    except _Abort as abort:
        raise PolicyError([abort.problem]) from None
    except (YAMLError, RecursionError, ValueError, TypeError, AttributeError) as err:
        # The parser's other failures carry no position; never let them escape as a traceback.
        raise PolicyError([Problem(file, 1, 1, "", f"cannot parse YAML: {err}")]) from err
    return docs


# --- pydantic errors -> problems ---------------------------------------------------------

@functools.cache
def _known_fields() -> frozenset[str]:
    """Every field name (as written in YAML) of every policy model, for "did you mean"."""
    names: set[str] = set()
    seen: set[type[BaseModel]] = set()
    pending: list[type[BaseModel]] = [RolloutPolicy]
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            names.add(info.alias or name)
            pending.extend(_model_types(info.annotation))
    return frozenset(names)


def _model_types(annotation: Any) -> Iterable[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _model_types(arg)
    for meta in getattr(annotation, "__metadata__", ()) or ():
        yield from _model_types(meta)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and origin is not annotation:
        yield from _model_types(origin)


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _data_path(doc_data: Any, loc: Sequence[str | int]) -> DataPath:
    """Follow pydantic's ``loc`` through the data, skipping parts that are not data keys
    (union tags, validator names). A missing field ends the path."""
    path: list[str | int] = []
    node = doc_data
    for part in loc:
        if _has(node, part):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict | list) and (isinstance(part, int) or _is_field_name(part)):
            path.append(part)  # a missing field or an index that is not there
            node = None
        # else: a union tag or a function name in pydantic's loc: not part of the data
    return tuple(path)


def _is_field_name(part: str | int) -> bool:
    return isinstance(part, str) and part in _known_fields()


def _problems_from_validation(doc: _Document, error: ValidationError) -> list[Problem]:
    problems = []
    for err in error.errors(include_url=False):
        loc: list[str | int] = list(err["loc"])
        message = err["msg"]
        kind = err["type"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldIssue):
            loc += cause.path
            message = cause.message
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("kind")
            tag = (err.get("ctx") or {}).get("tag")
            expected = (err.get("ctx") or {}).get("expected_tags", "")
            message = (f"unknown kind {tag!r}; expected one of {expected}"
                       if kind == "union_tag_invalid" else f"kind is required: one of {expected}")
        path = _data_path(doc.data, loc)
        if kind == "missing":
            message = "required field is missing"
        elif kind == "extra_forbidden":
            field_name = str(path[-1]) if path else "?"
            close = difflib.get_close_matches(field_name, sorted(_known_fields()), n=1, cutoff=0.75)
            message = f"unknown field {field_name!r}" + (
                f" (did you mean {close[0]!r}?)" if close else "")
            problems.append(doc.problem(path, message, at_key=True))
            continue
        elif kind != "value_error" and "input" in err and not kind.startswith("union_tag"):
            message = f"{message}, got {_show(err['input'])}"
        problems.append(doc.problem(path, message))
    return problems


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- public API ------------------------------------------------------------------------


def load_text(text: str, file: str, base_dir: Path | None = None) -> list[LoadedPolicy]:
    """Validate every YAML document in ``text`` as a policy; raise PolicyError on any problem."""
    docs = _parse_yaml(text, file)
    if not docs:
        raise PolicyError([Problem(file, 1, 1, "", "no policy in file (it is empty)")])
    problems: list[Problem] = []
    loaded: list[LoadedPolicy] = []
    for doc in docs:
        problems += doc.problems
        if not isinstance(doc.data, dict):
            problems.append(doc.problem((), "a policy must be a mapping with apiVersion, kind, "
                                            f"metadata and spec, got {_show(doc.data)}"))
            continue
        try:
            policy = RolloutPolicy.model_validate(doc.data)
        except ValidationError as err:
            problems += _problems_from_validation(doc, err)
            continue
        policy, ref_problems = _resolve_reference_files(policy, doc, base_dir)
        problems += ref_problems
        if not doc.problems and not ref_problems:
            loaded.append(LoadedPolicy(policy, file, doc.locate(())[0]))
    if problems:
        raise PolicyError(problems)
    return loaded


def load_file(path: Path) -> list[LoadedPolicy]:
    """Load one policy file (it may hold several YAML documents)."""
    text = _read(path, str(path))
    return load_text(text, str(path), base_dir=path.parent)


def load_files(paths: Iterable[Path]) -> tuple[list[LoadedPolicy], list[Problem]]:
    """Load many files; valid policies and all problems, including names defined twice.

    A file with any problem contributes no policy, so nothing is half-applied.
    """
    policies: list[LoadedPolicy] = []
    problems: list[Problem] = []
    by_name: dict[str, LoadedPolicy] = {}
    for path in paths:
        try:
            file_policies = load_file(path)
        except PolicyError as err:
            problems += err.problems
            continue
        for loaded in file_policies:
            first = by_name.get(loaded.name)
            if first is not None:
                problems.append(Problem(loaded.file, loaded.line, 1, "metadata.name",
                                        f"policy {loaded.name!r} is already defined at "
                                        f"{first.file}:{first.line}"))
                continue
            by_name[loaded.name] = loaded
            policies.append(loaded)
    return policies, sorted(problems)


def policy_files(directory: Path) -> list[Path]:
    """The policy files of a directory (a mounted ConfigMap): *.yaml and *.yml, sorted.

    Hidden entries are skipped: Kubernetes mounts ConfigMaps through ``..data`` links.
    """
    return sorted(p for p in directory.iterdir()
                  if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file())


def _read(path: Path, file: str) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise PolicyError([Problem(file, 1, 1, "", f"cannot read file: {err.strerror or err}")]) \
            from err
    if len(raw) > MAX_FILE_BYTES:
        raise PolicyError([Problem(file, 1, 1, "", f"file is larger than {MAX_FILE_BYTES} bytes")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PolicyError([Problem(file, 1, 1, "", f"file is not UTF-8 text: {err.reason} at "
                                                   f"byte {err.start}")]) from err


def _resolve_reference_files(
    policy: RolloutPolicy, doc: _Document, base_dir: Path | None
) -> tuple[RolloutPolicy, list[Problem]]:
    """Load training reference histograms given by file, so that checks always carry them."""
    checks = list(policy.spec.analysis.checks)
    problems: list[Problem] = []
    for i, check in enumerate(checks):
        if not isinstance(check, DistributionCheck) or check.reference.file is None:
            continue
        here: DataPath = ("spec", "analysis", "checks", i, "reference", "file")
        ref_path = Path(check.reference.file)
        if not ref_path.is_absolute():
            ref_path = (base_dir or Path.cwd()) / ref_path
        try:
            ref_docs = _parse_yaml(_read(ref_path, str(ref_path)), str(ref_path))
        except PolicyError as err:
            problems.append(doc.problem(here, f"invalid reference file {str(ref_path)!r}"))
            problems += err.problems
            continue
        if len(ref_docs) != 1:
            problems.append(doc.problem(here, f"reference file {str(ref_path)!r} must hold "
                                              "exactly one histogram"))
            continue
        try:
            histogram = Histogram.model_validate(ref_docs[0].data)
        except ValidationError as err:
            problems.append(doc.problem(here, f"invalid reference file {str(ref_path)!r}"))
            problems += _problems_from_validation(ref_docs[0], err)
            continue
        reference = check.reference.model_copy(update={"histogram": histogram})
        checks[i] = check.model_copy(update={"reference": reference})
    if problems or checks == list(policy.spec.analysis.checks):
        return policy, problems
    analysis = policy.spec.analysis.model_copy(update={"checks": checks})
    spec = policy.spec.model_copy(update={"analysis": analysis})
    return policy.model_copy(update={"spec": spec}), problems
