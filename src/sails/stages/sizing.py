"""Disk awareness on the orchestrator side: predict a stage's bytes, measure them after,
and admit a stage only when its predicted peak fits the budget and the free-space floor.

The formulas are :mod:`sails.sizes`; this module gathers their inputs from the catalog
(DataLink sizes, verify's MS facts, ObsCore resolution and field of view) and measures
folders on disk. The catalog itself never touches the file system: the engine asks
:func:`admission` before it claims a row, and changes states through the catalog.
"""

from __future__ import annotations

import shutil
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from sails import sizes
from sails.archive.ingest import download_plan
from sails.catalog import Product, StageRow
from sails.catalog.model import FINISHED
from sails.constants import C_KMS
from sails.pipeline import PIPELINE
from sails.stages.base import safe_name
from sails.stages.selfcal import WORKDIR_NAME
from sails.stages.split import SPLITS_DIR
from sails.stages.verify import VERIFY_DIR

PRODUCTS_DIR = "products"
# Most a TOPO frequency differs from LSRK: the Earth's orbit (30 km/s) and rotation, plus
# the Sun's motion relative to the LSR (20 km/s).
TOPO_LSRK_KMS = 50.0


def du(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder; 0 when missing), symlinks not followed."""
    return Product.measure(path)


def stage_folder(project, row: StageRow) -> Path | None:
    """The folder a stage writes (measured after it ran); None: it writes none of its own."""
    mous_dir = project.mous_dir(row.mous_id)
    return {"verify": mous_dir / VERIFY_DIR, "split": mous_dir / SPLITS_DIR,
            "findcont": mous_dir / "findcont", "auto_selfcal": mous_dir / WORKDIR_NAME,
            "image": mous_dir / PRODUCTS_DIR / safe_name(row.target or "x")}.get(row.stage)


def measure(project, row: StageRow) -> int:
    """What the stage left on disk: its folder, or (download) its recorded products."""
    if row.stage in ("download", "restore"):
        return sum(du(Path(p["path"])) for p in project.catalog.products(row.mous_id,
                                                                         stage=row.stage))
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
    facts = _ms_facts(catalog, mous_id)
    if facts:
        return sizes.split(facts).final_bytes
    # Before verify: a split keeps at most every row and channel of the delivery.
    return sizes.split_upper_bound(_delivered_bytes(catalog, mous_id))


def _delivered_bytes(catalog, mous_id: str) -> int:
    got = [p["bytes"] or 0 for st in ("download", "restore")
           for p in catalog.products(mous_id, stage=st) if p["kind"] == "ms"]
    if got:
        return sum(got)
    return _download_prediction(catalog, mous_id).final_bytes


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
    if not spws:  # before verify: the ObsCore rows' spw ranges and resolutions
        spws = [[t["min_freq_ghz"] * 1e9, t["max_freq_ghz"] * 1e9, t["freq_res_khz"] * 1e3]
                for t in rows if t.get("min_freq_ghz") and t.get("max_freq_ghz")
                and t.get("freq_res_khz")]
    vsys = s.target_velocities_kms.get(row.target, s.systemic_velocity_kms) or 0.0
    chans = []
    line_share = 0.0
    for ln in catalogue(s.lines) if s.make_cubes else []:
        rest = ln.rest_ghz * 1e9
        sky = rest * (1 - vsys / C_KMS)
        # Verify's spw frequencies are TOPO, the line's are LSRK: they differ by up to
        # TOPO_LSRK_KMS, more than a narrow line window is wide.
        margin = sky * TOPO_LSRK_KMS / C_KMS
        hit = [w for w in spws if w[0] - margin <= sky <= w[1] + margin]
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


def _download_prediction(cat, mous_id: str) -> sizes.Prediction:
    files = download_plan(cat, mous_id).files
    if any(f.get("size") is None for f in files if f["kind"] == "srdp"):
        # An SRDP restore is crawled, its size unknown: the DataLink listing of the same
        # MOUS's calibrated products is the best estimate of what it delivers.
        files = [f for f in files if f["kind"] != "srdp"] + [
            f for f in cat.files(mous_id) if f["kind"] == "product"
            and "content=datalink" not in (f.get("content_type") or "")]
    tars = [f["size"] for f in files
            if f.get("size") and str(f.get("filename") or f["url"]).endswith(".tar")]
    return sizes.download([f.get("size") for f in files], tars)


def predict(project, row: StageRow) -> sizes.Prediction:
    """The size model's prediction for ``row`` from what the catalog knows now."""
    cat = project.catalog
    if row.stage == "download":
        return _download_prediction(cat, row.mous_id)
    if row.stage == "restore":
        down = cat.products(row.mous_id, stage="download")
        if any(p["kind"] == "ms" for p in down):
            return sizes.restore(0)  # an SRDP restore: skipped
        if down:
            return sizes.restore(sum(p["bytes"] or 0 for p in down if p["kind"] == "raw_asdm"))
        from sails.archive.ingest import download_plan  # before download: the listed sizes

        plan = download_plan(cat, row.mous_id)
        return sizes.restore(sum(f.get("size") or 0 for f in plan.files if f["kind"] == "raw")
                             if plan.source == "raw" else 0)
    if row.stage == "verify":
        n = sum(1 for st in ("download", "restore") for p in cat.products(row.mous_id, stage=st)
                if p["kind"] == "ms")
        return sizes.verify(max(1, n))
    if row.stage == "split":
        facts = _ms_facts(cat, row.mous_id)
        if not facts:
            n = _split_bytes(cat, row.mous_id)
            return sizes.Prediction(n, n, "upper bound from the delivery size")
        return sizes.split(facts)
    if row.stage == "findcont":
        widths = [w for p in cat.products(row.mous_id, stage="verify")
                  for w in ((p["metrics"] or {}).get("sizes") or {}).get(
                      "science_spw_widths", []) if None not in w]
        chans = [max(1, round(abs(w[1] - w[0]) / abs(w[2]))) for w in widths if w[2]]
        return sizes.findcont(len(cat.target_names(row.mous_id)), chans)
    if row.stage == "auto_selfcal":
        return sizes.auto_selfcal(_split_bytes(cat, row.mous_id),
                                  full_res=project.settings.selfcal.apply_full_res)
    if row.stage == "image":
        facts = _image_facts(project, row)
        if facts is None:
            return sizes.Prediction(0, 0, "no ObsCore resolution/FoV")
        s = project.settings.imaging
        return sizes.image(facts[0], s.pixels_per_beam, s.pb_factor, contsub_bytes=facts[1])
    return sizes.Prediction(0, 0, "writes no files of its own")


# ------------------------------------------------------------------ admission
DISK_FULL_BYTES = 1 << 20  # less than this free: a failed write most likely hit a full disk
DISK_FULL_TEXT = "disk full"  # how a stage's error starts when its disk filled up


def write_roots(project, row: StageRow) -> list[Path]:
    """Where ``row``'s stage writes: its MOUS folder, the work area, the project space
    (each may be a file system of its own)."""
    return [project.mous_dir(row.mous_id), project.work, project.root]


def disk_nearly_full(*paths: Path) -> bool:
    """Is any of ``paths`` (the nearest existing folder) on a file system with next to
    nothing free?"""
    for path in paths:
        while not path.exists() and path != path.parent:
            path = path.parent
        with suppress(OSError):
            if shutil.disk_usage(path).free < DISK_FULL_BYTES:
                return True
    return False


def requeue_disk_full(project, mous=None) -> list[StageRow]:
    """Stages that failed on a full disk back to pending, once none of their file systems is
    full any more (a run starts with this: free space, run again, it completes). Each is
    retried once per run, so a disk that stays full cannot make a run loop."""
    from sails.catalog import Failure

    cat, out = project.catalog, []
    for row in cat.stages(status="failed"):
        if row.reason_code != Failure.DISK_FULL.value or (mous and row.mous_id not in mous):
            continue
        if not disk_nearly_full(*write_roots(project, row)):
            out.append(cat.requeue(row.id, "sails", "disk space freed: trying again"))
    return out

# ------------------------------------------------------------------ the whole MOUS
def download_work(project, mous_id: str) -> Path:
    """The download stage's staging area of ``mous_id`` (tarballs, ``.part`` files)."""
    return project.work / "download" / project.mous_dir(mous_id).name


def first_stage(stage: str) -> bool:
    """A stage with no prerequisites starts a MOUS (today: download)."""
    return not PIPELINE.get(stage).after


def mous_peak(project, mous_id: str, rows: list[StageRow] | None = None) -> int:
    """Predicted most bytes ``mous_id`` holds at once on its way to cleanup: stages in table
    order, each adding its predicted peak on top of what the earlier ones left (their
    measured bytes once done). Before verify, split and self-cal are upper bounds from the
    delivery size, so this errs on the large side."""
    rows = project.catalog.stages(mous_id) if rows is None else rows
    held = peak = 0
    for st in PIPELINE:
        if st.name == "cleanup":
            break
        for row in (r for r in rows if r.stage == st.name):
            if row.status == "done" and row.measured_bytes is not None:
                held += row.measured_bytes
                peak = max(peak, held)
                continue
            with suppress(OSError, KeyError, ValueError, TypeError):
                p = predict(project, row)
                peak = max(peak, held + p.peak_bytes)
                held += p.final_bytes
    return peak


def in_progress(rows: list[StageRow]) -> bool:
    """The MOUS has started (its first stage ran) and still has work that will run without
    a person: it will keep growing until its cleanup."""
    from sails.catalog import Block

    started = [r for r in rows if first_stage(r.stage)]
    if not started or any(r.status not in ("done", "running") for r in started):
        return False
    if any(r.status == "running" for r in rows):
        return True
    stuck = any(r.status == "failed" or (r.status == "blocked" and r.reason_code != Block.DISK)
                for r in rows)
    return not stuck and any(r.status in ("pending", "blocked") for r in rows)


class DiskView:
    """Bytes under a path, measured at most once per catalog change (the last event id:
    any stage claimed, finished or blocked) and at most every ``DU_TTL_S``: walking a
    survey's project space on every claim attempt would cost more than the jobs. Bytes a
    running stage adds meanwhile are covered by its reserved predicted peak."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[float, int, int]] = {}
        self.walks = 0  # how many times a tree was walked (tests, benchmarks)

    def du(self, catalog, path: Path) -> int:
        key = catalog.query("SELECT COALESCE(MAX(id), 0) FROM events")[0][0]
        now = time.monotonic()
        hit = self._seen.get(path)
        if hit and hit[1] == key and now - hit[0] < DU_TTL_S:
            return hit[2]
        n = du(path)
        self.walks += 1
        self._seen[path] = (now, key, n)
        return n


DU_TTL_S = 30.0
DISK_VIEW = DiskView()


def mous_bytes(project, mous_id: str, view: DiskView = DISK_VIEW) -> int:
    cat = project.catalog
    return view.du(cat, project.mous_dir(mous_id)) + view.du(cat, download_work(project, mous_id))


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


def _room(project, used: int | None) -> tuple[int, str] | None:
    """Bytes the project may still write (the tighter of budget and free-space floor)."""
    st = project.settings.storage
    room: list[tuple[int, str]] = []
    with suppress(OSError):
        free_disk = shutil.disk_usage(project.root).free - int(st.free_floor_gb * 1e9)
        room.append((free_disk, f"free on disk above the {st.free_floor_gb:g} GB floor"))
    if st.budget_gb is not None:
        used = du(project.root) if used is None else used
        room.append((int(st.budget_gb * 1e9) - used,
                     f"left of the {st.budget_gb:g} GB budget ({gb(used)} in use)"))
    return min(room) if room else None


def admission(project, row: StageRow, reserved: int = 0, used: int | None = None,
              mous_need: int | None = None) -> Admission:
    """May ``row`` start now? Its predicted peak, plus ``reserved`` (the predicted peaks of
    stages already running), must fit under ``storage.budget_gb`` (project space in use) and
    leave ``storage.free_floor_gb`` free on the disk. ``mous_need``: for a MOUS's first
    stage, the bytes the whole MOUS will need (with ``reserved`` the growth still ahead of
    the MOUS in progress), so a new MOUS starts only when it can finish."""
    need = predict(project, row).peak_bytes
    if row.stage == "download":  # ``.part`` files of an interrupted attempt are there already
        need = max(0, need - du(download_work(project, row.mous_id)))
    room = _room(project, used)
    if room is None:
        return Admission(True, need, 0, "no limit")
    free, what = room
    free -= reserved
    want = need if mous_need is None else max(need, mous_need)
    if want <= free:
        return Admission(True, need, free, "fits")
    if mous_need is not None:
        held = f", {gb(reserved)} still ahead of the MOUS in progress" if reserved else ""
        return Admission(False, need, free,
                         f"the MOUS needs {gb(want)} ({want} bytes) at its peak, "
                         f"{gb(max(free, 0))} {what}{held}")
    held = f", {gb(reserved)} held by running stages" if reserved else ""
    return Admission(False, need, free,
                     f"needs {gb(need)} ({need} bytes), {gb(max(free, 0))} {what}{held}")


def source_partners(catalog) -> dict[str, dict[str, set[str]]]:
    """MOUS -> {source: the other MOUS of it} for sources whose source stage is still to run:
    the source stage reads every member's data, so a member's cleanup waits for the others
    and they must be on disk together."""
    open_sources = {r["name"] for r in catalog.source_stages()
                    if r["status"] not in FINISHED}
    out: dict[str, dict[str, set[str]]] = {}
    for src in catalog.sources():
        members = {m["mous_id"] for m in src["members"]}
        if src["name"] in open_sources and len(members) > 1:
            for m in members:
                out.setdefault(m, {})[src["name"]] = members - {m}
    return out


def reserved_bytes(catalog) -> int:
    """Predicted peaks of the stages running now (any process): space they may still take."""
    return sum(r.predicted_peak_bytes or 0 for r in catalog.stages(status="running"))


class _Round:
    """What one claim attempt knows about the disk: measured once, shared by every row."""

    def __init__(self, project, view: DiskView) -> None:
        self.project, self.view = project, view
        cat = project.catalog
        self.limited = project.settings.storage.budget_gb is not None
        self.used = view.du(cat, project.root) if self.limited else None
        self.reserved = reserved_bytes(cat)
        self._growth: int | None = None
        self.busy = 0  # MOUS in progress (started, not yet cleaned up)
        self.started: set[str] = set()  # their ids
        self._partners: dict[str, dict[str, set[str]]] | None = None
        self.queue_full = False  # a new MOUS did not fit: later ones wait their turn

    def growth(self) -> int:
        """Bytes the MOUS in progress will still add before their cleanup."""
        if self._growth is None:
            cat, total = self.project.catalog, 0
            by_mous: dict[str, list[StageRow]] = {}
            for r in cat.stages():
                by_mous.setdefault(r.mous_id, []).append(r)
            for m, rows in by_mous.items():
                if in_progress(rows):
                    self.busy += 1
                    self.started.add(m)
                    total += max(0, mous_peak(self.project, m, rows)
                                 - mous_bytes(self.project, m, self.view))
            self._growth = total
        return self._growth

    def awaited_by(self, mous_id: str) -> dict[str, set[str]]:
        """{source: MOUS in progress} that cannot finish without ``mous_id`` (they share a
        source whose stage has not run): such a MOUS goes ahead of the queue."""
        if self._partners is None:
            self._partners = source_partners(self.project.catalog) if self.limited else {}
        wanted = self._partners.get(mous_id, {})
        if not wanted:
            return {}
        self.growth()
        return {s: ms & self.started for s, ms in wanted.items() if ms & self.started}

    def order(self, rows: list[StageRow]) -> list[StageRow]:
        """Queue order, except that a MOUS awaited by one in progress starts first."""
        return sorted(rows, key=lambda r: not (first_stage(r.stage)
                                               and self.awaited_by(r.mous_id)))

    def admit(self, row: StageRow) -> Admission | None:
        """None: a new MOUS behind one that did not fit (first come, first started)."""
        if not first_stage(row.stage):
            return admission(self.project, row, self.reserved, self.used)
        if self.queue_full:
            return None
        adm = admission(self.project, row, self.growth(), self.used,
                        mous_need=mous_peak(self.project, row.mous_id))
        if not adm.ok and self.busy == 0:
            # Nothing else in progress: the MOUS starts on its first stage's own peak (the
            # whole-MOUS figure is an upper bound); later stages are admitted one by one.
            adm = admission(self.project, row, 0, self.used)
        awaited = self.awaited_by(row.mous_id) if not adm.ok else {}
        if awaited:  # without this reason the waiting MOUS would sit pending, unexplained
            who = "; ".join(f"source {s!r} ({', '.join(sorted(ms))} on disk, waiting for it)"
                            for s, ms in sorted(awaited.items()))
            adm.detail += (f"; its source partners cannot finish without it: {who}; the "
                           f"source stage needs its members on disk together, so raise "
                           f"storage.budget_gb or exclude a member in [sources]")
        self.queue_full = not adm.ok
        return adm


def claim_admitted(project, owner: str, lease_s: float, stages=None, mous=None,
                   view: DiskView = DISK_VIEW) -> StageRow | None:
    """Claim the oldest runnable row whose predicted peak fits the disk (see
    :func:`admission`); rows that do not fit go ``blocked`` (code ``disk``) with the bytes
    needed and free, and rows blocked so earlier go back to pending once they fit. A MOUS's
    first stage is admitted only when the whole MOUS fits beside the growth still ahead of
    the MOUS in progress, in queue order: with a budget too small for two MOUS at once they
    run one after the other."""
    from sails.catalog import Block

    cat = project.catalog
    rnd = _Round(project, view)
    for row in rnd.order(cat.stages(status="blocked")):
        if row.reason_code != Block.DISK.value or (stages and row.stage not in stages) or (
                mous and row.mous_id not in mous):
            continue
        adm = rnd.admit(row)
        if adm is not None and adm.ok:
            cat.unblock(row.id, f"disk space available ({adm.detail})", only_code=Block.DISK)
    rnd.queue_full = False
    for row in rnd.order(cat.runnable(stages=stages, mous=mous)):
        adm = rnd.admit(row)
        if adm is None:
            continue
        if not adm.ok:
            with suppress(Exception):  # someone else claimed or changed it meanwhile
                cat.block(row.id, None, Block.DISK, adm.detail)
            continue
        claimed = cat.claim(row.id, owner, lease_s)
        if claimed is not None:  # its peak counts as reserved for the next admission at once
            cat.set_sizes(claimed.id, predicted_peak=adm.needed)
            return claimed
    return None
