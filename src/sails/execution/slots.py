"""The CASA slots of one orchestrator, shared by the stages it runs and their extra jobs.

The engine takes a slot for every CPU-pool stage it starts; a stage whose work splits into
jobs that may run at once (the channel chunks of a large cube) borrows the slots that are
free, and gives them back as its jobs end, so ``execution.casa_slots`` bounds the CASA
processes of the whole run. Outside the engine (``sails image``) a stage gets a pool of its
own with its own slot taken.
"""

from __future__ import annotations

import contextvars
import threading


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
