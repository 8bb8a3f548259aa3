"""One QA row per target (score, main problem, verdict, note) for ``sails status``,
``sails qa``, the report and the CSV export of the survey's state.

A target "needs a look" when a stage failed, an image diverged (healed or not), or it
scores below ``[qa] needs_look_below`` — unless a person already gave a verdict. The list
is ordered by how much a look would help: failures first, then the lowest scores.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sails.atomic import write_text_atomic
from sails.qa.scores import CAUSE_ORDER, TargetScore, score_target
from sails.qa.settings import QaSettings

WORST_FIRST = ("failed", "blocked", "running", "pending", "done", "skipped")


@dataclass
class QaRow:
    mous_id: str
    target: str
    state: str
    score: float | None
    main_problem: str
    main_reason: str
    verdict: str
    verdict_by: str
    verdict_at: str
    note: str
    error: str
    healed: int
    needs_look: bool
    why_look: str
    priority: float
    subs: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def _state(stages: list[dict]) -> str:
    states = {s["status"] for s in stages}
    return next((s for s in WORST_FIRST if s in states), "pending")


def _healed(products: list[dict]) -> int:
    return sum(len(((p.get("metrics") or {}).get("healing") or {}).get("attempts") or []) > 1
               for p in products if p.get("kind") in ("cont_image", "cube"))


def _key_metrics(products: list[dict]) -> dict[str, Any]:
    cont = next((p.get("metrics") or {} for p in products if p.get("kind") == "cont_image"),
                {})
    beam = cont.get("beam") or [None, None, None]
    lines = sorted({(p.get("metrics") or {}).get("line") or "" for p in products
                    if p.get("kind") == "cube"} - {""})
    return {"cont_rms_jy": cont.get("rms"), "cont_rms_ratio": cont.get("rms_ratio"),
            "cont_peak_jy": cont.get("peak"), "cont_dynamic_range": cont.get("dynamic_range"),
            "beam_major_arcsec": beam[0], "beam_minor_arcsec": beam[1],
            "lines": ";".join(lines)}


def qa_row(mous_id: str, target: str, stages: list[dict], products: list[dict],
           verdict: dict | None, qa: QaSettings) -> QaRow:
    """``stages``: the target's rows and its MOUS's rows (dicts with status/error/stage)."""
    score: TargetScore | None = score_target(products, qa)
    main = score.main_problem if score else None
    failed = [s for s in stages if s["status"] == "failed"]
    error = f"{failed[0]['stage']}: {failed[0].get('error') or ''}" if failed else ""
    diverged = "diverged" in error  # the message of a failed image names it
    healed = _healed(products)
    value = score.score if score else None
    why = []
    if failed:
        why.append("failed" + (" (diverged)" if diverged else ""))
    if healed:
        why.append(f"{healed} image(s) healed after diverging")
    if value is not None and value < qa.needs_look_below:
        why.append(f"score {value:.2f}" + (f" ({main.name})" if main else ""))
    looked = verdict is not None
    priority = (2.0 if failed else 0.0) + (1.0 - value if value is not None else 0.0) + (
        0.25 if healed else 0.0)
    return QaRow(
        mous_id=mous_id, target=target, state=_state(stages),
        score=None if value is None else round(value, 3),
        main_problem=main.name if main else "", main_reason=main.reason if main else "",
        verdict=(verdict or {}).get("verdict") or "",
        verdict_by=(verdict or {}).get("actor") or "",
        verdict_at=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(verdict["at"]))
        if verdict else "",
        note=(verdict or {}).get("note") or "", error=error, healed=healed,
        needs_look=bool(why) and not looked, why_look="; ".join(why),
        priority=round(priority, 3),
        subs={s.name: round(s.score, 3) for s in (score.subs if score else [])},
        metrics=_key_metrics(products))


def needs_look(rows: list[QaRow]) -> list[QaRow]:
    """Targets that need a look, the most helpful look first."""
    return sorted((r for r in rows if r.needs_look), key=lambda r: -r.priority)


def filter_rows(rows: list[QaRow], verdict: str | None = None,
                below: float | None = None, problem: str | None = None) -> list[QaRow]:
    """``verdict``: pass/fail/redo, or "none" for targets nobody judged yet."""
    out = rows
    if verdict:
        out = [r for r in out if (r.verdict or "none") == verdict]
    if below is not None:
        out = [r for r in out if r.score is not None and r.score < below]
    if problem:
        out = [r for r in out if r.main_problem == problem]
    return out


CSV_FIELDS = ("mous_id", "target", "state", "score", "main_problem", "main_reason",
              "verdict", "verdict_by", "verdict_at", "note", "needs_look", "why_look",
              "healed", "error")
METRIC_FIELDS = ("cont_rms_jy", "cont_rms_ratio", "cont_peak_jy", "cont_dynamic_range",
                 "beam_major_arcsec", "beam_minor_arcsec", "lines")


def csv_text(rows: list[QaRow]) -> str:
    """The survey's state, one row per target (opens in astropy.table, pandas, a sheet)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    sub_fields = [f"score_{n}" for n in CAUSE_ORDER]
    w.writerow([*CSV_FIELDS, *sub_fields, *METRIC_FIELDS])
    for r in rows:
        d = asdict(r)
        vals = [d[k] for k in CSV_FIELDS] + [r.subs.get(n) for n in CAUSE_ORDER] + [
            r.metrics.get(k) for k in METRIC_FIELDS]
        w.writerow(["" if v is None else (str(v).lower() if isinstance(v, bool) else v)
                    for v in vals])
    return buf.getvalue()


def write_csv(rows: list[QaRow], path: Path) -> Path:
    write_text_atomic(path, csv_text(rows))
    return path


def catalog_rows(catalog, qa: QaSettings) -> list[QaRow]:
    """QA rows of every target in a :class:`sails.catalog.Catalog`."""
    from sails.catalog.qa import latest_verdicts

    verdicts = latest_verdicts(catalog.verdicts())
    stages: dict[tuple[str, str], list[dict]] = {}
    for s in catalog.stages():
        stages.setdefault((s.mous_id, s.target), []).append(s.__dict__)
    products: dict[tuple[str, str], list[dict]] = {}
    for p in catalog.products():
        products.setdefault((p["mous_id"], p["target"]), []).append(p)
    out = []
    for mous_id in catalog.mous_ids():
        mrows = stages.get((mous_id, ""), [])
        for target in catalog.target_names(mous_id):
            key = (mous_id, target)
            v = verdicts.get(key) or verdicts.get((mous_id, ""))
            out.append(qa_row(mous_id, target, mrows + stages.get(key, []),
                              products.get(key, []), v, qa))
    return out
