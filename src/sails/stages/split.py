"""split (per MOUS): each EB's science targets -> ``datasets/<mous>/splits/<eb>_targets.ms``.

Uses what verify decided (``verify/verify.json``): the FULL_RES science spws matched per EB
and the calibrated data column. One CASA job writes every EB's split plus its listobs and
JSON summary; its output folder is ``splits/`` itself, which the job runner renames into
place only when the job finished, so a killed split never leaves a half-written
``_targets.ms`` there (its staging folder is removed by the next attempt). Complete outputs
matching the current decisions are recognised and not redone.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from sails.casa import contract
from sails.catalog import Product
from sails.errors import SailsError
from sails.stages.base import Outcome, StageContext
from sails.stages.verify import Decisions, EbDecision, read_decisions, severe_note

SPLITS_DIR = "splits"
TARGET_INTENT = "*OBSERVE_TARGET*"
TIMEOUT_BASE_S = 900.0
TIMEOUT_PER_GB_S = 300.0


def split_name(eb: str) -> str:
    return f"{eb}_targets"


def output_paths(splits: Path, eb: str) -> tuple[Path, Path, Path]:
    """The split MS, its summary and its listobs, as this machine sees them."""
    name = split_name(eb)
    return (splits / f"{name}.ms", splits / f"{name}.summary.json",
            splits / f"{name}.listobs.txt")


def split_steps(dec: Decisions) -> list[dict[str, Any]]:
    """The job: per EB a ``split_targets`` step, then an ``ms_summary`` of its output."""
    steps: list[dict[str, Any]] = []
    for eb, d in sorted(dec.ebs.items()):
        name = split_name(eb)
        steps.append({"op": "split_targets", "name": f"split-{eb}", "args": {
            "vis": d.ms, "outputvis": f"{name}.ms", "spws": d.science_spws,
            "datacolumn": d.datacolumn, "intent": TARGET_INTENT}})
        steps.append({"op": "ms_summary", "name": f"summary-{eb}", "args": {
            "vis": f"{name}.ms", "name": name, "strict": True}})
    return steps


def complete_outputs(splits: Path, dec: Decisions) -> dict[str, Any] | None:
    """The manifest of an earlier finished split that matches ``dec``, else None."""
    manifest = contract.read_manifest(splits)
    if manifest is None or not manifest.ok:
        return None
    for eb, d in dec.ebs.items():
        sp, su = manifest.step(f"split-{eb}"), manifest.step(f"summary-{eb}")
        if not sp or not su or not su.get("ok"):
            return None
        if (Path(sp.get("vis", "")).name != Path(d.ms).name
                or sp.get("source_spws") != sorted(d.science_spws)
                or sp.get("datacolumn_in") != d.datacolumn):
            return None
        ms, summary, _ = output_paths(splits, eb)
        if not (ms / "table.dat").is_file() or not summary.is_file():
            return None
    return manifest.to_dict()


def check_split(eb: str, summary: dict[str, Any]) -> list[str]:
    """The split holds target fields only, in DATA: anything else is a bug worth failing on."""
    problems = []
    observed = [f for f in summary.get("fields", []) if f.get("scans")]
    bad = [f["name"] for f in observed
           if not any(i.startswith("OBSERVE_TARGET") for i in f.get("intents", []))]
    if bad:
        problems.append(f"{eb}: split kept non-target fields {bad}")
    if not observed:
        problems.append(f"{eb}: split holds no target field")
    if not summary.get("data_columns", {}).get("DATA", {}).get("filled"):
        problems.append(f"{eb}: split has no filled DATA column")
    return problems


def products_for(manifest: dict[str, Any], dec: Decisions, splits: Path) -> list[Product]:
    steps = manifest["steps"]
    out: list[Product] = []
    problems: list[str] = []
    for eb in sorted(dec.ebs):
        sp, su = steps[f"split-{eb}"], steps[f"summary-{eb}"]
        ms, summary_path, listobs = output_paths(splits, eb)
        summary = json.loads(summary_path.read_text())
        problems += check_split(eb, summary)
        spw = ",".join(map(str, sp["source_spws"]))
        m = su.get("metrics") or {}
        # a mosaic is one target with several field rows: every pointing is kept
        fields = Counter(f["name"] for f in summary["fields"] if f.get("scans"))
        out.append(Product("split_ms", str(ms), spw=spw, metrics={
            "eb": eb, "n_rows": sp["n_rows"], "source_spws": sp["source_spws"],
            "datacolumn_in": sp["datacolumn_in"], "n_fields": m.get("n_fields"),
            "targets": sorted(fields),
            "mosaic_pointings": {n: k for n, k in sorted(fields.items()) if k > 1},
            "flagged_fraction": m.get("flagged_fraction")}))
        if listobs.is_file():
            out.append(Product("listobs", str(listobs)))
        keys = ("n_fields", "n_scans", "n_spws", "n_antennas", "flagged_fraction", "datacolumn")
        out.append(Product("ms_summary", str(summary_path), spw=spw,
                           metrics={k: m.get(k) for k in keys}))
    if problems:
        raise SailsError("split output is wrong: " + "; ".join(problems))
    return out


def _usable(dec: Decisions | None, where: Path) -> Decisions:
    if dec is None:
        raise SailsError(f"no verify decisions at {where}", hint="run `sails verify` first")
    if not dec.ok:
        raise SailsError(f"verify reported problems: {'; '.join(dec.reasons)}",
                         hint="fix the data and re-run verify")
    missing: list[EbDecision] = [d for d in dec.ebs.values()
                                 if not d.science_spws or not d.datacolumn]
    if missing or not dec.ebs:
        raise SailsError(f"verify decided no science spws/data column for "
                         f"{', '.join(d.eb for d in missing) or 'any EB'}",
                         hint="reset and re-run verify")
    gone = [d.ms for d in dec.ebs.values() if not Path(d.ms).exists()]
    if gone:
        raise SailsError(f"measurement set(s) gone since verify: {', '.join(gone)}",
                         hint="re-run download and verify")
    return dec


def clean_leftovers(splits: Path) -> None:
    """Staging folders of killed split jobs (never in place, but they take disk space)."""
    for stale in splits.parent.glob(f".{splits.name}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def run(ctx: StageContext) -> Outcome:
    where = ctx.mous_dir / "verify"
    dec = _usable(read_decisions(ctx.mous_dir), where)
    splits = ctx.mous_dir / SPLITS_DIR
    clean_leftovers(splits)
    manifest = complete_outputs(splits, dec)
    if manifest is not None:
        return Outcome.done(products_for(manifest, dec, splits),
                            reason=f"already split: {len(dec.ebs)} EB(s) in {splits}")
    size = sum(Product.measure(d.ms) for d in dec.ebs.values())
    manifest = ctx.run_casa(split_steps(dec), splits,
                            timeout_s=TIMEOUT_BASE_S + TIMEOUT_PER_GB_S * size / 1e9)
    products = products_for(manifest, dec, splits)
    rows = sum(p.metrics.get("n_rows", 0) for p in products if p.kind == "split_ms")
    note = severe_note(manifest)
    return Outcome.done(products, reason=f"split {len(dec.ebs)} EB(s), {rows} rows, "
                                         f"from {dec.datacolumn}" + (f"; {note}" if note else ""))
