"""The archive-side view of simulated MOUS: ObsCore rows and an ALminer-style table.

Column names and value formats follow the real ALMA Science Archive answers in
``shared/testdata/alma-archive`` (one row per MOUS x science target x science spw, ``obs_id``
ending ``.source.<name>.spw.<id>``, ``frequency_support`` in ALMA's bracket syntax), so the
ingest code and a fake TAP service can be exercised on them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sails.constants import C_M_S

#: ObsCore columns in the order the ALMA TAP service returns them.
OBSCORE_COLUMNS = (
    "obs_publisher_did", "obs_collection", "facility_name", "instrument_name", "obs_id",
    "dataproduct_type", "calib_level", "target_name", "s_ra", "s_dec", "s_fov", "s_region",
    "s_resolution", "t_min", "t_max", "t_exptime", "t_resolution", "em_min", "em_max",
    "em_res_power", "pol_states", "o_ucd", "access_url", "access_format", "proposal_id",
    "data_rights", "gal_longitude", "gal_latitude", "band_list", "em_resolution", "bandwidth",
    "antenna_arrays", "is_mosaic", "obs_release_date", "spatial_resolution",
    "frequency_support", "frequency", "velocity_resolution", "obs_creator_name", "pub_title",
    "first_author", "authors", "pub_abstract", "publication_year", "proposal_abstract",
    "schedblock_name", "proposal_authors", "sensitivity_10kms", "cont_sensitivity_bandwidth",
    "pwv", "group_ous_uid", "member_ous_uid", "asdm_uid", "obs_title", "type", "scan_intent",
    "science_observation", "spatial_scale_max", "qa2_passed", "bib_reference",
    "science_keyword", "scientific_category", "spectral_resolution", "lastModified",
)

#: Columns ALminer adds in front of the ObsCore ones.
ALMINER_COLUMNS = ["Obs", "project_code", "ALMA_source_name", "RAJ2000", "DEJ2000",
                   "ang_res_arcsec", "min_freq_GHz", "max_freq_GHz", "central_freq_GHz",
                   "bandwidth_GHz", "freq_res_kHz", "vel_res_kms", "LAS_arcsec", "FoV_arcsec",
                   "cont_sens_bandwidth", "line_sens_10kms", "line_sens_native", "MOUS_id"]

_FLOAT_COLS = {"s_ra", "s_dec", "s_fov", "s_resolution", "t_min", "t_max", "t_exptime",
               "t_resolution", "em_min", "em_max", "em_res_power", "gal_longitude",
               "gal_latitude", "em_resolution", "bandwidth", "spatial_resolution", "frequency",
               "velocity_resolution", "sensitivity_10kms", "cont_sensitivity_bandwidth", "pwv",
               "spatial_scale_max", "spectral_resolution"}
_INT_COLS = {"calib_level", "publication_year"}


def _mjd(utc: str, offset_s: float = 0.0) -> float:
    t = dt.datetime.strptime(utc, "%Y/%m/%d/%H:%M:%S").replace(tzinfo=dt.UTC)
    return (t.timestamp() + offset_s) / 86400.0 + 40587.0


def _baselines(antennas: list[dict[str, Any]]) -> list[float]:
    out = []
    for i, a in enumerate(antennas):
        for b in antennas[i + 1:]:
            out.append(math.dist((a["x"], a["y"], a["z"]), (b["x"], b["y"], b["z"])))
    return sorted(out)


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))]


def _fmt_sens(jy: float) -> str:
    return f"{jy * 1e3:.3g}mJy/beam" if jy >= 1e-3 else f"{jy * 1e6:.4g}uJy/beam"


def _galactic(ra: float, dec: float) -> tuple[float, float]:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    g = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").galactic
    return float(g.l.deg), float(g.b.deg)


def _hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Convex hull (monotone chain), counter-clockwise."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    upper: list[tuple[float, float]] = []
    for pt in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], pt) <= 0:
            lower.pop()
        lower.append(pt)
    for pt in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], pt) <= 0:
            upper.pop()
        upper.append(pt)
    return lower[:-1] + upper[:-1]


def footprint(target: dict[str, Any], radius_deg: float) -> tuple[str, float]:
    """(s_region, s_fov in deg) of a target: a Circle for one pointing, the archive's
    Polygon outline of the pointings' union for a mosaic."""
    ra0, dec0 = target["ra_deg"], target["dec_deg"]
    pointings = target.get("pointings") or [{"ra_deg": ra0, "dec_deg": dec0}]
    if len(pointings) == 1:
        return f"Circle ICRS {ra0:.6f} {dec0:.6f} {radius_deg:.6f}", 2 * radius_deg
    cosd = math.cos(math.radians(dec0))
    pts = []
    for p in pointings:  # flat-sky offsets (deg) of points on each pointing's circle
        px, py = (p["ra_deg"] - ra0) * cosd, p["dec_deg"] - dec0
        for k in range(24):
            a = 2 * math.pi * k / 24
            pts.append((round(px + radius_deg * math.cos(a), 9),
                        round(py + radius_deg * math.sin(a), 9)))
    hull = _hull(pts)
    fov = 2 * max(math.hypot(x, y) for x, y in hull)
    # the outline's vertices, as RA/Dec pairs (ALMA writes mosaics as such polygons)
    coords = " ".join(f"{(ra0 + x / cosd) % 360:.6f} {dec0 + y:.6f}" for x, y in hull)
    return f"Polygon ICRS {coords}", fov


def obscore_rows(truth: dict[str, Any]) -> list[dict[str, Any]]:
    """ObsCore rows of one simulated MOUS (one per science target and science spw)."""
    sci = [s for s in truth["spws"] if s["kind"] == "FULL_RES"]
    bl = _baselines(truth["antennas"])
    ebs = truth["ebs"]
    t_min = _mjd(ebs[0]["start_utc"])
    t_max = _mjd(ebs[-1]["start_utc"], ebs[-1]["duration_s"])
    arrays = " ".join(f"{a['station']}:{a['name']}" for a in truth["antennas"])
    release = dt.datetime.strptime(ebs[-1]["date"], "%Y-%m-%d") + dt.timedelta(days=400)
    proposal = truth["proposal_id"]
    rows = []
    for t in truth["targets"]:
        rms = t.get("expected_cont_rms_jy") or 0.0
        supports, per_spw = [], []
        for s in sci:
            f0 = s["center_ghz"]
            half = s["nchan"] * s["chan_width_mhz"] / 2000.0
            cont_sens = rms * math.sqrt(len(sci))  # one window alone
            native = cont_sens * math.sqrt(s["nchan"])
            kms10 = native * math.sqrt(s["chan_width_mhz"] / 1e3 / (f0 * 10.0 / C_M_S * 1e3))
            supports.append(f"[{f0 - half:.2f}..{f0 + half:.2f}GHz,"
                            f"{s['chan_width_mhz'] * 1e3:.2f}kHz,{_fmt_sens(kms10)}@10km/s,"
                            f"{_fmt_sens(native)}@native, XX YY]")
            per_spw.append((s, f0, half, native, kms10))
        l_deg, b_deg = _galactic(t["ra_deg"], t["dec_deg"])
        obs_name = "_".join(t["name"].split())
        dish = truth.get("dish_m", 12.0)
        for s, f0, half, _native, kms10 in per_spw:
            lam = C_M_S / (f0 * 1e9)
            region, fov_deg = footprint(t, 1.13 * lam / dish * 180 / math.pi / 2)
            if truth.get("array") == "TP":  # resolution of the map, every scale recovered
                res_arcsec = 1.13 * lam / dish * 206264.806
                las_arcsec = fov_deg * 3600.0
            else:
                res_arcsec = 0.574 * lam / _percentile(bl, 80) * 206264.806
                las_arcsec = 0.983 * lam / _percentile(bl, 5) * 206264.806
            width_hz = s["chan_width_mhz"] * 1e6
            rows.append({
                "obs_publisher_did": f"ADS/JAO.ALMA#{proposal}",
                "obs_collection": "ALMA", "facility_name": "JAO", "instrument_name": "ALMA",
                "obs_id": f"{truth['mous_uid']}.source.{obs_name}.spw.{s['id']}",
                "dataproduct_type": "cube", "calib_level": 2, "target_name": t["name"],
                "s_ra": t["ra_deg"], "s_dec": t["dec_deg"], "s_fov": fov_deg,
                "s_region": region,
                "s_resolution": res_arcsec, "t_min": t_min, "t_max": t_max,
                "t_exptime": t["on_source_s"], "t_resolution": truth["integration_s"],
                "em_min": C_M_S / ((f0 + half) * 1e9), "em_max": C_M_S / ((f0 - half) * 1e9),
                "em_res_power": f0 * 1e9 / width_hz, "pol_states": "/XX/YY/",
                "o_ucd": "phot.flux.density;phys.polarization",
                "access_url": f"http://almascience.org/aq?member_ous_id={truth['mous_uid']}",
                "access_format": "text/html", "proposal_id": proposal, "data_rights": "Public",
                "gal_longitude": l_deg, "gal_latitude": b_deg,
                "band_list": str(truth["band"]), "em_resolution": lam * width_hz / (f0 * 1e9),
                "bandwidth": s["nchan"] * width_hz, "antenna_arrays": arrays,
                "is_mosaic": "T" if t.get("is_mosaic") else "F",
                "obs_release_date": release.strftime("%Y-%m-%dT%H:%M:%S.000"),
                "spatial_resolution": res_arcsec, "frequency_support": " U ".join(supports),
                "frequency": f0, "velocity_resolution": width_hz / (f0 * 1e9) * C_M_S,
                "obs_creator_name": "Doe, Jane", "pub_title": "", "first_author": "",
                "authors": "", "pub_abstract": "", "publication_year": 0,
                "proposal_abstract": "Simulated observations of protostellar envelopes and "
                                     "their accretion streamers (sails.sim).",
                "schedblock_name": truth["schedblock_name"],
                "proposal_authors": "Doe, Jane; Roe, Richard;",
                "sensitivity_10kms": kms10 * 1e3,
                "cont_sensitivity_bandwidth": rms * 1e3, "pwv": 1.2,
                "group_ous_uid": truth["group_ous_uid"], "member_ous_uid": truth["mous_uid"],
                "asdm_uid": ebs[0]["uid"],
                "obs_title": "Streamers feeding young disks (simulated)", "type": "S",
                "scan_intent": "TARGET", "science_observation": "T",
                "spatial_scale_max": las_arcsec, "qa2_passed": "T", "bib_reference": "",
                "science_keyword": "Disks around low-mass stars",
                "scientific_category": "Disks and planet formation",
                "spectral_resolution": width_hz,
                "lastModified": f"{ebs[-1]['date']}T12:00:00.000",
            })
    return rows


def obscore_table(truths: Iterable[dict[str, Any] | str | Path]):
    """ObsCore rows of several MOUS (truth dicts or MOUS folders) as an astropy Table."""
    from astropy.table import Table

    rows: list[dict[str, Any]] = []
    for t in truths:
        if not isinstance(t, dict):
            t = json.loads((Path(t) / "truth.json").read_text())
        rows.extend(obscore_rows(t))
    cols = {c: [r[c] for r in rows] for c in OBSCORE_COLUMNS}
    dtypes = [float if c in _FLOAT_COLS else int if c in _INT_COLS else str
              for c in OBSCORE_COLUMNS]
    table = Table(cols, names=OBSCORE_COLUMNS, dtype=dtypes)
    table["s_ra"].unit = table["s_dec"].unit = "deg"
    table["frequency"].unit = "GHz"
    return table


def alminer_table(obscore):
    """ALminer's derived columns in front of the ObsCore ones (as ``alminer`` builds them)."""
    from astropy.table import Table

    n = len(obscore)
    f_min = [C_M_S / x / 1e9 for x in obscore["em_max"]]
    f_max = [C_M_S / x / 1e9 for x in obscore["em_min"]]
    derived = {
        "Obs": list(range(n)),
        "project_code": list(obscore["proposal_id"]),
        "ALMA_source_name": list(obscore["target_name"]),
        "RAJ2000": list(obscore["s_ra"]), "DEJ2000": list(obscore["s_dec"]),
        "ang_res_arcsec": [round(x, 3) for x in obscore["s_resolution"]],
        "min_freq_GHz": [round(x, 2) for x in f_min], "max_freq_GHz": [round(x, 2) for x in f_max],
        "central_freq_GHz": [round((a + b) / 2, 2) for a, b in zip(f_min, f_max, strict=True)],
        "bandwidth_GHz": [round(b - a, 3) for a, b in zip(f_min, f_max, strict=True)],
        "freq_res_kHz": [round(x / 1e3, 2) for x in obscore["spectral_resolution"]],
        "vel_res_kms": [round(x / 1e3, 3) for x in obscore["velocity_resolution"]],
        "LAS_arcsec": [round(x, 3) for x in obscore["spatial_scale_max"]],
        "FoV_arcsec": [round(x * 3600.0, 3) for x in obscore["s_fov"]],
        "cont_sens_bandwidth": [round(x, 3) for x in obscore["cont_sensitivity_bandwidth"]],
        "line_sens_10kms": [round(x, 2) for x in obscore["sensitivity_10kms"]],
        "line_sens_native": [round(x, 2) for x in obscore["sensitivity_10kms"]],
        "MOUS_id": list(obscore["member_ous_uid"]),
    }
    out = Table(derived, names=ALMINER_COLUMNS)
    for c in obscore.colnames:
        out[c] = obscore[c]
    return out


def write_tables(folder: Path, obscore) -> None:
    from astropy.io.votable import from_table

    folder.mkdir(parents=True, exist_ok=True)
    vot = from_table(obscore)
    vot.to_xml(str(folder / "obscore.xml"))
    alminer_table(obscore).write(folder / "alminer.csv", format="ascii.csv", overwrite=True)


def write_archive_view(mous_folder: Path, truth: dict[str, Any]) -> None:
    write_tables(mous_folder, obscore_table([truth]))


def write_project_archive_view(out_root: Path, mous_folders: list[Path]) -> None:
    write_tables(out_root, obscore_table(mous_folders))


def read_obscore(path: str | Path):
    """Read an ``obscore.xml`` written here back as an astropy Table."""
    from astropy.table import Table

    return Table.read(str(path), format="votable")
