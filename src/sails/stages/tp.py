"""Total-power MOUS: no visibilities, only the delivered FITS cubes.

ALMA delivers a TP MOUS as image products (``*.sd.cube.I.pbcor.fits``, or ``*.tp.*``), never
as measurement sets. Such a MOUS is downloaded like any other; every CASA stage after that
(restore, verify, split, findcont, self-cal, image) has nothing to work on and is skipped
with the reason, and ``verify`` records the cubes (kind ``tp_cube``): the member's products,
which the source stage feathers into its sources' joint cubes.
"""

from __future__ import annotations

from pathlib import Path

from sails.catalog import Product
from sails.sources import array_of

TP_SUFFIXES = (".sd.cube.I.pbcor.fits", ".tp.cube.I.pbcor.fits")
TP_KIND = "tp_cube"
RUNS_FOR_TP = ("download", "cleanup")  # the stages a TP MOUS still runs


def tp_cubes(mous_dir: Path) -> list[Path]:
    """The delivered TP cubes under a MOUS folder."""
    return sorted(p for suf in TP_SUFFIXES for p in mous_dir.rglob(f"*{suf}") if p.is_file())


def tp_skip(project, row) -> tuple[str, list[Product]] | None:
    """(why the stage is skipped, products to record) for a stage of a TP-only MOUS; None
    for any other MOUS or stage."""
    if row.stage in RUNS_FOR_TP or not row.mous_id:
        return None
    mous = project.catalog.mous(row.mous_id)
    if array_of(mous.get("antenna_arrays")) != "TP":
        return None
    folder = project.mous_dir(row.mous_id)
    if any(folder.glob("*.ms")):
        return None
    cubes = tp_cubes(folder)
    names = ", ".join(p.name for p in cubes) or "none found yet"
    why = (f"total-power MOUS: no visibilities to {row.stage}; its delivered cube(s) "
           f"({names}) are its products")
    prods = [Product(TP_KIND, str(p), target="") for p in cubes] if row.stage == "verify" else []
    return why, prods
