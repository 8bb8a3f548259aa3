"""Synthetic ALMA ObsCore rows (real column names and value formats) and ALminer CSVs.

For tests and benchmarks of the ingest path: one row per (MOUS, source, science spw), with
``obs_id`` ``<mous>.source.<name>.spw.<N>``, a ``frequency_support`` string listing every
window of the MOUS, and the ALminer derived columns when written as an ALminer CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sails.constants import C_M_S

SPWS = (25, 27, 29, 31)
# Band 6 windows (GHz): (low, high, channel kHz)
WINDOWS = ((216.0, 217.875, 976.56), (218.0, 219.875, 488.28), (230.0, 231.875, 244.14),
           (232.0, 233.875, 31250.0))

ALMINER_COLUMNS = (
    "Obs", "project_code", "ALMA_source_name", "RAJ2000", "DEJ2000", "ang_res_arcsec",
    "min_freq_GHz", "max_freq_GHz", "central_freq_GHz", "bandwidth_GHz", "freq_res_kHz",
    "vel_res_kms", "LAS_arcsec", "FoV_arcsec", "cont_sens_bandwidth", "line_sens_10kms",
    "line_sens_native", "MOUS_id",
)


def mous_uid(i: int) -> str:
    return f"uid://A001/X{0x2000 + i:x}/X{(i % 250) + 1:x}"


def frequency_support(windows: Sequence[tuple[float, float, float]] = WINDOWS) -> str:
    return " U ".join(
        f"[{lo:.2f}..{hi:.2f}GHz,{res:.2f}kHz,1.2mJy/beam@10km/s,410.5uJy/beam@native, XX YY]"
        for lo, hi, res in windows)


def synthetic_rows(n_mous: int, targets_per_mous: int = 2, spws: Sequence[int] = SPWS,
                   names: Sequence[str] | None = None, start: int = 0,
                   last_modified: str = "2021-05-01T12:00:00.000") -> list[dict[str, Any]]:
    """``n_mous * targets_per_mous * len(spws)`` ObsCore rows.

    ``names`` (cycled) overrides the source names, e.g. to include quotes and semicolons.
    MOUS ``i`` is band 6, resolution ``0.2 + 0.1 * (i % 10)`` arcsec, public unless
    ``i % 5 == 4``, keyword 'Disks around low-mass stars' for even ``i``.
    """
    rows: list[dict[str, Any]] = []
    fsupp = frequency_support(WINDOWS[: len(spws)] if len(spws) <= len(WINDOWS) else WINDOWS)
    k = 0
    for i in range(start, start + n_mous):
        mous = mous_uid(i)
        project = f"2019.1.{i // 3:05d}.S"
        res = 0.2 + 0.1 * (i % 10)
        for t in range(targets_per_mous):
            name = names[k % len(names)] if names else f"SRC-{i:05d}_{t}"
            k += 1
            ra = (10.0 + 0.37 * i + 0.01 * t) % 360.0
            dec = -60.0 + (0.11 * i) % 120.0
            for s, spw in enumerate(spws):
                lo, hi, chan = WINDOWS[s % len(WINDOWS)]
                rows.append({
                    "obs_publisher_did": f"ADS/JAO.ALMA#{project}",
                    "obs_collection": "ALMA", "facility_name": "JAO",
                    "instrument_name": "ALMA",
                    "obs_id": f"{mous}.source.{name}.spw.{spw}",
                    "dataproduct_type": "cube", "calib_level": 2, "target_name": name,
                    "s_ra": ra, "s_dec": dec, "s_fov": 0.0069,
                    "s_region": f"Circle ICRS {ra:.6f} {dec:.6f} 0.003450",
                    "s_resolution": res, "t_min": 58600.1 + i, "t_max": 58600.2 + i,
                    "t_exptime": 1512.0, "t_resolution": 6.05,
                    "em_min": C_M_S / (hi * 1e9), "em_max": C_M_S / (lo * 1e9),
                    "em_res_power": (lo + hi) / 2 * 1e6 / chan, "pol_states": "/XX/YY/",
                    "o_ucd": "phot.flux.density;phys.polarization",
                    "access_url": f"http://almascience.org/aq?member_ous_id={mous}",
                    "access_format": "text/html", "proposal_id": project,
                    "data_rights": "Proprietary" if i % 5 == 4 else "Public",
                    "gal_longitude": 300.0, "gal_latitude": -10.0, "band_list": "6",
                    "em_resolution": 1.0, "bandwidth": (hi - lo) * 1e9,
                    "antenna_arrays": "A001:DA41 A002:DA42 A003:DV01", "is_mosaic": "F",
                    "obs_release_date": "2021-01-01T00:00:00.000",
                    "spatial_resolution": res, "frequency_support": fsupp,
                    "frequency": (lo + hi) / 2, "velocity_resolution": chan / (lo * 1e6) * C_M_S,
                    "obs_creator_name": "Tester, Ada", "pub_title": "", "first_author": "",
                    "authors": "", "pub_abstract": "", "publication_year": None,
                    "proposal_abstract": "Synthetic project for tests.",
                    "schedblock_name": f"SB_{i}", "proposal_authors": "Tester, Ada",
                    "sensitivity_10kms": 1.2, "cont_sensitivity_bandwidth": 0.05, "pwv": 1.1,
                    "group_ous_uid": f"uid://A001/X{0x2000 + i:x}/X0",
                    "member_ous_uid": mous,
                    "asdm_uid": f"uid://A002/X{0xf000 + i:x}/X{t + 1:x}",
                    "obs_title": f"Synthetic survey {i}", "type": "S",
                    "scan_intent": "TARGET", "science_observation": "T",
                    "spatial_scale_max": 3.5, "qa2_passed": "T", "bib_reference": "",
                    "science_keyword": "Disks around low-mass stars" if i % 2 == 0
                    else "Galaxy structure & evolution",
                    "scientific_category": "Disks and planet formation" if i % 2 == 0
                    else "Local Universe",
                    "lastModified": last_modified,
                })
    return rows


def alminer_row(r: dict[str, Any], obs: int) -> dict[str, Any]:
    """ALminer's derived columns for one ObsCore row (its units: GHz, kHz, uJy/beam)."""
    lo = C_M_S / r["em_max"] / 1e9
    hi = C_M_S / r["em_min"] / 1e9
    chan = (lo + hi) / 2 * 1e6 / r["em_res_power"]
    return {
        "Obs": obs, "project_code": r["proposal_id"], "ALMA_source_name": r["target_name"],
        "RAJ2000": r["s_ra"], "DEJ2000": r["s_dec"],
        "ang_res_arcsec": round(r["s_resolution"], 3), "min_freq_GHz": round(lo, 2),
        "max_freq_GHz": round(hi, 2), "central_freq_GHz": round((lo + hi) / 2, 2),
        "bandwidth_GHz": round(hi - lo, 3), "freq_res_kHz": round(chan, 2),
        "vel_res_kms": round(C_M_S / 1000 / r["em_res_power"], 3),
        "LAS_arcsec": round(r["spatial_scale_max"], 3),
        "FoV_arcsec": round(r["s_fov"] * 3600, 3),
        "cont_sens_bandwidth": round(r["cont_sensitivity_bandwidth"] * 1000, 3),
        "line_sens_10kms": round(r["sensitivity_10kms"] * 1000, 2),
        "line_sens_native": 410.5, "MOUS_id": r["member_ous_uid"],
    }


def write_alminer_csv(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """An ALminer-style CSV: its 18 derived columns, then the ObsCore columns (as
    ``DataFrame.to_csv(index=False)`` writes them: empty cells for missing values)."""
    rows = list(rows)
    path = Path(path)
    obscore_cols = list(rows[0]) if rows else []
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(list(ALMINER_COLUMNS) + obscore_cols)
        for n, r in enumerate(rows, start=1):
            a = alminer_row(r, n)
            w.writerow([a[c] for c in ALMINER_COLUMNS]
                       + ["" if r.get(c) is None else r[c] for c in obscore_cols])
    return path
