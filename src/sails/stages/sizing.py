"""Disk awareness on the orchestrator side: predict a stage's bytes, measure them after,
and admit a stage only when its predicted peak fits the budget and the free-space floor.

The formulas are :mod:`sails.sizes`; this module gathers their inputs from the catalog
(DataLink sizes, verify's MS facts, ObsCore resolution and field of view) and measures
folders on disk. The catalog itself never touches the file system: the engine asks
:func:`admission` before it claims a row, and changes states through the catalog.
"""

from __future__ import annotations

import os
import shutil
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from sails import sizes
from sails.archive.ingest import download_plan
from sails.catalog import StageRow
from sails.constants import C_KMS
from sails.stages.base import safe_name
from sails.stages.selfcal import WORKDIR_NAME
from sails.stages.split import SPLITS_DIR
from sails.stages.verify import VERIFY_DIR

PRODUCTS_DIR = "products"


def du(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder; 0 when missing), symlinks not followed."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def stage_folder(project, row: StageRow) -> Path | None:
    """The folder a stage writes (measured after it ran); None: it writes none of its own."""
    mous_dir = project.mous_dir(row.mous_id)
    return {"verify": mous_dir / VERIFY_DIR, "split": mous_dir / SPLITS_DIR,
            "auto_selfcal": mous_dir / WORKDIR_NAME,
            "image": mous_dir / PRODUCTS_DIR / safe_name(row.target or "x")}.get(row.stage)


def measure(project, row: StageRow) -> int:
    """What the stage left on disk: its folder, or (download) its recorded products."""
    if row.stage == "download":
        return sum(du(Path(p["path"])) for p in project.catalog.products(row.mous_id,
                                                                         stage="download"))
    folder = stage_folder(project, row)
    return du(folder) if folder else 0


# ------------------------------------------------------------------ facts
def _ms_facts(catalog, mous_id: str) -> list[sizes.MsFacts]:
    out = []
    for p in catalog.products(mous_id, stage="verify"):
        f = (p["metrics"] or {}).get("sizes")
        if p["kind"] == "ms_summary" and f:
            out.append(sizes.MsFacts(bytes=f["ms_bytes"], n_rows=f["n_rows"],
                                     n_vis=f["n_visibilities"],
                                     target_fraction=f["target_fraction"],
                                     science_fraction=f["science_fraction"]))
    return out


def _split_bytes(catalog, mous_id: str) -> int:
    recorded = [p["bytes"] or 0 for p in catalog.products(mous_id, stage="split")
                if p["kind"] == "split_ms"]
    if recorded:
        return sum(recorded)
    return sizes.split(_ms_facts(catalog, mous_id)).final_bytes


def _image_facts(project, row: StageRow) -> tuple[sizes.ImageFacts, int] | None:
    from sails.imaging.lines import catalogue

    cat, s = project.catalog, project.settings.imaging
    rows = [t for t in cat.targets(row.mous_id) if t["alma_source_name"] == row.target]
    res = [t["s_resolution"] for t in rows if t.get("s_resolution")]
    fov = [t["s_fov"] for t in rows if t.get("s_fov")]
    if not res or not fov:
        return None
    spws = [w for p in cat.products(row.mous_id, stage="verify")
            for w in ((p["metrics"] or {}).get("sizes") or {}).get("science_spw_widths", [])
            if None not in w]
    vsys = s.target_velocities_kms.get(row.target, s.systemic_velocity_kms)
    chans = []
    line_share = 0.0
    for ln in catalogue(s.lines) if s.make_cubes else []:
        rest = ln.rest_ghz * 1e9
        sky = rest * (1 - vsys / C_KMS)
        hit = [w for w in spws if w[0] <= sky <= w[1]]
        if not hit:
            continue
        lo, hi, width = min(hit, key=lambda w: w[2])
        native = C_KMS * abs(width) / rest
        want = max(native, s.channel_width_kms or 0.0)
        n = sizes.cube_channels(s.velocity_window_kms, want, C_KMS * (hi - lo) / rest)
        if n:
            chans.append(n)
            total = sum((w[1] - w[0]) / abs(w[2]) for w in spws) or 1.0
            line_share += ((hi - lo) / abs(width)) / total
    n_targets = max(1, len(cat.target_names(row.mous_id)))
    contsub = int(_split_bytes(cat, row.mous_id) * min(1.0, line_share) / n_targets
                  * sizes.CONTSUB_FACTOR)
    return sizes.ImageFacts(min(res), max(fov) * 3600.0, chans), contsub


def predict(project, row: StageRow) -> sizes.Prediction:
    """The size model's prediction for ``row`` from what the catalog knows now."""
    cat = project.catalog
    if row.stage == "download":
        plan = download_plan(cat, row.mous_id)
        files = plan.files
        if any(f.get("size") is None for f in files if f["kind"] == "srdp"):
            # An SRDP restore is crawled, its size unknown: the DataLink listing of the same
            # MOUS's calibrated products is the best estimate of what it delivers.
            files = [f for f in files if f["kind"] != "srdp"] + [
                f for f in cat.files(row.mous_id) if f["kind"] == "product"
                and "content=datalink" not in (f.get("content_type") or "")]
        tars = [f["size"] for f in files
                if f.get("size") and str(f.get("filename") or f["url"]).endswith(".tar")]
        return sizes.download([f.get("size") for f in files], tars)
    if row.stage == "verify":
        n = sum(1 for p in cat.products(row.mous_id, stage="download") if p["kind"] == "ms")
        return sizes.verify(max(1, n))
    if row.stage == "split":
        return sizes.split(_ms_facts(cat, row.mous_id))
    if row.stage == "auto_selfcal":
        return sizes.auto_selfcal(_split_bytes(cat, row.mous_id))
    if row.stage == "image":
        facts = _image_facts(project, row)
        if facts is None:
            return sizes.Prediction(0, 0, "no ObsCore resolution/FoV")
        s = project.settings.imaging
        return sizes.image(facts[0], s.pixels_per_beam, s.pb_factor, contsub_bytes=facts[1])
    return sizes.Prediction(0, 0, "writes no files of its own")


# ------------------------------------------------------------------ admission
DISK_FULL_BYTES = 1 << 20  # less than this free: a failed write most likely hit a full disk


def disk_nearly_full(root: Path) -> bool:
    try:
        return shutil.disk_usage(root).free < DISK_FULL_BYTES
    except OSError:
        return False

@dataclass
class Admission:
    ok: bool
    needed: int  # bytes the stage is predicted to need at its peak
    free: int  # bytes it may still use (the tighter of budget and free-space floor)
    detail: str

    @property
    def message(self) -> str:
        return self.detail


def gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def admission(project, row: StageRow, reserved: int = 0, used: int | None = None) -> Admission:
    """May ``row`` start now? Its predicted peak, plus ``reserved`` (the predicted peaks of
    stages already running), must fit under ``storage.budget_gb`` (project space in use) and
    leave ``storage.free_floor_gb`` free on the disk."""
    st = project.settings.storage
    need = predict(project, row).peak_bytes
    room: list[tuple[int, str]] = []
    with suppress(OSError):
        free_disk = shutil.disk_usage(project.root).free - int(st.free_floor_gb * 1e9)
        room.append((free_disk, f"free on disk above the {st.free_floor_gb:g} GB floor"))
    if st.budget_gb is not None:
        used = du(project.root) if used is None else used
        room.append((int(st.budget_gb * 1e9) - used,
                     f"left of the {st.budget_gb:g} GB budget ({gb(used)} in use)"))
    if not room:
        return Admission(True, need, 0, "no limit")
    free, what = min(room)
    free -= reserved
    if need <= free:
        return Admission(True, need, free, "fits")
    held = f", {gb(reserved)} held by running stages" if reserved else ""
    return Admission(False, need, free,
                     f"needs {gb(need)} ({need} bytes), {gb(max(free, 0))} {what}{held}")


def reserved_bytes(catalog) -> int:
    """Predicted peaks of the stages running now (any process): space they may still take."""
    return sum(r.predicted_peak_bytes or 0 for r in catalog.stages(status="running"))


def claim_admitted(project, owner: str, lease_s: float, stages=None, mous=None
                   ) -> StageRow | None:
    """Claim the oldest runnable row whose predicted peak fits the disk (see
    :func:`admission`); rows that do not fit go ``blocked`` (code ``disk``) with the bytes
    needed and free, and rows blocked so earlier go back to pending once they fit."""
    from sails.catalog import Block

    cat = project.catalog
    limited = project.settings.storage.budget_gb is not None
    used = du(project.root) if limited else None
    reserved = reserved_bytes(cat)
    for row in cat.stages(status="blocked"):
        if row.reason_code != Block.DISK.value or (stages and row.stage not in stages) or (
                mous and row.mous_id not in mous):
            continue
        adm = admission(project, row, reserved, used)
        if adm.ok:
            cat.unblock(row.id, f"disk space available ({adm.detail})", only_code=Block.DISK)
    for row in cat.runnable(stages=stages, mous=mous):
        adm = admission(project, row, reserved, used)
        if not adm.ok:
            with suppress(Exception):  # someone else claimed or changed it meanwhile
                cat.block(row.id, None, Block.DISK, adm.detail)
            continue
        claimed = cat.claim(row.id, owner, lease_s)
        if claimed is not None:  # its peak counts as reserved for the next admission at once
            cat.set_sizes(claimed.id, predicted_peak=adm.needed)
            return claimed
    return None
