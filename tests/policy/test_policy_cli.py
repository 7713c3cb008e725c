"""``rollwise policy validate`` never prints a traceback: problems one line each, exit 1.

Before the fix an overflowing duration printed a traceback, an unreadable directory
escaped as PermissionError, and a FIFO named on the command line hung it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli import main
from tests.policy.policytext import ROOT, line_of, mutate


def _validate(*paths: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["policy", "validate", *map(str, paths)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_cli_reports_an_overflowing_duration_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(mutate("timeout: 8h", "timeout: 99999999999h"))
    code, output = _validate(bad)
    assert code == 1
    assert f"{bad}:{line_of(bad.read_text(), '99999999999h')}:20: " \
           "spec.steps[2].pause.approval.timeout: " in output
    assert "at most 30d, got '99999999999h'" in output


def test_cli_reports_an_unreadable_directory(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path) -> object:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)    # what a non-root user gets on mode 000
    code, output = _validate(tmp_path)
    assert code == 1
    assert f"{tmp_path}:1:1: cannot list policy files: Permission denied" in output


@pytest.mark.timeout(20)
def test_cli_reports_a_fifo_instead_of_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    code, output = _validate(tmp_path / "pipe.yaml")
    assert code == 1 and "not a regular file" in output


def test_the_real_cli_prints_one_line_per_problem_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(mutate("  name: conservative\n", '  name: conservative\n  "a\\nb": 1\n')
                   .replace("timeout: 8h", "timeout: 99999999999h"))
    run = subprocess.run([sys.executable, "-m", "controller", "policy", "validate", str(bad)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    lines = run.stderr.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("2 problem(s)"), run.stderr
