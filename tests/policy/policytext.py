"""Shipped policies as text, edited in one place, and their problems as printed lines.

Shared by the policy tests (bounds, YAML, CLI). Pure: reads the example files once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.policy import PolicyError
from controller.policy.loader import load_text

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
CONSERVATIVE = (POLICIES / "conservative.yaml").read_text()
DRIFT = (POLICIES / "drift.yaml").read_text()


def mutate(old: str, new: str, source: str = CONSERVATIVE) -> str:
    """``source`` with the first ``old`` replaced by ``new`` (which must be there)."""
    assert old in source, old
    return source.replace(old, new, 1)


def problems_of(text: str, base_dir: Path = POLICIES) -> list[str]:
    """The problems of ``text`` as printed; each must be one printable line."""
    with pytest.raises(PolicyError) as caught:
        load_text(text, "p.yaml", base_dir=base_dir)
    rendered = [str(p) for p in caught.value.problems]
    assert all(line.isprintable() for line in rendered), rendered   # one line, no escapes
    return rendered


def line_of(text: str, needle: str) -> int:
    return text[:text.index(needle)].count("\n") + 1
