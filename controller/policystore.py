"""The controller's live set of policies: loaded from the policy directory (a mounted
ConfigMap), reloaded when it changes, and never replaced by an invalid version.

I/O: reads the directory. When a file becomes invalid, the last good version of each
policy it defined stays in force, so a bad edit never disturbs a running rollout; the
problems are kept for reporting (log, Event on the InferenceServices that use the
policy, metric).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from controller.policy.loader import LoadedPolicy, Problem, load_files, policy_files
from controller.policy.model import RolloutPolicy

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Reload:
    """What one reload changed."""

    changed: bool
    problems: tuple[Problem, ...] = ()
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    kept_stale: tuple[str, ...] = ()       # invalid now; the last good version stays


@dataclass
class PolicyStore:
    directory: Path
    _policies: dict[str, LoadedPolicy] = field(default_factory=dict)
    _fingerprint: str = ""
    _problems: tuple[Problem, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, name: str) -> RolloutPolicy | None:
        with self._lock:
            loaded = self._policies.get(name)
        return loaded.policy if loaded else None

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._policies)

    @property
    def problems(self) -> tuple[Problem, ...]:
        return self._problems

    def problems_for(self, name: str) -> list[Problem]:
        """Problems in the file that (last) defined ``name``."""
        with self._lock:
            loaded = self._policies.get(name)
        return [p for p in self._problems if loaded is not None and p.file == loaded.file]

    def _fingerprint_now(self) -> str:
        digest = hashlib.sha256()
        try:
            files = policy_files(self.directory)
        except OSError as err:
            return f"error:{err}"
        for path in files:
            digest.update(str(path).encode())
            try:
                digest.update(path.read_bytes())
            except OSError as err:
                digest.update(str(err).encode())
            # Reference histograms live beside the policies and count as policy content.
        for ref in sorted(self.directory.glob("**/*")):
            if ref.is_file() and ref.parent != self.directory:
                digest.update(str(ref).encode())
                digest.update(ref.read_bytes())
        return digest.hexdigest()

    def reload(self) -> Reload:
        """Re-read the directory if anything in it changed."""
        fingerprint = self._fingerprint_now()
        if fingerprint == self._fingerprint:
            return Reload(changed=False)
        try:
            files = policy_files(self.directory)
        except OSError as err:
            problem = Problem(str(self.directory), 1, 1, "", f"cannot list policies: {err}")
            self._problems = (problem,)
            self._fingerprint = fingerprint
            log.error("policy directory unreadable", directory=str(self.directory),
                      error=str(err))
            return Reload(changed=True, problems=(problem,),
                          kept_stale=tuple(self.names()))
        loaded, problems = load_files(files)
        fresh = {p.name: p for p in loaded}
        bad_files = {p.file for p in problems}
        with self._lock:
            previous = dict(self._policies)
            added = tuple(sorted(set(fresh) - set(previous)))
            updated = tuple(sorted(n for n in set(fresh) & set(previous)
                                   if fresh[n].policy != previous[n].policy))
            # A policy whose file is now broken keeps its last good version.
            kept = tuple(sorted(n for n, p in previous.items()
                                if n not in fresh and p.file in bad_files))
            self._policies = {**{n: previous[n] for n in kept}, **fresh}
            self._problems = tuple(problems)
            self._fingerprint = fingerprint
        for problem in problems:
            log.error("invalid policy", problem=str(problem))
        if added or updated:
            log.info("policies loaded", added=list(added), updated=list(updated))
        return Reload(True, tuple(problems), added, updated, kept)
