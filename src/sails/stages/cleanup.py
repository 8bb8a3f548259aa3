"""The ``cleanup`` stage (per MOUS, after every target's image): remove bulky intermediates.

What goes follows ``[storage]`` (all on by default: a survey keeps its products and its
delivered data, not the working copies that are several times their size):

- ``remove_download_work``: ``work/download/<mous>/`` (tarballs, ``.part`` files) once the
  download stage recorded its verified, extracted products;
- ``remove_splits``: the split ``*_targets.ms`` (recorded ``split_ms`` products);
- ``remove_selfcal_work``: everything in the auto-selfcal folder that is not, and does not
  hold, a kept self-cal product (summary, gain tables, initial/final FITS, weblog, the run's
  manifest); the ``*.selfcal.ms`` too unless ``keep_selfcal_ms``;
- ``remove_casa_images``: ``products/<target>/casa/`` once that target's FITS are on disk,
  and ``work/chunks/`` (chunk jobs of a chunked cube that a failed or reset image stage
  left: an assembled cube's chunks are removed by the image stage itself);
- ``remove_raw_delivery``: ``datasets_raw/<mous>/`` (ASDMs, caltables, scripts) once the
  restore stage restored it into measurement sets (verified, since cleanup comes last).

It never removes a path that is, or holds, a product recorded as final (every product not
named above), nor a delivered measurement set. Crash-safe: the list of paths is written
first (``.sails-cleanup.json`` in the MOUS folder), then each path is removed, then the
catalog marks the products under them ``removed_at``; a rerun after a kill merges the list
it finds, removes what is left and marks everything listed, so catalog and disk agree.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from sails.atomic import write_json_atomic
from sails.stages.base import Outcome, StageContext
from sails.stages.image_chunks import CHUNKS_SUBDIR
from sails.stages.selfcal import WORKDIR_NAME
from sails.stages.sizing import PRODUCTS_DIR, du, gb
from sails.stages.split import SPLITS_DIR

PLAN_NAME = ".sails-cleanup.json"
# recorded products cleanup may remove
REMOVABLE_KINDS = {"split_ms", "selfcal_ms", "selfcal_fullres_ms"}
KEEP_IN_SELFCAL = {"result.json"}  # the run's manifest (the selfcal stage reads it)
FITS_KINDS = {"cont_image", "cube"}


@dataclass(frozen=True)
class Removal:
    path: Path
    why: str
    bytes: int


def _under(path: Path, other: Path) -> bool:
    return other == path or other.is_relative_to(path)


def plan(project, mous_id: str) -> list[Removal]:
    """What cleanup would remove for ``mous_id`` now (paths that exist), with sizes."""
    st = project.settings.storage
    cat = project.catalog
    mous_dir = project.mous_dir(mous_id)
    products = [p for p in cat.products(mous_id) if not p.get("removed_at")]
    removable_kinds = {"split_ms"} if st.remove_splits else set()
    if st.remove_selfcal_work and not st.keep_selfcal_ms:
        removable_kinds |= {"selfcal_ms", "selfcal_fullres_ms"}  # cubes are made by now
    raw_dir = project.datasets_raw / mous_dir.name
    restored = st.remove_raw_delivery and any(
        p["kind"] == "ms" for p in cat.products(mous_id, stage="restore"))
    keep = [Path(p["path"]) for p in products if p["kind"] not in removable_kinds
            and not (restored and _under(raw_dir, Path(p["path"])))]
    cands: list[tuple[Path, str]] = []
    if restored:
        cands.append((raw_dir, "raw delivery (restored into measurement sets and verified)"))
    if st.remove_download_work and cat.products(mous_id, stage="download"):
        cands.append((project.work / "download" / mous_dir.name,
                      "download work area (tarballs, partial files)"))
    if st.remove_splits:
        cands += [(Path(p["path"]), "split working copy") for p in products
                  if p["kind"] == "split_ms"]
        cands.append((mous_dir / SPLITS_DIR, "split folder"))
    if st.remove_selfcal_work:
        work = mous_dir / WORKDIR_NAME
        if work.is_dir():
            cands += [(e, "auto-selfcal working file") for e in sorted(work.iterdir())
                      if e.name not in KEEP_IN_SELFCAL]
    if st.remove_casa_images:
        for folder in sorted((mous_dir / PRODUCTS_DIR).glob("*/casa")):
            fits = [Path(p["path"]) for p in products if p["kind"] in FITS_KINDS
                    and Path(p["path"]).parent == folder.parent]
            if fits and all(f.is_file() for f in fits):
                cands.append((folder, "CASA images (their FITS are written)"))
        cands.append((mous_dir / CHUNKS_SUBDIR, "chunked-cube jobs left by an unfinished "
                      "image stage"))
    out, seen = [], set()
    for path, why in cands:
        if path in seen or not path.exists() or any(_under(path, k) for k in keep):
            continue  # never a final product, nor a folder holding one
        seen.add(path)
        out.append(Removal(path, why, du(path)))
    return out


def _plan_file(ctx: StageContext) -> Path:
    return ctx.mous_dir / PLAN_NAME


def run(ctx: StageContext) -> Outcome:
    if not ctx.settings.storage.cleanup:
        return Outcome.skipped("cleanup is off (storage.cleanup = false)")
    listed_file = _plan_file(ctx)
    earlier: list[str] = []
    if listed_file.is_file():  # an interrupted cleanup: finish what it listed
        try:
            earlier = json.loads(listed_file.read_text()).get("paths", [])
        except (OSError, ValueError):
            earlier = []
    todo = plan(ctx.project, ctx.mous_id)
    paths = sorted(set(earlier) | {str(r.path) for r in todo})
    write_json_atomic(listed_file, {"paths": paths})
    freed = 0
    for p in map(Path, paths):
        if p.is_dir() and not p.is_symlink():
            freed += du(p)
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            freed += du(p)
            p.unlink()
    gone = [str(p["path"]) for p in ctx.catalog.products(ctx.mous_id)
            if not p.get("removed_at") and any(_under(Path(x), Path(p["path"]))
                                               for x in paths)]
    ctx.catalog.mark_removed(gone)
    listed_file.unlink(missing_ok=True)
    return Outcome.done(reason=f"removed {len(paths)} path(s), {gb(freed)} freed")
