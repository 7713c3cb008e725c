"""YAML no loader should construct, files no reader should wait on, and our own bugs: each is
one located problem, never an exception or a traceback.

Before the YAML layer was rewritten these were reported at 1:1 without a field (a
5,000-digit integer, an impossible date, deep nesting), twice (a tag: "unsupported YAML
value TaggedScalar(...)" and "valid string, got None"), over two lines (a key with a
newline), or escaped the loader (a bug in a validator).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
import yaml

from controller.policy import PolicyError, RolloutPolicy, load_file, load_files, yamldoc
from controller.policy.loader import load_text, policy_files
from tests.policy.policytext import CONSERVATIVE, DRIFT, POLICIES, line_of, mutate, problems_of


@pytest.mark.timeout(20)
def test_a_reference_that_is_a_fifo_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "reference-histograms").mkdir()
    os.mkfifo(tmp_path / "reference-histograms" / "churn-predictions.yaml")
    policy = tmp_path / "drift.yaml"
    policy.write_text(DRIFT)
    with pytest.raises(PolicyError, match="not a regular file"):
        load_file(policy)


# --- YAML that no loader should construct -------------------------------------------------


def test_an_enormous_integer_is_located_at_its_field() -> None:
    text = mutate("alpha: 0.01", "alpha: " + "9" * 5000)
    (problem,) = problems_of(text)
    assert problem.startswith(f"p.yaml:{line_of(text, 'alpha: 9')}:12: spec.analysis.alpha: ")
    assert "more than 100 digits" in problem and len(problem) < 300


def test_a_date_like_value_is_text_and_gets_the_field_error() -> None:
    text = mutate("alpha: 0.01", "alpha: 2024-13-45")   # was "cannot parse YAML" at 1:1
    (problem,) = problems_of(text)
    assert re.match(rf"p\.yaml:{line_of(text, '2024-13-45')}:12: spec\.analysis\.alpha: "
                    r"Input should be a valid number, got '2024-13-45'", problem), problem


@pytest.mark.parametrize(("depth", "fragment"), [
    (100, "nested more than 64 levels"),                 # ours
    (5000, "exceeded maximum nesting depth"),            # libyaml's own limit
])
def test_deep_nesting_is_refused_where_it_happens(depth: int, fragment: str) -> None:
    text = mutate("description: Slow", "description: " + "[" * depth + "]" * depth + "\n  x: S")
    (problem,) = problems_of(text)
    assert fragment in problem or "nested more than 64 levels" in problem, problem
    assert problem.startswith(f"p.yaml:{line_of(text, '[[[')}:")


@pytest.mark.parametrize(("value", "fragment"), [
    ("!!binary aGVsbG8=", "unsupported YAML tag !!binary"),
    ("!!python/object:os.system x", "unsupported YAML tag !!python/object:os.system"),
    ("!custom x", "unsupported YAML tag !custom"),
    ("!!set {a, b}", "unsupported YAML tag !!set"),
    ("!!int x", "'x' is not a valid !!int"),
])
def test_a_tag_is_one_problem_at_its_field(value: str, fragment: str) -> None:
    text = mutate("name: conservative", f"name: {value}")
    (problem,) = problems_of(text)
    assert ": metadata.name: " in problem and fragment in problem, problem


@pytest.mark.parametrize(("key", "fragment"), [
    ('"a\\nb"', "unknown field 'a\\nb'"), ('"a\\u2028b"', "unknown field 'a\\u2028b'"),
    ('"a\\tb"', "unknown field 'a\\tb'"),   # found by the fuzzer: a tab in the path
    ('"\\x1b[31mred"', "unknown field '\\x1b[31mred'"),
    ('"\\ud800"', "invalid Unicode character escape"),
])
def test_a_problem_is_one_line_whatever_the_key(key: str, fragment: str) -> None:
    problems = problems_of(mutate("  name: conservative\n", f"  name: conservative\n  {key}: 1\n"))
    assert any(fragment in p for p in problems), problems


def test_text_that_is_not_unicode_is_located() -> None:
    (problem,) = problems_of(CONSERVATIVE.replace("name: conservative", "name: \ud800"))
    assert problem.startswith(f"p.yaml:{line_of(CONSERVATIVE, 'name: conservative')}:9: ")
    assert "not valid Unicode" in problem


def test_aliases_anchors_and_merge_keys() -> None:
    text = mutate("  stepDefaults:\n    minDuration: 15m\n    minRequests: 2000\n",
                  "  stepDefaults:\n    <<: &defaults {minDuration: 15m, minRequests: 2000}\n"
                  "    minRequests: 3000\n")
    (loaded,) = load_text(text, "p.yaml")
    assert loaded.policy.spec.step_defaults.min_requests == 3000   # own keys beat merged ones
    (problem,) = problems_of(mutate("minDuration: 10m", "minDuration: *nowhere"))
    assert "refers to no anchor &nowhere" in problem
    (problem,) = problems_of(mutate("  steps:\n", "  steps: &s\n    - *s\n"))
    assert "refers to a value that contains it" in problem


# --- a bug inside validation is reported, logged, and never a traceback ---------------------


def test_an_unexpected_exception_in_validation_is_an_internal_error_problem(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> RolloutPolicy:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(RolloutPolicy, "model_validate", broken)
    with caplog.at_level(logging.ERROR, logger="controller.policy.loader"):
        (problem,) = problems_of(CONSERVATIVE)
    assert problem.startswith("p.yaml:") and "internal error" in problem
    assert "ZeroDivisionError: a bug" in problem
    assert any("internal error" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)


def test_a_path_with_a_nul_is_a_problem_not_a_value_error() -> None:
    with pytest.raises(PolicyError, match="cannot read file"):
        load_file(Path("policy\0.yaml"))


def test_the_pure_python_parser_locates_problems_like_libyaml(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where PyYAML was built without libyaml, its own parser feeds the same composer."""
    from tests.policy.test_invalid_policies import CASES

    def located(text: str) -> list[tuple[int, int, str]]:
        try:
            load_text(text, "p.yaml", base_dir=POLICIES)
        except PolicyError as err:
            return [(p.line, p.column, p.path) for p in err.problems]
        return []

    texts = [case[1] for case in CASES] + [p.read_text() for p in policy_files(POLICIES)]
    with_libyaml = [located(text) for text in texts]
    monkeypatch.setattr(yamldoc, "_Loader", yaml.BaseLoader)
    assert [located(text) for text in texts] == with_libyaml
    assert load_files(policy_files(POLICIES))[0]


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x18", "\x7f"])
def test_a_control_character_is_one_located_line(char: str) -> None:
    """Found by the fuzzer on the old loader: 'cannot parse YAML: unacceptable character
    ... \\n  in "<unicode string>", position N', at 1:1 and over two lines."""
    text = mutate("name: conservative", f"name: conser{char}vative")
    (problem,) = problems_of(text)
    assert problem.startswith(f"p.yaml:{line_of(text, 'name: conser')}:15: YAML syntax error: "
                              "unacceptable character"), problem


def test_an_alias_bomb_is_refused_without_expanding_it() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefghijklmnopqrstuvwxy", "bcdefghijklmnopqrstuvwxyz", strict=True))
    (problem,) = problems_of(bomb)       # 10**26 values if expanded: it would never return
    assert problem.startswith("p.yaml:5:4: e: document has more than 100000 values"), problem
