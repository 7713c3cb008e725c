"""Read rollout policies from YAML and report every problem as ``file:line:column: path: message``.

Pure apart from reading the policy files themselves (and the reference
histogram files they name). Callers: the CLI (`rollwise policy validate`) and the
controller's policy store. Whatever the input, the only exception that leaves
this module is :class:`PolicyError`, holding one :class:`Problem` per mistake: YAML
that is not YAML, values of the wrong type or out of their bounds, files that cannot
be read, and, as a last resort, a bug of ours met while validating (logged as an
internal error, reported as a problem naming the file, never a traceback).

``yamldoc`` turns the text into plain Python data plus an index of positions; the
pydantic models in ``model`` validate it, and pydantic's error locations are mapped
back onto that index. The models bound every value (``model``'s docstring), so a
policy that loads cannot make the controller's arithmetic fail.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import stat
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from controller.policy.model import (
    DistributionCheck,
    FieldIssue,
    Histogram,
    RolloutPolicy,
)
from controller.policy.yamldoc import (
    MAX_DEPTH,
    MAX_NODES,
    DataPath,
    Document,
    PolicyError,
    Problem,
    format_path,
    parse,
    shorten,
    show,
)

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "MAX_NODES", "LoadedPolicy", "PolicyError", "Problem",
           "format_path", "known_fields", "load_file", "load_files", "load_text",
           "policy_files"]

MAX_FILE_BYTES = 1 << 20

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class LoadedPolicy:
    """A valid policy and where it was defined."""

    policy: RolloutPolicy
    file: str
    line: int

    @property
    def name(self) -> str:
        return self.policy.name


def _guarded(file: str, what: str, work: Callable[[], T]) -> T:
    """Run one stage of loading ``file``; an exception that is not a PolicyError is a bug
    of ours: log it as an internal error and report it as a problem of the file."""
    try:
        return work()
    except PolicyError:
        raise
    except Exception as err:
        frame = traceback.extract_tb(err.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        log.error("internal error while %s %s: %s: %s (at %s)", what, file,
                  type(err).__name__, err, where)
        log.debug("internal error while %s %s", what, file, exc_info=True)
        raise PolicyError([Problem(file, 1, 1, "", f"internal error while {what} "
                                   f"(a bug in Rollwise, please report it): "
                                   f"{type(err).__name__}: {shorten(str(err))} at {where}")]
                          ) from None


# --- pydantic errors -> problems ---------------------------------------------------------

@functools.cache
def known_fields() -> frozenset[str]:
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
    return isinstance(part, str) and part in known_fields()


def _problems_from_validation(doc: Document, error: ValidationError) -> list[Problem]:
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
            message = (f"unknown kind {show(tag)}; expected one of {expected}"
                       if kind == "union_tag_invalid" else f"kind is required: one of {expected}")
        path = _data_path(doc.data, loc)
        if format_path(path) in doc.unreadable:
            continue                   # the YAML value was already reported as unreadable
        if kind == "missing":
            message = "required field is missing"
        elif kind == "extra_forbidden":
            field_name = str(path[-1]) if path else "?"
            close = difflib.get_close_matches(field_name, sorted(known_fields()), n=1, cutoff=0.75)
            if field_name in known_fields():
                message = f"field {show(field_name)} does not belong here"
            else:
                message = f"unknown field {show(field_name)}" + (
                    f" (did you mean {close[0]!r}?)" if close else "")
            problems.append(doc.problem(path, message, at_key=True))
            continue
        elif kind != "value_error" and "input" in err and not kind.startswith("union_tag"):
            message = f"{message}, got {show(err['input'])}"
        problems.append(doc.problem(path, message))
    return problems


# --- public API ------------------------------------------------------------------------


def load_text(text: str, file: str, base_dir: Path | None = None) -> list[LoadedPolicy]:
    """Validate every YAML document in ``text`` as a policy; raise PolicyError on any problem."""
    docs = _guarded(file, "parsing", lambda: parse(text, file))
    if not docs:
        raise PolicyError([Problem(file, 1, 1, "", "no policy in file (it is empty)")])
    problems: list[Problem] = []
    loaded: list[LoadedPolicy] = []
    for doc in docs:
        try:
            policy = _guarded(file, "validating", functools.partial(_validate, doc, base_dir))
        except PolicyError as err:
            problems += err.problems
            continue
        loaded.append(LoadedPolicy(policy, file, doc.locate(())[0]))
    first: dict[str, LoadedPolicy] = {}
    for policy_here in loaded:
        earlier = first.setdefault(policy_here.name, policy_here)
        if earlier is not policy_here:
            problems.append(_defined_twice(policy_here, earlier))
    if problems:
        raise PolicyError(problems)
    return loaded


def _defined_twice(loaded: LoadedPolicy, first: LoadedPolicy) -> Problem:
    return Problem(loaded.file, loaded.line, 1, "metadata.name",
                   f"policy {loaded.name!r} is already defined at {first.file}:{first.line}")


def _validate(doc: Document, base_dir: Path | None) -> RolloutPolicy:
    """One document as a policy; raise PolicyError with every problem found in it."""
    problems = list(doc.problems)
    if not isinstance(doc.data, dict):
        problems.append(doc.problem((), "a policy must be a mapping with apiVersion, kind, "
                                        f"metadata and spec, got {show(doc.data)}"))
        raise PolicyError(problems)
    try:
        policy = RolloutPolicy.model_validate(doc.data)
    except ValidationError as err:
        raise PolicyError(problems + _problems_from_validation(doc, err)) from None
    policy, ref_problems = _resolve_reference_files(policy, doc, base_dir)
    if problems or ref_problems:
        raise PolicyError(problems + ref_problems)
    return policy


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
        clashes = [_defined_twice(loaded, by_name[loaded.name]) for loaded in file_policies
                   if loaded.name in by_name]
        if clashes:            # the file's other policies stay out too: nothing half-applied
            problems += clashes
            continue
        by_name.update((loaded.name, loaded) for loaded in file_policies)
        policies += file_policies
    return policies, sorted(problems)


def policy_files(directory: Path) -> list[Path]:
    """The policy files of a directory (a mounted ConfigMap): *.yaml and *.yml, sorted.

    Hidden entries are skipped: Kubernetes mounts ConfigMaps through ``..data`` links.
    Raises OSError when the directory cannot be listed.
    """
    return sorted(p for p in directory.iterdir()
                  if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file())


def _read(path: Path, file: str) -> str:
    """The text of a regular file of at most MAX_FILE_BYTES, as UTF-8.

    Opened without blocking, so that a FIFO (or a device) named as a policy or reference
    file is refused instead of hanging the CLI or the controller's reload."""
    def cannot(message: str) -> PolicyError:
        return PolicyError([Problem(file, 1, 1, "", message)])

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise cannot(f"cannot read file: {err.strerror or err}") from None
    except ValueError as err:          # a NUL in the path
        raise cannot(f"cannot read file: {err}") from None
    with os.fdopen(fd, "rb") as handle:
        try:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise cannot("not a regular file")
            raw = handle.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            raise cannot(f"cannot read file: {err.strerror or err}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise cannot(f"file is larger than {MAX_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise cannot(f"file is not UTF-8 text: {err.reason} at byte {err.start}") from None


def _resolve_reference_files(
    policy: RolloutPolicy, doc: Document, base_dir: Path | None
) -> tuple[RolloutPolicy, list[Problem]]:
    """Load training reference histograms given by file, so that checks always carry them."""
    checks = list(policy.spec.analysis.checks)
    problems: list[Problem] = []
    for i, check in enumerate(checks):
        if not isinstance(check, DistributionCheck) or check.reference.file is None:
            continue
        here: DataPath = ("spec", "analysis", "checks", i, "reference", "file")
        ref_path = (base_dir or Path.cwd()) / check.reference.file
        try:
            ref_docs = parse(_read(ref_path, str(ref_path)), str(ref_path))
        except PolicyError as err:
            problems.append(doc.problem(here, f"invalid reference file {show(str(ref_path))}"))
            problems += err.problems
            continue
        if len(ref_docs) != 1:
            problems.append(doc.problem(here, f"reference file {show(str(ref_path))} must hold "
                                              "exactly one histogram"))
            continue
        try:
            histogram = Histogram.model_validate(ref_docs[0].data)
        except ValidationError as err:
            problems.append(doc.problem(here, f"invalid reference file {show(str(ref_path))}"))
            problems += ref_docs[0].problems + _problems_from_validation(ref_docs[0], err)
            continue
        if ref_docs[0].problems:
            problems.append(doc.problem(here, f"invalid reference file {show(str(ref_path))}"))
            problems += ref_docs[0].problems
            continue
        reference = check.reference.model_copy(update={"histogram": histogram})
        checks[i] = check.model_copy(update={"reference": reference})
    if problems or checks == list(policy.spec.analysis.checks):
        return policy, problems
    analysis = policy.spec.analysis.model_copy(update={"checks": checks})
    spec = policy.spec.model_copy(update={"analysis": analysis})
    return policy.model_copy(update={"spec": spec}), problems
