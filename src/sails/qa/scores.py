"""Science-readiness scores: one number in [0, 1] per image product and per target, with
named sub-scores and the reason for each, computed from the metrics the stages recorded.

Every sub-score ramps linearly between a ``*_good`` value (score 1) and a ``*_bad`` value
(score 0) of the ``[qa]`` section (:class:`sails.qa.settings.QaSettings`). A product scores
its lowest sub-score and a target its lowest product: an image is as usable as its weakest
part, and the lowest sub-score names the target's main problem. Ties go to the sub-score
that names a cause over one that names a symptom (``CAUSE_ORDER``): a missed line window
raises the rms too, but the window is what to fix. A metric that was not measured gives no
sub-score (never a guessed one). See docs/qa.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sails.qa.settings import QaSettings

RMS = "rms"
DYNAMIC_RANGE = "dynamic_range"
SELFCAL = "selfcal"
RESIDUAL = "residual"
EDGE = "edge"
CONTINUUM = "continuum"
CONVERGENCE = "convergence"
FLAGGED = "flagged"
BEAM = "beam"

# Tie-break for the main problem: causes first, symptoms (rms, DR, residuals) last.
CAUSE_ORDER = (CONTINUUM, EDGE, CONVERGENCE, SELFCAL, FLAGGED, BEAM, RESIDUAL, DYNAMIC_RANGE,
               RMS)
TITLES = {
    RMS: "rms / theoretical", DYNAMIC_RANGE: "dynamic range vs S/N", SELFCAL: "self-cal",
    RESIDUAL: "residual structure", EDGE: "edge emission", CONTINUUM: "continuum",
    CONVERGENCE: "clean convergence", FLAGGED: "flagged data", BEAM: "beam shape",
}
SCORED_KINDS = ("cont_image", "cube")
GOOD_STOPCODES = {2: "reached the threshold", 8: "reached the n-sigma threshold"}
WEAK_STOPCODES = {1: (0.3, "stopped at niter before the threshold"),
                  4: (0.6, "stalled (no change in the peak residual)"),
                  5: (0.0, "diverged (peak residual grew 3x in a major cycle)"),
                  6: (0.0, "diverged (peak residual grew 3x above its minimum)")}
ZERO_MASK = 7
ZERO_MASK_MAX_SNR = 8.0  # an empty auto-mask is right when the dirty peak is below this


@dataclass(frozen=True)
class SubScore:
    name: str
    score: float
    reason: str

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "score": round(self.score, 3), "reason": self.reason}


@dataclass
class ProductScore:
    kind: str
    path: str
    line: str | None
    subs: list[SubScore] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        return min((s.score for s in self.subs), default=None)

    @property
    def label(self) -> str:
        return "continuum" if self.kind == "cont_image" else f"{self.line or '?'} cube"


@dataclass
class TargetScore:
    products: list[ProductScore]

    @property
    def score(self) -> float | None:
        scores = [p.score for p in self.products if p.score is not None]
        return min(scores) if scores else None

    @property
    def subs(self) -> list[SubScore]:
        """The lowest sub-score of each name across the target's products, cause order."""
        worst: dict[str, SubScore] = {}
        for p in self.products:
            for s in p.subs:
                if s.name not in worst or s.score < worst[s.name].score:
                    worst[s.name] = SubScore(s.name, s.score, f"{p.label}: {s.reason}")
        return sorted(worst.values(), key=lambda s: _order(s.name))

    @property
    def main_problem(self) -> SubScore | None:
        """The lowest sub-score below 1 (ties: the cause first), None when all are 1."""
        low = [s for s in self.subs if s.score < 1.0]
        return min(low, key=lambda s: (round(s.score, 6), _order(s.name))) if low else None

    def as_dict(self) -> dict[str, Any]:
        main = self.main_problem
        return {"score": None if self.score is None else round(self.score, 3),
                "main_problem": main.as_dict() if main else None,
                "subs": [s.as_dict() for s in self.subs],
                "products": [{"kind": p.kind, "line": p.line, "path": p.path,
                              "score": None if p.score is None else round(p.score, 3),
                              "subs": [s.as_dict() for s in p.subs]} for p in self.products]}


def _order(name: str) -> int:
    return CAUSE_ORDER.index(name) if name in CAUSE_ORDER else len(CAUSE_ORDER)


def ramp(value: float, good: float, bad: float) -> float:
    """1 at ``good``, 0 at ``bad``, linear between (either direction)."""
    if good == bad:
        return 1.0 if value == good else 0.0
    t = (value - good) / (bad - good)
    return float(min(1.0, max(0.0, 1.0 - t)))


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


# ----------------------------------------------------------------------------- sub-scores
def rms_score(m: dict, qa: QaSettings) -> SubScore | None:
    r = _num(m.get("rms_ratio"))
    if r is None:
        return None
    return SubScore(RMS, ramp(r, qa.rms_ratio_good, qa.rms_ratio_bad),
                    f"rms {r:.2f}x theoretical")


def dr_score(m: dict, qa: QaSettings) -> SubScore | None:
    dr, rms, theo = _num(m.get("dynamic_range")), _num(m.get("rms")), _num(
        m.get("theoretical_rms"))
    if dr is None or not rms or not theo:
        return None
    allowed = min(dr * rms / theo, qa.dr_cap)  # flat peak / theoretical rms, capped
    frac = dr / allowed if allowed > 0 else 1.0
    return SubScore(DYNAMIC_RANGE, ramp(frac, qa.dr_fraction_good, qa.dr_fraction_bad),
                    f"DR {dr:.0f} of the {allowed:.0f} the S/N allows ({frac:.0%})")


def residual_score(m: dict, qa: QaSettings) -> SubScore | None:
    r = _num(m.get("residual_snr"))
    if r is None:
        return None
    return SubScore(RESIDUAL, ramp(r, qa.residual_snr_good, qa.residual_snr_bad),
                    f"largest residual {r:.1f} sigma")


def edge_score(m: dict, qa: QaSettings) -> SubScore | None:
    e = _num(m.get("edge_snr"))
    if e is None:
        return None
    if not m.get("continuum_subtracted", True):
        return SubScore(EDGE, 1.0, "not checked: cube without continuum subtraction")
    why = f"{e:.1f} sigma in the edge channels"
    if e > qa.edge_snr_good:
        why += ": the line runs past the velocity window (wrong systemic velocity or a " \
               "window too narrow)"
    return SubScore(EDGE, ramp(e, qa.edge_snr_good, qa.edge_snr_bad), why)


def continuum_score(m: dict, qa: QaSettings) -> SubScore | None:
    spectral = m.get("spectral") or {}
    frac = _num(spectral.get("linefree_fraction"))
    snr = _num(m.get("cont_line_snr"))
    parts: list[tuple[float, str]] = []
    if frac is not None:
        parts.append((ramp(frac, qa.linefree_fraction_good, qa.linefree_fraction_bad),
                      f"{frac:.0%} of the band kept as continuum"))
    if snr is not None:
        where = m.get("cont_line_where") or ""
        parts.append((ramp(snr, qa.cont_line_snr_good, qa.cont_line_snr_bad),
                      f"line emission at {snr:.1f} sigma in the continuum channels"
                      + (f" ({where})" if where and snr > qa.cont_line_snr_good else "")))
    if not parts:
        return None
    score = min(p[0] for p in parts)
    return SubScore(CONTINUUM, score, "; ".join(p[1] for p in parts))


def convergence_score(m: dict, qa: QaSettings) -> SubScore | None:
    runs = [r for r in (m.get("tclean") or []) if isinstance(r, dict)]
    cleaned = runs[1:]  # the first run is the dirty image (niter 0)
    if not cleaned:
        return None
    code = int(cleaned[-1].get("stopcode", 0))
    heal = m.get("healing") or {}
    attempts = heal.get("attempts") or []
    if code in GOOD_STOPCODES:
        score, why = 1.0, GOOD_STOPCODES[code]
    elif code == ZERO_MASK:
        rms_dirty, dr, rms = (_num(m.get("rms_dirty")), _num(m.get("dynamic_range")),
                              _num(m.get("rms")))
        snr = dr * rms / rms_dirty if dr and rms and rms_dirty else None
        if snr is None or snr < ZERO_MASK_MAX_SNR:
            score, why = 1.0, "nothing to clean (auto-mask empty, no bright emission)"
        else:
            score = 0.2
            why = (f"never cleaned: the auto-mask stayed empty although the dirty peak is "
                   f"{snr:.0f} sigma")
    elif code in WEAK_STOPCODES:
        score, why = WEAK_STOPCODES[code]
    else:
        score, why = 0.5, f"tclean stopcode {code} ({cleaned[-1].get('stop', '')})"
    if len(attempts) > 1:
        last = attempts[-1]
        score = min(score, 0.8)
        why += (f"; healed on attempt {len(attempts)} ({last.get('step')}) after "
                f"{len(attempts) - 1} diverged")
    return SubScore(CONVERGENCE, score, why)


def flagged_score(m: dict, qa: QaSettings) -> SubScore | None:
    f = _num(m.get("flagged_fraction"))
    if f is None:
        return None
    return SubScore(FLAGGED, ramp(f, qa.flagged_good, qa.flagged_bad), f"{f:.0%} flagged")


def beam_score(m: dict, qa: QaSettings) -> SubScore | None:
    beam = m.get("beam")
    if not isinstance(beam, list | tuple) or len(beam) < 2:
        return None
    a, b = _num(beam[0]), _num(beam[1])
    if not a or not b:
        return None
    ratio = max(a, b) / min(a, b)
    return SubScore(BEAM, ramp(ratio, qa.beam_axis_ratio_good, qa.beam_axis_ratio_bad),
                    f"beam axis ratio {ratio:.2f}")


def selfcal_score(m: dict, selfcal: dict | None, qa: QaSettings) -> SubScore | None:
    """Self-cal's gain when applied; when not, whether the image shows it was needed."""
    if selfcal and selfcal.get("success"):
        a, b = _num(selfcal.get("snr_initial")), _num(selfcal.get("snr_final"))
        if a and b:
            gain = b / a
            return SubScore(SELFCAL, ramp(gain, 1.0, 0.8),
                            f"applied: S/N {a:.0f} -> {b:.0f} (x{gain:.2f})")
        return SubScore(SELFCAL, 1.0, "applied")
    why = "not applied" + (f" ({selfcal.get('reason')})" if selfcal and selfcal.get("reason")
                           else "")
    r, dr, rms, theo = (_num(m.get("rms_ratio")), _num(m.get("dynamic_range")),
                        _num(m.get("rms")), _num(m.get("theoretical_rms")))
    if r is None or dr is None or not rms or not theo:
        return None
    snr = dr * rms / theo  # what the peak would reach at the theoretical noise
    if snr < qa.selfcal_min_snr:
        return SubScore(SELFCAL, 1.0, f"{why}; too faint to self-calibrate (S/N {snr:.0f})")
    harm = min(s.score for s in (rms_score(m, qa), dr_score(m, qa)) if s is not None)
    if harm >= 1.0:
        return SubScore(SELFCAL, 1.0, f"{why}; not needed: the image is at the noise")
    return SubScore(SELFCAL, harm, f"{why} although the image is {r:.1f}x the theoretical "
                    f"noise at S/N {snr:.0f}: self-calibration (or better calibration) "
                    "should help")


# ----------------------------------------------------------------------------- products
def score_product(p: dict, qa: QaSettings, selfcal: dict | None = None) -> ProductScore:
    """The sub-scores of one image product (a ``cont_image`` or a ``cube``)."""
    m = p.get("metrics") or {}
    subs: list[SubScore | None] = [rms_score(m, qa), dr_score(m, qa), residual_score(m, qa),
                                   convergence_score(m, qa), flagged_score(m, qa),
                                   beam_score(m, qa)]
    if p.get("kind") == "cont_image":
        subs += [continuum_score(m, qa), selfcal_score(m, selfcal, qa)]
    else:
        subs.append(edge_score(m, qa))
    return ProductScore(p.get("kind") or "", p.get("path") or "", m.get("line"),
                        [s for s in subs if s is not None])


def score_target(products: list[dict], qa: QaSettings) -> TargetScore | None:
    """A target's score from its products (any stage); None before it was imaged."""
    selfcal = next((p.get("metrics") or {} for p in reversed(products)
                    if p.get("kind") == "selfcal_summary"), None)
    scored = [score_product(p, qa, selfcal) for p in products
              if p.get("kind") in SCORED_KINDS and p.get("stage", "image") == "image"]
    return TargetScore(scored) if scored else None


def scores_by_target(products: list[dict], qa: QaSettings) -> dict[tuple[str, str],
                                                                    TargetScore]:
    """(mous_id, target) -> score, for every imaged target in ``products``."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for p in products:
        if p.get("target"):
            groups.setdefault((p["mous_id"], p["target"]), []).append(p)
    out = {}
    for key, prods in groups.items():
        s = score_target(prods, qa)
        if s is not None:
            out[key] = s
    return out
