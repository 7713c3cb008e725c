"""The informer and a level-triggered work loop for the world's simulated controllers.

``Informer`` is the controller's own (``controller.kube.informer``: list, then watch from
the list's resourceVersion with bookmarks, re-list on 410 Gone, back off on errors, a
cache of raw JSON, ``on_change()`` after every change), re-exported here for the world.
``LevelLoop`` runs one ``reconcile()`` at a time in its own thread whenever it is
kicked (coalescing kicks that arrive while it runs) or when the time ``reconcile`` asked
to be woken at has come: the simulated node agent and gateway recompute what they own from
the caches, level-based, instead of reacting to single events.

I/O: the informer reads from the API server (list and watch through the ``kubernetes``
client); the loop only runs threads. Callers: simulations.nodes, simulations.gateway.
(simulations.kserve.controller keeps its own informer, older than this one.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from controller.kube.informer import Informer, JsonObject, ObjectKey, object_key

__all__ = ["Informer", "JsonObject", "LevelLoop", "ObjectKey", "object_key"]

LOG = logging.getLogger(__name__)

_MAX_BACKOFF_S = 5.0
_STOP_TIMEOUT_S = 10.0


class LevelLoop:
    """Calls ``reconcile()`` in one thread when kicked or when due; ``reconcile`` returns
    how many seconds until it wants to run again (None: only when kicked). An exception is
    logged and retried with a backoff."""

    def __init__(self, name: str, reconcile: Callable[[], float | None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._reconcile = reconcile
        self._clock = clock
        self._wakeup = threading.Condition()
        self._kicked = False
        self._due: float | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.passes = 0   # completed reconciles, for tests and logs

    def kick(self) -> None:
        with self._wakeup:
            self._kicked = True
            self._wakeup.notify_all()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"loop {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"loop-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT_S)
            if self._thread.is_alive():
                LOG.warning("loop %s did not stop in time", self.name)

    def _wait(self) -> bool:
        """Wait for a kick or the due time; False when stopping."""
        with self._wakeup:
            while not self._stopping:
                now = self._clock()
                if self._kicked or (self._due is not None and now >= self._due):
                    self._kicked, self._due = False, None
                    return True
                timeout = 0.2 if self._due is None else min(0.2, self._due - now)
                self._wakeup.wait(max(timeout, 0.001))
            return False

    def _run(self) -> None:
        backoff = 0.2
        while self._wait():
            try:
                after = self._reconcile()
                backoff = 0.2
            except Exception:
                LOG.exception("%s: reconcile failed; retrying in %.1fs", self.name, backoff)
                after, backoff = backoff, min(backoff * 2, _MAX_BACKOFF_S)
            self.passes += 1
            if after is not None:
                with self._wakeup:
                    due = self._clock() + max(after, 0.0)
                    self._due = due if self._due is None else min(self._due, due)
