"""deploy/Dockerfile (which cannot be built here: no Docker engine) is checked by reading
it: the entrypoint is the command the end-to-end tests run, the console script exists,
and the final stage fits the locked-down pod (non-root, read-only root filesystem)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import yaml
from deploy_helpers import DEPLOY, ROOT, Manifest, controller_container, find

from controller.cli import main

Render = Callable[[Path], list[Manifest]]
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
CLI_TIMEOUT_S = 60

Instruction = tuple[str, str]


def _stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions per stage, continuation lines joined and comments
    dropped (as Docker's parser does); instructions before the first FROM are stage 0."""
    stages: list[list[Instruction]] = [[]]
    logical = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        logical += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        keyword, _, rest = logical.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), rest.strip()))
        logical = ""
    return stages


def _final() -> list[Instruction]:
    return _stages()[-1]


def _env(stage: list[Instruction]) -> dict[str, str]:
    pairs = " ".join(rest for keyword, rest in stage if keyword == "ENV")
    return dict(re.findall(r"(\w+)=(\S+)", pairs))


def _command_the_tests_run() -> list[str]:
    """`rollwise <args>` as simulations/controller_process.py starts the controller (it runs
    `python -m controller <args>`, and controller/__main__.py is the rollwise CLI)."""
    source = (ROOT / "simulations" / "controller_process.py").read_text()
    match = re.search(r'\[sys\.executable, "-m", "controller"((?:, "[^"]+")*)\]', source)
    assert match, "simulations/controller_process.py no longer starts `-m controller ...`"
    main_module = (ROOT / "controller" / "__main__.py").read_text()
    assert "from controller.cli import main" in main_module
    return ["rollwise", *re.findall(r'"([^"]+)"', match[1])]


# -- the entrypoint --------------------------------------------------------------------


def test_entrypoint_is_the_command_the_end_to_end_tests_run() -> None:
    (entrypoint,) = [rest for keyword, rest in _final() if keyword == "ENTRYPOINT"]
    # Exec form: the controller is PID 1 and receives SIGTERM itself.
    assert json.loads(entrypoint) == ["rollwise", "run"] == _command_the_tests_run()
    assert not [rest for keyword, rest in _final() if keyword == "CMD"], "no extra arguments"
    # The pod adds nothing to it either (the base Deployment is plain YAML).
    deployment = yaml.safe_load((DEPLOY / "base" / "deployment.yaml").read_text())
    container = controller_container([deployment])
    assert "command" not in container and "args" not in container


def test_the_console_script_exists_and_has_run() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["rollwise"] == "controller.cli:main"
    assert "run" in main.commands
    # Installed in this environment, as `pip install .` installs it in the image.
    script = Path(sys.executable).with_name("rollwise")
    found = script if script.is_file() else shutil.which("rollwise")
    assert found, "the rollwise console script is not installed (pip install -e .)"
    result = subprocess.run([str(found), "run", "--help"], capture_output=True, text=True,
                            timeout=CLI_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    # The build stage runs the same check, so a broken entrypoint fails the image build.
    assert any("rollwise run --help" in rest for keyword, rest in _stages()[1]
               if keyword == "RUN")


# -- how the image is built ------------------------------------------------------------


def test_both_stages_use_one_pinned_slim_python_311() -> None:
    stages = _stages()
    (arg,) = [rest for keyword, rest in stages[0] if keyword == "ARG"]
    name, _, image = arg.partition("=")
    assert name == "PYTHON_IMAGE"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image
    froms = [rest.split()[0] for stage in stages[1:] for keyword, rest in stage
             if keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_the_build_stage_installs_the_pinned_set() -> None:
    build = _stages()[1]
    runs = " ".join(rest for keyword, rest in build if keyword == "RUN")
    assert "pip install -c constraints.txt ." in runs
    copied = [rest.split()[:-1] for keyword, rest in build if keyword == "COPY"]
    sources = [src.rstrip("/") for srcs in copied for src in srcs]
    assert {"constraints.txt", "pyproject.toml", "controller"} <= set(sources)
    allowed = [line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.startswith("!")]
    for source in sources:
        assert source in allowed, f"{source} is excluded from the build context"
        assert (ROOT / source).exists(), source


def test_the_final_stage_has_no_build_tools() -> None:
    final = _final()
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert "apt-get install" not in runs and "pip install" not in runs
    assert "pip uninstall" in runs
    assert [rest for keyword, rest in final if keyword == "COPY"] == [
        "--from=build /opt/rollwise /opt/rollwise"]


def test_the_final_stage_fits_a_read_only_non_root_pod(render: Render) -> None:
    final = _final()
    (user,) = [rest for keyword, rest in final if keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit(), "runAsNonRoot needs a numeric UID"
    env = _env(final)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # HOME and TMPDIR are the one writable path of the pod: an emptyDir.
    objects = render(DEPLOY / "overlays" / "prod")
    pod = find(objects, "Deployment", "rollwise-controller")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {m["mountPath"] for m in controller_container(objects)["volumeMounts"]
                if "emptyDir" in volumes[m["name"]]}
    for variable in ("HOME", "TMPDIR"):
        assert env[variable] in writable, f"{variable}={env[variable]} is not an emptyDir"
