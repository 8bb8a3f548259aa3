"""At ``sails run`` start: finished stage rows whose target's overrides changed since they
ran go back to pending ("override changed"), that target's rows only (and what depends on
them for that target). Which keys affect which stage is declared once, in
:data:`sails.qa.overrides.AFFECTS`.
"""

from __future__ import annotations

from sails.catalog import StageRow
from sails.errors import IllegalTransitionError
from sails.qa.overrides import AFFECTS, STALE_REASON, fingerprint, load_overrides

STALE_FROM = ("done", "skipped", "failed")
ACTOR = "overrides"


def mark_stale(project, mous: list[str] | None = None) -> list[StageRow]:
    """Reset every row whose override fingerprint differs from the current one."""
    current = load_overrides(project.root)
    cat = project.catalog
    out: list[StageRow] = []
    for stage in AFFECTS:  # table order is kept by reset's downstream walk
        for row in cat.stages(stage=stage):
            if mous and row.mous_id not in mous:
                continue
            if row.status not in STALE_FROM:
                continue
            now = cat.stage(row.id)  # an earlier reset here may have moved it
            if now.status not in STALE_FROM:
                continue
            if fingerprint(current.get(row.target), stage) == now.override_fp:
                continue
            try:
                out += cat.reset(row.mous_id, stage, actor=ACTOR, target=row.target,
                                 reason=STALE_REASON)
            except IllegalTransitionError:
                continue  # something downstream is running; the next run looks again
    return out
