"""
Keeping the L{StateStore}'s snapshot on disk across restarts.

L{StatePersistence} loads the state file once at start-up (removing the
temporary files of writes that were killed), writes a new
snapshot every C{interval} seconds while the store is dirty (its
C{state-flush} job) (in a thread,
never on the request path) and once more at shutdown. Writes are atomic
(L{atomic_write}): a crash leaves the old file or the new one, never half
of one. A state file that cannot be used is set aside, never fatal.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from cliproxyd.fileio import atomic_write, remove_stale_temps
from cliproxyd.service import Periodic, ServiceTree
from cliproxyd.state.store import StateStore

RunInThread = Callable[..., "Deferred[Any]"]


class StatePersistence(ServiceTree):
    """
    Loads the store from C{path} at start, flushes it there every
    C{interval} seconds while C{store.dirty}, and once more at stop.

    C{run_in_thread(f, *args)} runs the file write off the reactor thread
    and returns a Deferred (L{deferToThread} by default; tests pass a
    synchronous one). Writes never overlap: a flush asked for while one is
    in flight runs after it.
    """

    name = "state"
    log = Logger()

    def __init__(
        self,
        store: StateStore,
        path: str,
        clock: IReactorTime,
        interval: float = 5.0,
        run_in_thread: RunInThread | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.path = path
        self._clock = clock
        self._run_in_thread: RunInThread = run_in_thread or deferToThread
        self._writing: Deferred[None] | None = None
        self._after_write: list[Deferred[None]] = []
        #: load() has run (at start, before the first generation is built)
        self.loaded = False
        Periodic("state-flush", interval, self.flush, clock).setServiceParent(self)

    # -- loading --------------------------------------------------------------------

    def load(self) -> None:
        """
        Restore the store from the state file, if there is one. A file that
        cannot be read, decoded or restored is renamed to
        C{<path>.corrupt-<epoch seconds>} and the store starts empty; this
        never raises.

        First the temporary files of state writes that were killed (kill -9
        during a flush) are removed: only this daemon writes its state file,
        and it has not started writing yet.
        """
        now = self._clock.seconds()
        path = os.path.abspath(self.path)
        remove_stale_temps(os.path.dirname(path), os.path.basename(path).__eq__)
        try:
            self.loaded = True
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            self.log.info("no state file at {path}; starting fresh", path=self.path)
            return
        except Exception as e:
            self._set_aside(e, now)
            return
        try:
            data = json.loads(raw)
            problems = self.store.restore(data, now)
        except Exception as e:
            # ValueError (incl. JSON and Unicode decoding), TypeError and the
            # like: whatever the file holds, it must not stop the daemon.
            self._set_aside(e, now)
            return
        for problem in problems:
            self.log.warn("state file {path}: skipped {problem}", path=self.path, problem=problem)
        self._report(data, problems)

    def _report(self, data: Any, problems: list[str]) -> None:
        """Say what was restored from C{data}."""
        states = data.get("model_states") if isinstance(data, dict) else None
        restored = sum(1 for cred_id in states if self.store.model_states(cred_id)) if isinstance(states, dict) else 0
        self.log.info(
            "restored model states of {count} credentials from {path}",
            count=restored,
            path=self.path,
            problems=len(problems),
        )

    def _set_aside(self, error: BaseException, now: float) -> None:
        aside = f"{self.path}.corrupt-{int(now)}"
        reason = f"{type(error).__name__}: {error}"
        self.log.warn(
            "unusable state file {path} ({reason}); moving it to {aside} and starting fresh",
            path=self.path,
            reason=reason,
            aside=aside,
        )
        try:
            os.replace(self.path, aside)
        except OSError as e:
            self.log.warn(
                "could not move unusable state file {path} to {aside}: {reason}",
                path=self.path,
                aside=aside,
                reason=f"{type(e).__name__}: {e}",
            )

    # -- service ----------------------------------------------------------------------

    def startService(self) -> None:
        if not self.loaded:
            self.load()
        super().startService()

    def stopService(self) -> "Deferred[None]":
        # The flush job stops first, then the last snapshot is written.
        return super().stopService().addCallback(lambda _: self.flush())

    # -- flushing ---------------------------------------------------------------------

    def flush(self) -> "Deferred[None]":
        """
        Write a snapshot if the store is dirty. The Deferred fires when the
        write is over; a failed write is logged and leaves the store dirty,
        so the next flush retries. It never fails.
        """
        if self._writing is not None:
            waiter: Deferred[None] = Deferred()
            self._after_write.append(waiter)
            return waiter.addCallback(lambda _: self.flush())
        if not self.store.dirty:
            return succeed(None)
        try:
            snapshot = self.store.snapshot(self._clock.seconds())
            data = json.dumps(snapshot, separators=(",", ":")).encode()
        except Exception:
            self.log.failure("could not snapshot state for {path}", path=self.path)
            return succeed(None)
        self.store.dirty = False
        self._writing = d = maybeDeferred(self._run_in_thread, atomic_write, self.path, data)
        d.addCallbacks(lambda _: None, self._write_failed)
        d.addBoth(self._write_done)
        return d

    def _write_failed(self, failure: Failure) -> None:
        self.store.dirty = True
        self.log.failure("could not write state file {path}", failure, path=self.path)

    def _write_done(self, _: object) -> None:
        self._writing = None
        waiters, self._after_write = self._after_write, []
        for waiter in waiters:
            waiter.callback(None)
