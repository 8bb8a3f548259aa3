"""Python API: write simulated MOUS folders as an SRDP calibrated-data restore delivers them.

``simulate_mous(out_root, spec, seed)`` -> ``out_root/<mous_fs>/`` holding one
``<eb_fs>.ms`` per execution block, ``weblog_restore/``, ``truth.json`` and the archive-side
view (``obscore.xml``, ``alminer.csv``). CASA runs in a child process; the folder appears
atomically (built under a hidden temporary name, renamed when complete).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import sails
from sails.casaenv import casa_env
from sails.constants import C_M_S
from sails.errors import CasaJobError, UserInputError
from sails.sim.plan import make_plan
from sails.sim.spec import MousSpec

ARCSEC_DEG = 1.0 / 3600.0
TRUTH_NAME = "truth.json"
OBSCORE_NAME = "obscore.xml"
ALMINER_NAME = "alminer.csv"
WEBLOG_DIR = "weblog_restore"


def check_output_dir(out_root: Path) -> Path:
    """Create ``out_root`` if needed and prove we can write there (clear error otherwise)."""
    out_root = Path(out_root).expanduser()
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_root, prefix=".sails-write-test-"):
            pass
    except OSError as exc:
        raise UserInputError(f"cannot write to output folder {out_root}: {exc.strerror or exc}",
                             hint="choose a folder you can write to") from None
    return out_root.resolve()


def _child_env() -> dict[str, str]:
    src = str(Path(sails.__file__).resolve().parents[1])
    env = casa_env()
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p and p != src])
    return env


def run_casa_job(job: dict[str, Any], work: Path, timeout_s: float = 900.0,
                 module: str = "sails.sim._casajob") -> dict[str, Any]:
    """Run ``python -m <module>`` (a CASA child of :mod:`sails.sim`) on a job; return its
    result.json."""
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job, indent=1))
    out_log = work / "child.stdout.log"
    with out_log.open("w") as fh:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", module, str(job_path)], cwd=work,
                env=_child_env(), stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s,
                check=False)
        except subprocess.TimeoutExpired:
            raise CasaJobError(f"simulation timed out after {timeout_s:.0f} s",
                               log_path=str(out_log)) from None
    result = Path(job["result"])
    if proc.returncode != 0 or not result.exists():
        tail = out_log.read_text(errors="replace").strip().splitlines()[-3:]
        raise CasaJobError(
            f"CASA simulation failed (exit {proc.returncode}): {' | '.join(tail)}",
            hint=f"see {out_log} and {job.get('casa_log')}", log_path=str(out_log))
    return json.loads(result.read_text())


def _component_position(ra0: float, dec0: float, dx: float, dy: float) -> tuple[float, float]:
    dec = dec0 + dy * ARCSEC_DEG
    return (ra0 + dx * ARCSEC_DEG / math.cos(math.radians(dec))) % 360.0, dec


def build_truth(spec: MousSpec, plan: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Everything a test needs to check a pipeline product against the simulated sky."""
    ebs = []
    for eb, res in zip(plan["ebs"], result["ebs"], strict=True):
        ebs.append({k: eb[k] for k in ("uid", "fs", "date", "start_utc", "duration_s",
                                       "flag_antenna", "flag_scan", "scans")}
                   | {k: res[k] for k in ("ms", "checksum", "flagged_fraction", "n_rows",
                                          "start_mjd_s", "lsrk_over_topo_start")})
    targets = []
    for t in plan["targets"]:
        comps = []
        for c in t["components"]:
            ra, dec = _component_position(t["ra_deg"], t["dec_deg"], c["dx_arcsec"],
                                          c["dy_arcsec"])
            comps.append(dict(c, ra_deg=ra, dec_deg=dec))
        def placed(ln: dict[str, Any], t: dict[str, Any] = t) -> dict[str, Any]:
            return dict(ln, blobs=[dict(b, ra_deg=p[0], dec_deg=p[1]) for b in ln["blobs"]
                                   for p in [_component_position(t["ra_deg"], t["dec_deg"],
                                                                 b["dx_arcsec"],
                                                                 b["dy_arcsec"])]])

        line = placed(t["line"]) if t["line"] else None
        extra = [placed(ln) for ln in t.get("extra_lines") or []]
        targets.append(dict(t, components=comps, line=line, extra_lines=extra))
    sci = [s for s in plan["spws"] if s["kind"] == "FULL_RES"]
    nb = len(plan["antennas"]) * (len(plan["antennas"]) - 1) // 2
    tp = plan.get("array") == "TP"
    for t in targets:  # natural-weighting continuum rms estimate (flags ignored)
        n_int = sum(round((sub["stop_s"] - sub["start_s"]) / plan["integration_s"])
                    for eb in plan["ebs"] for s in eb["scans"] if s["field"] == t["name"]
                    for sub in s["subscans"])
        inv = sum(2 * nb * n_int * s["nchan"] / s["weight_sigma_jy"] ** 2 for s in sci)
        t["expected_cont_rms_jy"] = 1.0 / math.sqrt(inv) if inv and not tp else None
        # a mosaic pointing gets 1/N of the time: its own (single-field) noise
        t["expected_cont_rms_per_pointing_jy"] = (
            t["expected_cont_rms_jy"] * math.sqrt(len(t["pointings"]))
            if t["expected_cont_rms_jy"] else None)
        t["on_source_s"] = n_int * plan["integration_s"]
    ref = plan["ref_freq_ghz"] * 1e9
    return {
        "generator": "sails.sim", "version": sails.__version__,
        "casa_version": result.get("casa_version"), "seed": plan["seed"], "label": plan["label"],
        "mous_uid": plan["mous_uid"], "mous_fs": plan["mous_fs"], "array": plan["array"],
        "config_file": plan["config_file"], "dish_m": plan["dish_m"],
        "tp_products": result.get("tp_products", []),
        "group_ous_uid": plan["group_ous_uid"], "schedblock_uid": plan["schedblock_uid"],
        "schedblock_name": plan["schedblock_name"], "proposal_id": plan["proposal_id"],
        "band": plan["band"], "config": plan["config_file"],
        "ref_freq_ghz": plan["ref_freq_ghz"], "integration_s": plan["integration_s"],
        "antennas": plan["antennas"], "ebs": ebs, "spws": plan["spws"],
        "science_spw_ids": [s["id"] for s in sci],
        "calibrators": plan["calibrators"], "targets": targets,
        "noise": {"enabled": plan["noise"], "noise_scale": plan["noise_scale"],
                  "sefd_jy": plan["sefd_jy"],
                  "sigma_per_vis_jy": {str(s["id"]): s["sigma_jy"] for s in plan["spws"]},
                  "note": "rms of the real (or imaginary) part of one visibility of one "
                          "correlation, before the per-antenna tsys_factor (sigma_ij = sigma "
                          "* sqrt(f_i f_j)); SIGMA = that, WEIGHT = 1/SIGMA^2"},
        "phase_errors": {"rms_deg": plan["phase_rms_deg"],
                         "timescale_s": plan["phase_timescale_s"],
                         "note": "per-antenna, zero-mean, scaled with frequency"},
        "primary_beam": {"model": "blocked airy", "dish_m": plan["pb_dish_m"],
                         "blockage_m": plan["pb_blockage_m"],
                         "fwhm_arcsec_at_ref": 1.029 * C_M_S / ref / plan["pb_dish_m"]
                         * 206264.806},
        "flux_convention": "component flux_jy is the sky flux density at ref_freq_ghz; "
                           "S(nu) = flux_jy (nu/ref)^spectral_index; primary-beam attenuation "
                           "is applied in the visibilities",
        "datacolumn": plan["datacolumn"], "flags": plan["flags"], "wvr": plan["wvr"],
        "spec": spec.to_dict(),
    }


def tp_result(plan: dict[str, Any], stage: Path) -> dict[str, Any]:
    """A TP MOUS is delivered as image products (no measurement sets): write the cubes and
    describe the EBs as the archive lists them."""
    from sails.sim.tp import write_tp_products

    products = write_tp_products(stage, plan)
    ebs = [{"ms": None, "checksum": None, "flagged_fraction": 0.0, "n_rows": 0,
            "start_mjd_s": None, "lsrk_over_topo_start": None} for _ in plan["ebs"]]
    return {"ebs": ebs, "casa_version": None, "tp_products": products}


def load_truth(mous_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(mous_dir) / TRUTH_NAME).read_text())


def simulate_mous(out_root: str | Path, spec: MousSpec, seed: int = 1, *,
                  overwrite: bool = False, timeout_s: float = 900.0) -> Path:
    """Simulate one MOUS under ``out_root``; return its folder ``out_root/<mous_fs>``."""
    from sails.sim.archive import write_archive_view
    from sails.sim.weblog import write_weblog

    out_root = check_output_dir(Path(out_root))
    plan = make_plan(spec, seed)
    final = out_root / plan["mous_fs"]
    if final.exists():
        if not overwrite:
            raise UserInputError(f"{final} already exists", hint="use overwrite / --force")
        shutil.rmtree(final)
    work = Path(tempfile.mkdtemp(prefix=f".sim-{plan['mous_fs']}-", dir=out_root))
    stage = work / plan["mous_fs"]
    t0 = time.time()
    if plan["array"] == "TP":
        result = tp_result(plan, stage)
    else:
        result = run_casa_job({"plan": plan, "out_dir": str(stage),
                               "result": str(work / "result.json"),
                               "casa_log": str(work / "casa.log")}, work, timeout_s)
    truth = build_truth(spec, plan, result)
    truth["generation_s"] = round(time.time() - t0, 2)
    if plan["array"] != "TP":  # a TP delivery holds image products, not a restore
        write_weblog(stage / WEBLOG_DIR, truth)
    (stage / TRUTH_NAME).write_text(json.dumps(truth, indent=1))
    write_archive_view(stage, truth)
    os.replace(stage, final)
    shutil.rmtree(work, ignore_errors=True)
    return final


def mous_seed(seed: int, index: int) -> int:
    return int(np.random.default_rng([int(seed), int(index), 7]).integers(0, 2**31))


def simulate_project(out_root: str | Path, specs: list[MousSpec] | None = None, *,
                     preset: str = "demo", seed: int = 1, overwrite: bool = False,
                     raw: bool | None = None) -> list[Path]:
    """Simulate several MOUS (a preset's, or ``specs``) plus project-level archive tables;
    ``raw`` (default: the preset is a raw one) writes raw deliveries (:mod:`sails.sim.raw`)."""
    from sails.sim.archive import write_project_archive_view
    from sails.sim.presets import RAW_PRESETS
    from sails.sim.presets import preset as get_preset
    from sails.sim.raw import simulate_raw_mous

    raw = preset in RAW_PRESETS if raw is None else raw
    one = simulate_raw_mous if raw else simulate_mous

    specs = specs if specs is not None else get_preset(preset)
    for s in specs:
        s.validate()
    out_root = check_output_dir(Path(out_root))
    seen: set[str] = set()
    paths = []
    for i, spec in enumerate(specs):
        s = mous_seed(seed, i)
        while make_plan(spec, s)["mous_uid"] in seen and spec.mous_uid is None:
            s += 1
        path = one(out_root, spec, s, overwrite=overwrite)
        seen.add(load_truth(path)["mous_uid"])
        paths.append(path)
    write_project_archive_view(out_root, paths)
    return paths
