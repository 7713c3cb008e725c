"""What the seam promises about imports and words, checked: ``rollwise --help`` never loads
the kserve SDK (it took seconds: one ``from kserve import constants`` pulled in some 1,600
modules), and the state machine and the reconciler never name a serving layer (the
routers do). The layers themselves are import-linter's (``.importlinter``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_cli_help_does_not_import_the_kserve_sdk() -> None:
    probe = ("import sys\n"
             "from controller.cli import main\n"
             "try:\n"
             "    main(['--help'])\n"
             "except SystemExit:\n"
             "    pass\n"
             "print(sorted(m for m in sys.modules if m == 'kserve' or m.startswith('kserve.')))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    assert "Usage: " in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("module", ["controller/rollout/machine.py",
                                    "controller/rollout/state.py",
                                    "controller/rollout/snapshot.py",
                                    "controller/reconciler.py"])
def test_the_machine_and_the_reconciler_never_name_a_serving_layer(module: str) -> None:
    text = (ROOT / module).read_text()
    named = re.findall(r"kserve|knative|canaryTrafficPercent|InferenceService|predictor",
                       text, flags=re.IGNORECASE)
    assert named == [], f"{module} names {sorted(set(named))}: that is a router's word"
