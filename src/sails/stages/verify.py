"""verify (per MOUS): describe every measurement set, then check it against the catalog.

One CASA job writes ``datasets/<mous>/verify/<eb>.listobs.txt`` and ``<eb>.summary.json``
per MS. The checks run here, on the orchestrator side, as a pure function of those summaries
and the catalog rows (:func:`check_mous`), and their decisions (science spws per EB, the
calibrated data column) go to ``verify/verify.json`` for the split stage. Every failed check
is one readable reason; a MOUS with any reason fails with all of them listed.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sails import sizes
from sails.atomic import write_json_atomic
from sails.casa import contract
from sails.catalog import Block, Product
from sails.errors import CasaJobError, SailsError
from sails.stages.base import Outcome, StageContext, safe_name
from sails.stages.download import is_raw_only

VERIFY_DIR = "verify"
DECISIONS_NAME = "verify.json"
TARGET_INTENT = "OBSERVE_TARGET"
NON_SCIENCE_SPW = ("WVR", "SQLD", "CH_AVG")
# Archive frequencies and the MS's TOPO frame differ by the observatory's Doppler shift
# (|v| < 60 km/s): widen catalog ranges by this fraction before testing overlap.
DOPPLER_TOLERANCE = 2e-4
# A verify job reads every FLAG cell once: allow generously for big measurement sets.
TIMEOUT_BASE_S = 600.0
TIMEOUT_PER_GB_S = 120.0


# ----------------------------------------------------------------------------- inputs
def find_measurement_sets(mous_dir: Path) -> list[Path]:
    """The MOUS's EBs: ``datasets/<mous>/*.ms`` (files too, so a bogus one is reported)."""
    if not mous_dir.is_dir():
        return []
    return sorted(p for p in mous_dir.glob("*.ms")
                  if not p.name.startswith(".") and not p.is_symlink())


def eb_name(ms: Path) -> str:
    return safe_name(ms.name[:-3] if ms.name.endswith(".ms") else ms.name, 120)


@dataclass
class CatalogSpw:
    """A science spw as the archive names it, and the MS id the remap says to expect."""

    catalog_id: int
    expected_ms_id: int
    min_ghz: float | None
    max_ghz: float | None

    def label(self) -> str:
        rng = (f" ({self.min_ghz:.3f}-{self.max_ghz:.3f} GHz)"
               if self.min_ghz is not None and self.max_ghz is not None else "")
        remap = (f" -> MS spw {self.expected_ms_id}"
                 if self.expected_ms_id != self.catalog_id else "")
        return f"spw {self.catalog_id}{remap}{rng}"


def catalog_spws(targets: list[dict[str, Any]], remap: dict[int, int]) -> list[CatalogSpw]:
    """Science spws named by the catalog's target rows (ObsCore ``.spw.<n>``), remapped."""
    by_id: dict[int, list[dict[str, Any]]] = {}
    for t in targets:
        if t.get("spw_id") is not None:
            by_id.setdefault(int(t["spw_id"]), []).append(t)
    out = []
    for sid, rows in sorted(by_id.items()):
        lows = [r["min_freq_ghz"] for r in rows if r.get("min_freq_ghz") is not None]
        highs = [r["max_freq_ghz"] for r in rows if r.get("max_freq_ghz") is not None]
        out.append(CatalogSpw(sid, remap.get(sid, sid), min(lows) if lows else None,
                              max(highs) if highs else None))
    return out


# ----------------------------------------------------------------------------- checks
@dataclass
class EbDecision:
    eb: str
    ms: str
    summary: str | None = None
    listobs: str | None = None
    datacolumn: str | None = None
    datacolumn_why: str | None = None
    science_spws: list[int] = field(default_factory=list)
    spw_match: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_fields: dict[str, list[int]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decisions:
    mous_id: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ebs: dict[str, EbDecision] = field(default_factory=dict)
    datacolumn: str | None = None
    expected_ebs: int | None = None
    found_ebs: int = 0
    checked_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decisions:
        data = {k: v for k, v in data.items() if k != "ok"}
        ebs = {k: EbDecision(**v) for k, v in data.pop("ebs", {}).items()}
        return cls(ebs=ebs, **data)


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def _has_target_intent(intents: list[str]) -> bool:
    return any(i.startswith(TARGET_INTENT) for i in intents)


def science_candidates(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Spws that can be science data: target visibilities, not WVR/SQLD/CH_AVG.

    When the MS uses ALMA names, only the ``FULL_RES`` windows qualify.
    """
    spws = [s for s in summary.get("spws", [])
            if s.get("has_data") and _has_target_intent(s.get("intents", []))
            and not any(tag in (s.get("name") or "") for tag in NON_SCIENCE_SPW)]
    if any("FULL_RES" in (s.get("name") or "") for s in spws):
        spws = [s for s in spws if "FULL_RES" in s["name"]]
    return spws


def _ghz(spw: dict[str, Any]) -> tuple[float, float]:
    return spw["min_freq_hz"] / 1e9, spw["max_freq_hz"] / 1e9


def _overlap(spw: dict[str, Any], cat: CatalogSpw) -> float:
    """Overlap as a fraction of the narrower range; 0 when disjoint or unknown."""
    if cat.min_ghz is None or cat.max_ghz is None or spw.get("min_freq_hz") is None:
        return 0.0
    lo, hi = _ghz(spw)
    pad = DOPPLER_TOLERANCE * cat.max_ghz
    cmin, cmax = cat.min_ghz - pad, cat.max_ghz + pad
    inter = min(hi, cmax) - max(lo, cmin)
    narrow = min(hi - lo, cmax - cmin)
    if inter <= 0:
        return 0.0
    return inter / narrow if narrow > 0 else 1.0


def _spw_list(spws: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s['id']} {s.get('name') or ''} [{_ghz(s)[0]:.3f}-{_ghz(s)[1]:.3f} GHz]"
                     .replace("  ", " ") for s in spws) or "none"


def match_spws(eb: str, summary: dict[str, Any], expected: list[CatalogSpw],
               dec: EbDecision, reasons: list[str], notes: list[str]) -> None:
    """Map catalog spws onto MS spws: by id first, by frequency overlap if ids disagree."""
    cands = science_candidates(summary)
    by_id = {s["id"]: s for s in cands}
    if not cands:
        reasons.append(f"{eb}: no science spw with {TARGET_INTENT} data "
                       f"(spws: {_spw_list(summary.get('spws', []))})")
        return
    if not expected:
        dec.science_spws = sorted(by_id)
        notes.append(f"{eb}: the catalog names no science spw ids; using the {len(cands)} "
                     f"science window(s) with target data: {sorted(by_id)}")
        return
    used: set[int] = set()
    for cat in expected:
        spw = by_id.get(cat.expected_ms_id)
        freq_known = cat.min_ghz is not None and cat.max_ghz is not None
        if spw is not None and (not freq_known or _overlap(spw, cat) > 0):
            dec.spw_match[str(cat.catalog_id)] = {"ms_spw": spw["id"], "by": "id"}
            used.add(spw["id"])
            continue
        best = max((s for s in cands if s["id"] not in used), default=None,
                   key=lambda s: _overlap(s, cat))
        if best is not None and _overlap(best, cat) > 0:
            dec.spw_match[str(cat.catalog_id)] = {"ms_spw": best["id"], "by": "frequency"}
            used.add(best["id"])
            why = ("its frequencies do not match" if spw is not None
                   else "the MS has no science spw with that id")
            notes.append(f"{eb}: catalog {cat.label()} matched MS spw {best['id']} "
                         f"({best.get('name') or 'unnamed'}) by frequency, since {why}")
            continue
        reasons.append(f"{eb}: science {cat.label()} is missing (MS science spws: "
                       f"{_spw_list(cands)})")
    dec.science_spws = sorted(used)


def choose_datacolumn(eb: str, summary: dict[str, Any], preset: str | None,
                      dec: EbDecision, reasons: list[str]) -> None:
    """CORRECTED_DATA when present and filled, else DATA when something shows it calibrated."""
    cols = summary.get("data_columns", {})
    if cols.get("CORRECTED_DATA", {}).get("filled"):
        dec.datacolumn, dec.datacolumn_why = "CORRECTED_DATA", "CORRECTED_DATA present and filled"
        return
    corr = ("CORRECTED_DATA is empty" if "CORRECTED_DATA" in cols
            else "no CORRECTED_DATA column")
    if not cols.get("DATA", {}).get("filled"):
        reasons.append(f"{eb}: no calibrated visibilities ({corr}, and DATA is "
                       f"{'empty' if 'DATA' in cols else 'absent'})")
        return
    if not summary.get("has_gain_calibrators"):
        why = f"{corr}; the MS holds no calibrator scans, so DATA is taken as calibrated"
    elif summary.get("history_calibrated_split"):
        why = f"{corr}; the MS history shows a split of the corrected column into DATA"
    elif preset == "DATA":
        why = f"{corr}; DATA declared calibrated in the catalog (preferred_datacolumn)"
    else:
        reasons.append(
            f"{eb}: {corr} and the MS still holds calibrator scans "
            f"({', '.join(i for i in summary.get('intents', []) if i.startswith('CALIBRATE'))}):"
            " calibration looks unapplied (restore the calibration, or if DATA is calibrated"
            " run `sails verify --datacolumn DATA` for this MOUS)")
        return
    dec.datacolumn, dec.datacolumn_why = "DATA", why


def check_targets(names: list[str], summaries: dict[str, dict[str, Any]],
                  ebs: dict[str, EbDecision], reasons: list[str], notes: list[str]) -> None:
    """Every catalog science target is a field with OBSERVE_TARGET intent in some EB."""
    for name in names:
        seen_in, wrong_intent = [], []
        for eb, summary in summaries.items():
            fields = [f for f in summary.get("fields", []) if f["name"] == name]
            fuzzy = False
            if not fields:
                fields = [f for f in summary.get("fields", []) if _norm(f["name"]) == _norm(name)]
                fuzzy = bool(fields)
            tfields = [f for f in fields if _has_target_intent(f.get("intents", []))]
            if tfields:
                seen_in.append(eb)
                ebs[eb].target_fields[name] = [f["id"] for f in tfields]
                if fuzzy:
                    notes.append(f"{eb}: catalog target {name!r} matched field "
                                 f"{tfields[0]['name']!r} ignoring case and punctuation")
            elif fields:
                wrong_intent.append(f"{eb}: {sorted({i for f in fields for i in f['intents']})}")
        if not seen_in:
            if wrong_intent:
                reasons.append(f"target {name!r} has no {TARGET_INTENT} intent "
                               f"({'; '.join(wrong_intent)})")
            else:
                known = sorted({f["name"] for s in summaries.values()
                                for f in s.get("fields", [])
                                if _has_target_intent(f.get("intents", []))})
                reasons.append(f"target {name!r} is not in any measurement set "
                               f"(target fields found: {', '.join(map(repr, known)) or 'none'})")
        elif len(seen_in) < len(summaries):
            missing = sorted(set(summaries) - set(seen_in))
            notes.append(f"target {name!r} is not observed in {', '.join(missing)}")


def check_mous(mous_id: str, mous: dict[str, Any], targets: list[dict[str, Any]],
               remap: dict[int, int], ms_paths: list[Path],
               results: dict[str, dict[str, Any]]) -> Decisions:
    """All checks of one MOUS from its MS summaries; pure, so it is tested without CASA.

    ``results`` maps EB name -> the ``ms_summary`` step output, with the parsed summary
    under ``"data"`` (or ``ok: false`` and ``error``).
    """
    dec = Decisions(mous_id=mous_id, expected_ebs=mous.get("num_asdms"),
                    found_ebs=len(ms_paths))
    reasons, notes = dec.reasons, dec.notes
    if not ms_paths:
        reasons.append("no measurement sets (*.ms) in the MOUS folder")
        return dec
    if dec.expected_ebs and dec.expected_ebs != len(ms_paths):
        reasons.append(f"expected {dec.expected_ebs} execution block(s) (num_asdms) but found "
                       f"{len(ms_paths)} measurement set(s): "
                       f"{', '.join(p.name for p in ms_paths)}")
    expected_spws = catalog_spws(targets, remap)
    readable: dict[str, dict[str, Any]] = {}
    for ms in ms_paths:
        eb = eb_name(ms)
        res = results.get(eb) or {"ok": False, "error": "no summary was produced"}
        d = dec.ebs[eb] = EbDecision(eb=eb, ms=str(ms), summary=res.get("summary"),
                                     listobs=res.get("listobs"))
        if not res.get("ok"):
            reasons.append(f"{eb}: cannot be read as a measurement set: {res.get('error')}")
            continue
        summary = res["data"]
        d.metrics = dict(res.get("metrics") or {})
        if not summary.get("n_rows"):
            reasons.append(f"{eb}: the measurement set is empty (no visibilities)")
            continue
        if not summary.get("antennas"):
            reasons.append(f"{eb}: the ANTENNA table is empty")
        if not any(_has_target_intent(f.get("intents", [])) for f in summary.get("fields", [])):
            reasons.append(f"{eb}: no field has an {TARGET_INTENT} intent "
                           f"(intents present: {', '.join(summary.get('intents', [])) or 'none'})")
            continue
        readable[eb] = summary
        match_spws(eb, summary, expected_spws, d, reasons, notes)
        choose_datacolumn(eb, summary, mous.get("preferred_datacolumn"), d, reasons)
        d.metrics["datacolumn"] = d.datacolumn
        if not summary.get("has_bbc_no"):
            notes.append(f"{eb}: SPECTRAL_WINDOW has no BBC_NO column (auto_selfcal needs it)")
    names = sorted({t["alma_source_name"] for t in targets})
    if not names:
        notes.append("the catalog lists no science targets for this MOUS")
    if readable:
        check_targets(names, readable, dec.ebs, reasons, notes)
    columns = {d.datacolumn for d in dec.ebs.values() if d.datacolumn}
    if len(columns) == 1:
        dec.datacolumn = columns.pop()
    elif columns:
        dec.datacolumn = "CORRECTED_DATA"
        notes.append("EBs differ in their calibrated column: "
                     + ", ".join(f"{d.eb}={d.datacolumn}" for d in dec.ebs.values()))
    return dec


# ----------------------------------------------------------------------------- job
def summary_steps(ms_paths: list[Path]) -> list[dict[str, Any]]:
    return [{"op": "ms_summary", "name": f"summary-{eb_name(ms)}",
             "args": {"vis": str(ms.resolve()), "name": eb_name(ms), "strict": False}}
            for ms in ms_paths]


def _timeout(paths: list[Path]) -> float:
    return TIMEOUT_BASE_S + TIMEOUT_PER_GB_S * sum(Product.measure(p) for p in paths) / 1e9


def severe_note(manifest: dict[str, Any]) -> str | None:
    """One line about the SEVERE lines CASA logged during a job (they are warnings)."""
    severe = [w for w in manifest.get("warnings") or [] if w.startswith("CASA SEVERE")]
    if not severe:
        return None
    return (f"CASA logged {len(severe)} distinct SEVERE message(s), first: "
            f"{severe[0].split(chr(9))[-1][:200]} (log: {manifest.get('log_path')})")


def _step_results(manifest: dict[str, Any], out_dir: Path) -> dict[str, dict[str, Any]]:
    """Step outputs per EB, with paths as this machine sees them (a remote job's differ)."""
    out: dict[str, dict[str, Any]] = {}
    note = severe_note(manifest)
    if note:
        out["__notes__"] = {"notes": [note]}
    for name, res in (manifest.get("steps") or {}).items():
        if not name.startswith("summary-"):
            continue
        eb = name[len("summary-"):]
        res = dict(res)
        if res.get("ok"):
            res["summary"] = str(out_dir / f"{eb}.summary.json")
            if res.get("listobs"):
                res["listobs"] = str(out_dir / f"{eb}.listobs.txt")
            try:
                res["data"] = json.loads(Path(res["summary"]).read_text())
            except (OSError, ValueError) as exc:
                res = {"ok": False, "error": f"summary file unreadable: {exc}"}
        out[eb] = res
    return out


def run_summaries(ctx: StageContext, ms_paths: list[Path], out_dir: Path
                  ) -> dict[str, dict[str, Any]]:
    """One job for every MS; if CASA dies outright, find the MS that kills it, one by one."""
    try:
        manifest = ctx.run_casa(summary_steps(ms_paths), out_dir, timeout_s=_timeout(ms_paths))
        return _step_results(manifest, out_dir)
    except CasaJobError as exc:
        job = ctx.jobs[-1] if ctx.jobs else None
        died = (exc.error_kind in (contract.OOM, contract.NO_MANIFEST)
                and (job is None or job.manifest is None))
        if len(ms_paths) == 1 or not died:
            return {eb_name(ms): {"ok": False, "error": exc.one_line()} for ms in ms_paths}
    results: dict[str, dict[str, Any]] = {}
    good = []
    probe_root = ctx.project.work / "verify-probe" / ctx.mous_fs
    for ms in ms_paths:
        try:
            ctx.run_casa(summary_steps([ms]), probe_root / eb_name(ms),
                         suffix=f"probe-{eb_name(ms)}", timeout_s=_timeout([ms]))
            good.append(ms)
        except CasaJobError as exc:
            results[eb_name(ms)] = {"ok": False, "error": f"CASA crashed on it: {exc.one_line()}"}
    shutil.rmtree(probe_root, ignore_errors=True)
    if good:
        manifest = ctx.run_casa(summary_steps(good), out_dir, suffix="retry",
                                timeout_s=_timeout(good))
        results.update(_step_results(manifest, out_dir))
    return results


def write_decisions(out_dir: Path, dec: Decisions) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / DECISIONS_NAME
    write_json_atomic(path, dec.to_json(), indent=2, default=str)
    return path


def read_decisions(mous_dir: Path) -> Decisions | None:
    try:
        return Decisions.from_json(json.loads((mous_dir / VERIFY_DIR / DECISIONS_NAME)
                                              .read_text()))
    except (OSError, ValueError, TypeError):
        return None


def products_for(dec: Decisions) -> list[Product]:
    out = []
    for d in dec.ebs.values():
        if d.listobs:
            out.append(Product("listobs", d.listobs))
        if d.summary:
            keys = ("n_fields", "n_scans", "n_spws", "n_antennas", "flagged_fraction",
                    "datacolumn")
            out.append(Product("ms_summary", d.summary,
                               spw=",".join(map(str, d.science_spws)) or None,
                               metrics={k: d.metrics.get(k) for k in keys}
                               | _size_facts(d)))
    return out


def _size_facts(d: EbDecision) -> dict[str, Any]:
    """The facts the size model (:mod:`sails.sizes`) predicts later stages from."""
    try:
        summary = json.loads(Path(d.summary).read_text()) if d.summary else {}
    except (OSError, ValueError):
        return {}
    ms_bytes = Product.measure(d.ms) if d.ms and Path(d.ms).exists() else 0
    return {"sizes": sizes.ms_size_facts(summary, d.science_spws, ms_bytes)}


def run(ctx: StageContext) -> Outcome:
    cat = ctx.catalog
    mous = cat.mous(ctx.mous_id)
    if is_raw_only(p["kind"] for st in ("download", "restore")
                   for p in cat.products(ctx.mous_id, stage=st)):
        return Outcome.blocked(code=Block.NEEDS_RESTORE)
    ms_paths = find_measurement_sets(ctx.mous_dir)
    out_dir = ctx.mous_dir / VERIFY_DIR
    results = run_summaries(ctx, ms_paths, out_dir) if ms_paths else {}
    extra = results.pop("__notes__", {}).get("notes", [])
    dec = check_mous(ctx.mous_id, mous, cat.targets(ctx.mous_id), cat.spw_remap(ctx.mous_id),
                     ms_paths, results)
    dec.notes.extend(extra)
    where = write_decisions(out_dir, dec)
    if not dec.ok:
        listed = "; ".join(f"({i}) {r}" for i, r in enumerate(dec.reasons, 1))
        raise SailsError(f"verify found {len(dec.reasons)} problem(s) in "
                         f"{ctx.mous_dir}: {listed}", hint=f"details in {where}")
    if dec.datacolumn and dec.datacolumn != mous.get("preferred_datacolumn"):
        cat.set_mous_field(ctx.mous_id, "preferred_datacolumn", dec.datacolumn)
    spws = sorted({s for d in dec.ebs.values() for s in d.science_spws})
    how = sorted({m["by"] for d in dec.ebs.values() for m in d.spw_match.values()})
    n_targets = len({t for d in dec.ebs.values() for t in d.target_fields})
    summary = (f"{len(dec.ebs)} EB(s), {n_targets} target(s), science spws {spws}"
               + (f" (matched by {'/'.join(how)})" if how else "")
               + f", calibrated column {dec.datacolumn}")
    if dec.notes:
        summary += "; notes: " + "; ".join(dec.notes)
    return Outcome.done(products_for(dec), reason=summary)
