"""Turn a MousSpec and a seed into a complete, explicit observing plan (pure Python, no CASA).

Every random choice is made here or from seeds written here, so the CASA child only executes
the plan: uids, project code, dates and start times (targets transit mid-EB), antenna subset,
calibrators, spectral-window numbering (archive style: WVR window, each FULL_RES window
followed by its CH_AVG partner), scan list, flags.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sails.constants import C_KMS
from sails.errors import UserInputError
from sails.ids import parse_uid
from sails.sim.spec import (
    BAND_ETA_A,
    BAND_TSYS_K,
    MousSpec,
)

ALMA_LON_DEG = -67.754929
ALMA_LAT_DEG = -23.029211
DISH_M = 12.0
#: Primary beam: Airy pattern of a 10.7 m effective aperture with a 0.75 m blockage, the
#: model CASA's imagers use for ALMA 12-m antennas (so pbcor images read true fluxes).
PB_DISH_M = 10.7
PB_BLOCKAGE_M = 0.75
#: Per array: dish diameter (m), CASA's primary-beam Airy model (effective aperture and
#: blockage, m; CASA's "ACA" model for the 7-m dishes), antenna names as ALMA spells them,
#: the scheduling-block suffix and the casadata ``alma/simmos`` pad file.
ARRAY_DISH_M = {"12m": DISH_M, "7m": 7.0, "TP": DISH_M}
ARRAY_PB_M = {"12m": (PB_DISH_M, PB_BLOCKAGE_M), "7m": (6.25, 0.75), "TP": (PB_DISH_M,
                                                                           PB_BLOCKAGE_M)}
ARRAY_SB_SUFFIX = {"12m": "TM1", "7m": "7M", "TP": "TP"}
ARRAY_ANTENNA_NAMES = {
    "12m": [f"DA{41 + i}" for i in range(25)] + [f"DV{i + 1:02d}" for i in range(25)],
    "7m": [f"CM{i + 1:02d}" for i in range(12)],
    "TP": [f"PM{i + 1:02d}" for i in range(4)],
}
WVR_FREQ_GHZ = 183.31
K_BOLTZ = 1.380649e-23
ETA_CORR = 0.96
SLEW_S = 6.0


def config_name(config: int, array: str = "12m") -> str:
    """The casadata ``alma/simmos`` file of an array: 12-m configuration N, ACA, or TP."""
    return {"7m": "aca.cycle10.cfg", "TP": "aca.tp.cfg"}.get(
        array, f"alma.cycle10.{int(config)}.cfg")


def config_path(config: int, array: str = "12m") -> Path:
    import casadata  # pure data package; does not import casatools

    return Path(casadata.datapath) / "alma" / "simmos" / config_name(config, array)


def read_config(config: int, array: str = "12m") -> list[dict[str, Any]]:
    """Pads of an ALMA cycle-10 configuration (local tangent-plane metres)."""
    path = config_path(config, array)
    if not path.exists():
        raise UserInputError(f"array configuration file not found: {path}")
    pads = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts or line.lstrip().startswith("#"):
            continue
        pads.append({"x": float(parts[0]), "y": float(parts[1]), "z": float(parts[2]),
                     "diam": float(parts[3]), "station": parts[4]})
    return pads


def _gmst_hours(when: dt.datetime) -> float:
    jd = when.timestamp() / 86400.0 + 2440587.5
    return (18.697374558 + 24.06570982441908 * (jd - 2451545.0)) % 24.0


def transit_start(date: dt.date, ra_deg: float, duration_s: float) -> dt.datetime:
    """UTC start so that the middle of an observation of ``duration_s`` is at transit."""
    midnight = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)
    lst0 = (_gmst_hours(midnight) + ALMA_LON_DEG / 15.0) % 24.0
    ut_mid_h = ((ra_deg / 15.0 - lst0) % 24.0) / 1.00273790935
    mid = midnight + dt.timedelta(hours=ut_mid_h)
    return (mid - dt.timedelta(seconds=duration_s / 2.0)).replace(microsecond=0)


def _jname(ra_deg: float, dec_deg: float) -> str:
    ra_h = ra_deg / 15.0
    hh, mm = int(ra_h), int((ra_h % 1) * 60)
    sign = "+" if dec_deg >= 0 else "-"
    d = abs(dec_deg)
    return f"J{hh:02d}{mm:02d}{sign}{int(d):02d}{int((d % 1) * 60):02d}"


def pointing_position(ra0: float, dec0: float, dx_arcsec: float,
                      dy_arcsec: float) -> tuple[float, float]:
    """Sky position of an (east, north) arcsec offset: the convention of every offset here
    (component positions in the truth, pointings, the CASA child's sky model)."""
    dec = dec0 + dy_arcsec / 3600.0
    return (ra0 + dx_arcsec / 3600.0 / math.cos(math.radians(dec))) % 360.0, dec


def _offset(ra: float, dec: float, dra_deg: float, ddec_deg: float) -> tuple[float, float]:
    dec2 = max(-85.0, min(40.0, dec + ddec_deg))
    return (ra + dra_deg / max(0.2, math.cos(math.radians(dec2)))) % 360.0, dec2


def sefd_jy(spec: MousSpec) -> float:
    tsys = spec.tsys_k or BAND_TSYS_K[spec.band]
    area = math.pi * (ARRAY_DISH_M[spec.array] / 2) ** 2
    return 2 * K_BOLTZ * tsys / (BAND_ETA_A[spec.band] * area) * 1e26


def vis_sigma_jy(spec: MousSpec, chan_width_hz: float) -> float:
    """Radiometer equation: rms of the real (or imaginary) part of one visibility."""
    if not spec.noise:
        return 0.0
    return spec.noise_scale * sefd_jy(spec) / (ETA_CORR * math.sqrt(2 * chan_width_hz
                                                                    * spec.integration_s))


def make_plan(spec: MousSpec, seed: int) -> dict[str, Any]:
    spec.validate()
    rng = np.random.default_rng([int(seed), 20240501])
    # --- identifiers: from the seed *and* the MOUS's label and target names, so different
    # presets generated with one seed never share a MOUS uid.
    key = zlib.crc32("|".join([spec.label, *(t.name for t in spec.targets)]).encode())
    rng_id = np.random.default_rng([int(seed), key])
    x1 = int(rng_id.integers(0x1000, 0x1800))
    x2 = int(rng_id.integers(0x100, 0xfff))
    mous_uid = spec.mous_uid or f"uid://A001/X{x1:x}/X{x2:x}"
    mous = parse_uid(mous_uid, "MOUS uid")
    gous = spec.group_ous_uid or (
        f"uid://{mous.archive}/X{mous.x1}/X{max(1, int(mous.x2, 16) - 1):x}")
    sb_uid = f"uid://{mous.archive}/X{mous.x1}/X{max(1, int(mous.x2, 16) - 2):x}"
    year = int(rng.integers(2021, 2025))
    proposal = spec.proposal_id or f"{year}.1.{int(rng.integers(100, 1600)):05d}.S"
    # --- dates
    if spec.start_date:
        first = dt.date.fromisoformat(spec.start_date)
    else:
        first = dt.date(year + 1, 1, 1) + dt.timedelta(days=int(rng.integers(0, 330)))
    # --- antennas: a seeded subset of the configuration's pads, with ALMA-like names
    pads = read_config(spec.config, spec.array)
    idx = sorted(rng.choice(len(pads), size=spec.n_antennas, replace=False).tolist())
    names = ARRAY_ANTENNA_NAMES[spec.array]
    ant_names = sorted(rng.choice(names, size=spec.n_antennas, replace=False).tolist())
    tsys_factor = np.clip(1 + 0.08 * rng.standard_normal(spec.n_antennas), 0.8, 1.25)
    antennas = [dict(pads[j], name=ant_names[k], tsys_factor=round(float(tsys_factor[k]), 4))
                for k, j in enumerate(idx)]
    # --- calibrators near the first target
    t0 = spec.targets[0]
    pa = float(rng.uniform(0, 2 * math.pi))
    ph_ra, ph_dec = _offset(t0.ra_deg, t0.dec_deg, 3 * math.sin(pa), 3 * math.cos(pa))
    bp_ra, bp_dec = _offset(t0.ra_deg, t0.dec_deg, float(rng.uniform(-12, 12)),
                            float(rng.uniform(-10, 10)))
    bandpass = {"name": _jname(bp_ra, bp_dec), "ra_deg": bp_ra, "dec_deg": bp_dec,
                "flux_jy": round(float(rng.uniform(0.8, 2.5)), 3), "spectral_index": -0.6,
                "role": "bandpass"}
    phasecal = {"name": _jname(ph_ra, ph_dec), "ra_deg": ph_ra, "dec_deg": ph_dec,
                "flux_jy": round(float(rng.uniform(0.2, 0.6)), 3), "spectral_index": -0.7,
                "role": "phase"}
    if phasecal["name"] == bandpass["name"]:
        bandpass["name"] += "A"
    # --- spectral windows, archive numbering
    spws: list[dict[str, Any]] = []
    sw_base = int(rng.integers(100000, 900000))
    if spec.wvr:
        spws.append({"id": 0, "name": "WVR#NOMINAL", "kind": "WVR", "baseband": 0,
                     "center_ghz": WVR_FREQ_GHZ, "nchan": 4, "chan_width_mhz": 1500.0,
                     "is_line": False, "bbc_no": 0, "science_index": None})
    band = f"ALMA_RB_{spec.band:02d}"
    if spec.sqld:  # square-law detector windows: no visibilities a pipeline images
        for s in spec.science_spws():
            spws.append({"id": len(spws), "name": f"BB_{s.baseband}#SQLD", "kind": "SQLD",
                         "baseband": s.baseband, "center_ghz": s.center_ghz, "nchan": 1,
                         "chan_width_mhz": 2000.0, "is_line": False, "bbc_no": s.baseband,
                         "science_index": None})
    for k, s in enumerate(spec.science_spws()):
        base = f"X{sw_base + 37 * k}#{band}#BB_{s.baseband}#SW-01"
        common = {"baseband": s.baseband, "center_ghz": s.center_ghz, "is_line": s.is_line,
                  "bbc_no": s.baseband, "science_index": k}
        spws.append(dict(common, id=len(spws), name=f"{base}#FULL_RES", kind="FULL_RES",
                         nchan=s.nchan, chan_width_mhz=s.chan_width_mhz))
        spws.append(dict(common, id=len(spws), name=f"{base}#CH_AVG", kind="CH_AVG",
                         nchan=1, chan_width_mhz=s.bandwidth_mhz, is_line=False))
    nominal = replace(spec, noise=True, noise_scale=spec.noise_scale or 1.0)
    for s in spws:
        s["sigma_jy"] = vis_sigma_jy(spec, s["chan_width_mhz"] * 1e6)
        # WEIGHT/SIGMA follow the radiometer equation even for a noiseless simulation.
        s["weight_sigma_jy"] = vis_sigma_jy(nominal, s["chan_width_mhz"] * 1e6)
    # --- scan plan (same for every EB)
    wvr = ",CALIBRATE_WVR#ON_SOURCE" if spec.wvr else ""
    plan_scans = [(bandpass["name"], "CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_FLUX#ON_SOURCE"
                   + wvr, spec.bandpass_scan_s)]
    fields = [dict(c, sim_name=c["name"]) for c in (bandpass, phasecal)]
    target_fields: list[list[int]] = []
    for ti, tg in enumerate(spec.targets):
        ids = []
        for k, (dx, dy) in enumerate(tg.pointing_offsets()):
            ra, dec = pointing_position(tg.ra_deg, tg.dec_deg, dx, dy)
            ids.append(len(fields))
            fields.append({"name": tg.name, "sim_name": tg.name if not tg.is_mosaic
                           else f"{tg.name}#P{k}", "ra_deg": ra, "dec_deg": dec,
                           "target_index": ti, "pointing_index": k, "dx_arcsec": dx,
                           "dy_arcsec": dy})
        target_fields.append(ids)
    cal_index = {bandpass["name"]: [0], phasecal["name"]: [1]}
    for _ in range(spec.n_cycles):
        plan_scans.append((phasecal["name"], "CALIBRATE_PHASE#ON_SOURCE" + wvr,
                           spec.phasecal_scan_s))
        for t in spec.targets:
            plan_scans.append((t.name, "OBSERVE_TARGET#ON_SOURCE", spec.target_scan_s))
    plan_scans.append((phasecal["name"], "CALIBRATE_PHASE#ON_SOURCE" + wvr,
                       spec.phasecal_scan_s))
    scans, t = [], 0.0
    by_target = {tg.name: target_fields[i] for i, tg in enumerate(spec.targets)}
    for i, (field, intent, dur) in enumerate(plan_scans):
        # A mosaic scan visits every pointing in turn (one subscan per field), as ALMA does.
        ids = by_target.get(field) or cal_index[field]
        per = max(1, int(round(dur / spec.integration_s / len(ids))))
        subscans, start = [], t
        for fid in ids:
            stop = t + per * spec.integration_s
            subscans.append({"field_id": fid, "start_s": t, "stop_s": stop})
            t = stop
        scans.append({"scan": i + 1, "field": field, "intent": intent, "start_s": start,
                      "stop_s": t, "subscans": subscans})
        t = t + SLEW_S
    duration = t
    target_scans = [s["scan"] for s in scans if s["intent"].startswith("OBSERVE_TARGET")]
    # --- execution blocks
    ebs = []
    eb_x1 = int(rng_id.integers(0xd00000, 0x1000000))
    for e in range(spec.n_ebs):
        date = first + dt.timedelta(days=e * spec.eb_spacing_days + int(rng.integers(0, 2)))
        start = transit_start(date, t0.ra_deg, duration)
        uid = f"uid://A002/X{eb_x1 + 0x1a3 * e:x}/X{int(rng_id.integers(0x100, 0xffff)):x}"
        flag_ant = int(rng.integers(0, spec.n_antennas)) if spec.flags else None
        flag_scan = int(rng.choice(target_scans)) if spec.flags else None
        ebs.append({"index": e, "uid": uid, "fs": parse_uid(uid).fs,
                    "start_utc": start.strftime("%Y/%m/%d/%H:%M:%S"),
                    "date": start.date().isoformat(), "seed": int(rng.integers(0, 2**31)),
                    "scans": scans, "duration_s": duration,
                    "flag_antenna": flag_ant, "flag_scan": flag_scan})
    targets = []
    for t in spec.targets:
        tj = {"name": t.name, "ra_deg": t.ra_deg, "dec_deg": t.dec_deg,
              "components": [vars(c) | {} for c in t.components], "line": None,
              "is_mosaic": t.is_mosaic,
              "pointings": [{k: fields[i][k] for k in ("ra_deg", "dec_deg", "dx_arcsec",
                                                        "dy_arcsec")}
                            for i in by_target[t.name]],
              "extra_lines": [_line_json(ln) for ln in t.extra_lines]}
        if t.line:
            tj["line"] = _line_json(t.line)
        targets.append(tj)
    return {
        "seed": int(seed),
        "label": spec.label,
        "mous_uid": mous.uri, "mous_fs": mous.fs, "group_ous_uid": gous,
        "schedblock_uid": sb_uid, "proposal_id": proposal,
        "schedblock_name": f"{spec.targets[0].name[:12]}_a_{spec.band:02d}_"
                           f"{ARRAY_SB_SUFFIX[spec.array]}",
        "array": spec.array, "config_file": config_name(spec.config, spec.array),
        "fields": fields, "tp_noise_mjy": spec.tp_noise_mjy,
        "band": spec.band, "config": spec.config, "ref_freq_ghz": spec.reference_freq_ghz(),
        "integration_s": spec.integration_s, "antennas": antennas, "spws": spws,
        "calibrators": [bandpass, phasecal], "targets": targets, "ebs": ebs,
        "phase_rms_deg": spec.phase_rms_deg, "phase_timescale_s": spec.phase_timescale_s,
        "noise": spec.noise, "noise_scale": spec.noise_scale, "sefd_jy": sefd_jy(spec),
        "datacolumn": spec.datacolumn, "flags": spec.flags, "wvr": spec.wvr,
        "dish_m": ARRAY_DISH_M[spec.array], "pb_dish_m": ARRAY_PB_M[spec.array][0],
        "pb_blockage_m": ARRAY_PB_M[spec.array][1],
        "c_kms": C_KMS,
    }


def _line_json(ln) -> dict[str, Any]:
    """A line of the plan/truth: its spec plus the blobs and derived numbers."""
    return vars(ln) | {
        "blobs": [vars(b) for b in ln.blobs()],
        "sky_freq_ghz": ln.sky_freq_ghz(),
        "integrated_flux_jykms": ln.integrated_flux_jykms,
        "velocity_range_kms": list(ln.velocity_range_kms()),
    }
