"""Why a stage waits: block reasons as codes with a human message.

A stage row stores both (``reason_code`` and ``reason``): code paths match the code (e.g.
ingest unblocks only what it blocked), people read the message. Add a code here, never a
free-text comparison elsewhere.
"""

from __future__ import annotations

from enum import StrEnum


class Block(StrEnum):
    NEEDS_RESTORE = "needs_restore"  # only raw ASDMs: a calibration restore must come first
    STAGE = "stage"  # the stage itself returned blocked (its reason says why)
    USER = "user"  # a person blocked it
    DISK = "disk"  # its predicted peak would break storage.budget_gb / free_floor_gb


class Failure(StrEnum):
    """Codes a failed stage may carry (most carry none): what a later run may act on."""

    DISK_FULL = "disk_full"  # a write hit a full file system: retried once space is free


MESSAGES: dict[Block, str] = {
    Block.NEEDS_RESTORE: "needs calibration restore: only raw ASDMs are available",
    Block.STAGE: "blocked",
    Block.USER: "blocked by a user",
    Block.DISK: "waiting for disk space",
}


def message(code: Block, detail: str | None = None) -> str:
    """The reason text stored for ``code`` (``detail`` replaces the generic text of
    STAGE/USER blocks, and is appended to the others)."""
    if detail and code in (Block.STAGE, Block.USER):
        return detail
    return MESSAGES[code] + (f" ({detail})" if detail else "")


# A stage added to the table after a MOUS had already gone past it (its row is skipped).
LATE_STAGE_REASON = "stage added after this MOUS had passed it"
