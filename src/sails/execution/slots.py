"""The CASA slots of one orchestrator, shared by the stages it runs and their extra jobs.

The engine takes a slot for every CPU-pool stage it starts; a stage whose work splits into
jobs that may run at once (the channel chunks of a large cube) borrows the slots that are
free, and gives them back as its jobs end, so ``execution.casa_slots`` bounds the CASA
processes of the whole run. Outside the engine (``sails image``) a stage gets a pool of its
own with its own slot taken. A stage whose CASA jobs are done gives its slot back before it
ends (:func:`release_own`: the image stages' previews are drawn in the orchestrator, about
3.5 s of a small survey's run, and need no CASA slot), so the next CASA stage starts.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable


class SlotPool:
    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self._used = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self._used >= self.slots:
                return False
            self._used += 1
            return True

    def release(self) -> None:
        with self._lock:
            if self._used <= 0:
                raise RuntimeError("slot released twice")
            self._used -= 1

    @property
    def used(self) -> int:
        return self._used


CPU_SLOTS: contextvars.ContextVar[SlotPool | None] = contextvars.ContextVar(
    "sails_cpu_slots", default=None)


def current(slots: int) -> SlotPool:
    """The engine's CPU pool (the calling stage holds one of its slots), else a pool of
    ``slots`` with the caller's slot taken."""
    pool = CPU_SLOTS.get()
    if pool is None:
        pool = SlotPool(slots)
        pool.try_acquire()
        CPU_SLOTS.set(pool)
    return pool


class SlotLease:
    """The slot a running stage holds, given back once: by the stage when its CASA work is
    done (:func:`release_own`) or by the engine when the stage ends, whichever is first.
    ``on_release`` wakes the engine to start the next stage in it."""

    def __init__(self, pool: SlotPool, on_release: Callable[[], None] | None = None) -> None:
        self.pool = pool
        self._on_release = on_release
        self._held = True
        self._lock = threading.Lock()

    def release(self) -> bool:
        """Give the slot back; False if it already was."""
        with self._lock:
            if not self._held:
                return False
            self._held = False
            self.pool.release()
        if self._on_release is not None:
            self._on_release()
        return True

    @property
    def held(self) -> bool:
        return self._held


OWN_SLOT: contextvars.ContextVar[SlotLease | None] = contextvars.ContextVar(
    "sails_own_slot", default=None)


def release_own() -> None:
    """The calling stage's CASA work is done: its slot goes back to the engine before the
    stage ends (a no-op outside the engine, or once given back)."""
    lease = OWN_SLOT.get()
    if lease is not None:
        lease.release()
