"""Child processes of the simulated control plane: start with a log, stop for certain.

Each server runs in its own session (process group), writing stdout and stderr to
a log file in the workdir. Stopping sends SIGTERM to the whole group, waits a
grace period, then SIGKILLs it. A registry of live processes is stopped by an
`atexit` hook and on SIGTERM/SIGHUP, so an interpreter that is told to quit never
leaves a server behind.

I/O: spawns and signals processes. Caller: simulations.kube.controlplane.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

__all__ = ["ManagedProcess", "is_running", "log_tail"]

# kube-apiserver drains in about a second; when its etcd is gone it never
# finishes draining, and the data is throwaway, so the grace period is short.
STOP_GRACE_S = 5.0
KILL_WAIT_S = 10.0

# Insertion-ordered, so the safety net stops the newest (the apiserver) first.
_live: dict[ManagedProcess, None] = {}
_live_lock = threading.Lock()
_safety_net_installed = False


class ManagedProcess:
    """One server process in its own process group, with its output in `log_path`."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_path
        _install_safety_net()
        with log_path.open("ab") as log:
            # start_new_session: signals reach any child the server forks, and a
            # Ctrl-C in the terminal reaches only this Python process, which
            # then stops the servers in order instead of all dying at once.
            self._popen = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=cwd, start_new_session=True,
            )
        with _live_lock:
            _live[self] = None

    @property
    def pid(self) -> int:
        return self._popen.pid

    def exit_code(self) -> int | None:
        """None while running, else the exit status (negative: killed by that signal)."""
        return self._popen.poll()

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds; always reaps."""
        try:
            if self._popen.poll() is None:
                _signal_group(self.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._popen.wait(timeout=grace)
            # The leader may be gone while something it forked is not.
            _signal_group(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=KILL_WAIT_S)
        finally:
            with _live_lock:
                _live.pop(self, None)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def is_running(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) process."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    # The state letter follows the parenthesised command name.
    return status.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, or a note that it is missing."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError as error:
        return f"(no log: {error})"
    return "\n".join(text.splitlines()[-lines:])


def stop_all() -> None:
    """Stop every process still registered, newest first (the apiserver before its etcd)."""
    with _live_lock:
        processes = list(reversed(_live))
    for process in processes:
        process.stop(grace=2.0)


def _on_termination(signum: int, _frame: FrameType | None) -> None:
    # Turn the signal into SystemExit so `with ControlPlane()` blocks unwind and
    # remove their workdirs; stop_all also runs from atexit.
    stop_all()
    raise SystemExit(128 + signum)


def _install_safety_net() -> None:
    """Once per interpreter: stop live servers at exit and on SIGTERM/SIGHUP."""
    global _safety_net_installed
    if _safety_net_installed:
        return
    _safety_net_installed = True
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for signum in (signal.SIGTERM, signal.SIGHUP):
        # Only where nobody else has claimed the signal (pytest does not).
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _on_termination)

