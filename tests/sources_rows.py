"""ObsCore rows for source-grouping tests, built from the recorded real ALMA answer.

``alma-onerow.txt`` is a real 12-m MOUS of project 2017.1.00079.S (M83, group OUS
uid://A001/X1295/X34, band 3 mosaic). ALMA observes such a field with sibling MOUS of the
same group OUS: the 7-m array and total power, same target name and position, coarser
resolution, antennas CMxx (7-m) and PMxx (TP). The siblings here differ from the real row
only in what ALMA changes between them.
"""

from __future__ import annotations

from typing import Any

from sails.archive import read_obscore_file
from sails.archive.ingest import ingest_records
from sails.archive.tables import InputTable
from sails.fakes.tap import shared_testdata_dir

ARCHIVE = shared_testdata_dir() / "alma-archive"
GROUP = "uid://A001/X1295/X34"
M83_12M = "uid://A001/X1295/X35"  # the real row
M83_7M = "uid://A001/X1295/X37"
M83_TP = "uid://A001/X1295/X39"
ANTENNAS = {
    "7m": " ".join(f"J5{i:02d}:CM{i:02d}" for i in range(1, 11)),
    "TP": " ".join(f"T70{i}:PM0{i}" for i in range(1, 4)),
}
RESOLUTION = {"7m": 8.9, "TP": 56.0}


def real_row() -> tuple[list[str], dict[str, Any]]:
    table = read_obscore_file(ARCHIVE / "alma-onerow.txt")
    return table.columns, dict(table.rows[0])


def sibling(row: dict[str, Any], mous: str, array: str | None = None, *,
            group: str | None = None, name: str | None = None,
            offset_arcsec: tuple[float, float] = (0.0, 0.0),
            resolution: float | None = None) -> dict[str, Any]:
    """The row as a sibling MOUS would carry it: another uid, the 7-m/TP antennas and
    resolution, optionally another group, name or position."""
    out = dict(row)
    out["member_ous_uid"] = mous
    out["obs_id"] = mous
    out["access_url"] = f"http://almascience.org/aq?member_ous_id={mous}"
    if array:
        out["antenna_arrays"] = ANTENNAS[array]
        out["s_resolution"] = out["spatial_resolution"] = RESOLUTION[array]
    if resolution is not None:
        out["s_resolution"] = out["spatial_resolution"] = resolution
    if group:
        out["group_ous_uid"] = group
    if name:
        out["target_name"] = name
    import math

    dra, ddec = offset_arcsec
    out["s_dec"] = float(row["s_dec"]) + ddec / 3600
    out["s_ra"] = float(row["s_ra"]) + dra / 3600 / math.cos(math.radians(float(row["s_dec"])))
    return out


def ingest(catalog, columns: list[str], rows: list[dict[str, Any]]) -> None:
    rs = InputTable("test rows", columns, rows).records()
    assert rs.problems == []
    ingest_records(catalog, rs)
