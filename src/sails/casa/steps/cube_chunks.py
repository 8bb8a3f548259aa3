"""Chunked cube imaging (job side): plan the chunks, image one chunk, put them together.

Steps run by the image stage's chunk runner (:mod:`sails.stages.image_chunks`):

- ``cube_chunk_plan`` (in the target's main imaging job, before ``image_cubes``): for every
  cube at least ``imaging.chunk_min_channels`` long, one noise estimate from dirty images of
  the cube's edge channels (where the edge-emission check looks anyway), the PSF sidelobe
  guard, the thresholds, and a per-channel line SNR from the continuum-subtracted data's
  visibility power spectra (where the clean will work: the chunk boundaries balance the
  estimated cost); the cube moves from ``plan["cubes"]`` to ``plan["chunked"]`` with its
  chunk plan (:mod:`sails.casa.chunking`), so ``image_cubes`` leaves it alone. The
  continuum-subtracted data are kept for the chunks.
- ``use_image_plan`` (first in the main job) and ``image_continuum_of`` (the continuum
  job): the plan a plan job made alone, so the continuum (which no cube needs; a third of
  the stage's CPU time on the demo data) runs beside the main job and the chunks rather
  than before or after them.
- ``image_cube_chunk`` (one job per chunk): the cube's tclean calls on the chunk's channels,
  with the shared thresholds and mask settings, healed alone if it diverges; no restoration
  (it would be done again with the whole cube's common beam).
- ``assemble_chunked_cube`` (one job): the main job's folder and the continuum job's, plus
  each chunked cube's images concatenated channel by channel, restored with the common beam
  of all channels (:mod:`sails.casa.restoration`, as tclean restores an unchunked cube),
  then the products and metrics an unchunked cube gets
  (:func:`sails.casa.steps.imaging.finish_cube`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from sails.casa import calls, chunking, restoration
from sails.casa import imaging_stats as st
from sails.casa.imaging_math import radio_velocity
from sails.casa.steps import healing, imaging
from sails.casa.steps.healing import ImagingFailed
from sails.casa.tools import opened, released

CHUNKS_NAME = "chunks.json"


def _final_paths(ctx, cube: dict[str, Any]) -> None:
    """Continuum-subtracted data paths as they will be once this job's folder is installed."""
    staged = str(ctx.out)
    final = str(ctx.job["output_dir"])
    for pm in cube["per_ms"]:
        c = pm["contsub"]
        if c["vis"].startswith(staged):
            c["vis"] = final + c["vis"][len(staged):]


# About this many samples (rows x correlations) of each channel are read for a data set's
# power spectrum (every n-th row): its relative noise is then ~3%, so a line shows from a
# visibility-power SNR of ~60-70, below which its clean costs little (SNR_SCALE), and the
# read takes a few hundredths of a second (it is on the critical path, before the chunks).
POWER_SAMPLES_PER_CHANNEL = 1000


def _power_spectrum(vis: str, spw: int, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean |V|^2 of the unflagged samples of each channel of ``spw`` in ``vis`` (every
    n-th row) and the number of unflagged samples of the whole data set per channel."""
    with opened("table", f"{vis}/DATA_DESCRIPTION") as dd:
        ddids = [i for i, s in enumerate(dd.getcol("SPECTRAL_WINDOW_ID")) if int(s) == spw]
    with opened("table", vis) as tb, released(
            tb.query(f"DATA_DESC_ID IN {ddids} AND NOT FLAG_ROW")) as sel:
        rows = sel.nrows()
        if not rows:
            return np.zeros(0), np.zeros(0)
        npol = sel.getcol(column, 0, 1).shape[0]
        step = max(1, rows * npol // POWER_SAMPLES_PER_CHANNEL)
        data = sel.getcol(column, 0, -1, step)
        flag = sel.getcol("FLAG", 0, -1, step)
    good = ~flag
    n = good.sum(axis=(0, 2))
    power = np.where(good, np.abs(data) ** 2, 0.0).sum(axis=(0, 2)) / np.maximum(n, 1)
    return np.where(n > 0, power, np.nan), n * float(step)


def _line_snr(plan: dict[str, Any], cube: dict[str, Any]) -> list[float] | None:
    """Per-channel line SNR of the cube estimated from the visibility power spectra of its
    continuum-subtracted data (:func:`chunking.line_snr`): where the clean will work, known
    before any chunk is imaged, for a fraction of a second's reading. None when a data
    set's channels are not known or the cube is not continuum-subtracted (the chunks are
    then split evenly)."""
    if not cube.get("contsub", True):  # a sloped continuum would pass for a line
        return None
    rest = float(cube["restfreq_hz"])
    freqs = {(m["vis"], int(s["id"])): s["lsrk_hz"] for m in plan.get("line_ms") or []
             for s in m["spws"]}
    total = np.zeros(int(cube["nchan"]))
    for pm in cube["per_ms"]:
        lsrk = freqs.get((pm["vis"], int(pm["spw"])))
        c = pm["contsub"]
        if lsrk is None:
            return None
        col = c.get("datacolumn", "data")
        power, n = _power_spectrum(c["vis"], int(c["spw"]), "DATA" if col == "data"
                                   else "CORRECTED_DATA")
        if len(power) != len(lsrk):
            return None
        snr = chunking.line_snr(power, n)
        vel = [radio_velocity(f, rest) for f in lsrk]
        total = np.hypot(total, chunking.on_cube_grid(snr, vel, float(cube["start_kms"]),
                                                      float(cube["width_kms"]), len(total)))
    return [round(float(x), 2) for x in total]


def cube_chunk_plan(ctx, min_channels: int, chunks: int) -> dict[str, Any]:
    plan = imaging._load_plan(ctx)
    cfg = plan["cfg"]
    keep, chunked = [], []
    for cube in plan["cubes"]:
        k = chunking.chunk_count(int(cube["nchan"]), min_channels, chunks)
        if k < 2:
            keep.append(cube)
            continue
        ln = cube["line"]
        label = f"{ln['name']} cube of {plan['field']!r}"
        n_edge = chunking.edge_channels(int(cube["nchan"]))
        est = str(imaging._casa_dir(ctx) / f"{cube['imagename']}.noise")
        peaks, sigmas, sidelobe = [], [], 0.0
        base = None
        for side, first in (("lo", 0), ("hi", int(cube["nchan"]) - n_edge)):
            name = f"{est}.{side}"
            base = imaging.cube_params(plan, cube, name, nchan=n_edge,
                              start_kms=float(cube["start_kms"]) + first * cube["width_kms"])
            imaging._user_mask(base, cfg)
            imaging.run_tclean(ctx, label, **dict(base, niter=0, deconvolver="hogbom"))
            dirty = imaging._dirty_noise(ctx, plan, base, name, "", label)
            sigmas.append(dirty.noise)
            sidelobe = max(sidelobe, dirty.sidelobe)
            resid = st.read(dirty.resid)
            inside = imaging._inside(dirty.pb, cfg["pblimit"])
            peaks += [imaging._nanmax_in(resid[..., i], inside[..., i])
                      for i in range(resid.shape[-1])]
        sigma = float(np.median(sigmas))
        if not sigma > 0:
            raise ImagingFailed(f"{label}: the dirty cube has zero noise (no data?)")
        edge_snr = float(np.nanmax(peaks)) / sigma
        edge_emission = bool(cube.get("contsub", True)) and edge_snr > cfg["edge_clip_sigma"]
        if edge_emission:
            ctx.warn(f"{label}: {edge_snr:.1f} sigma emission in the edge channels; the line "
                     "may extend beyond the velocity window (widen imaging.velocity_window_kms)")
        t_snr = time.perf_counter()
        snr = _line_snr(plan, cube)
        t_snr = round(time.perf_counter() - t_snr, 3)
        _final_paths(ctx, cube)
        cube["chunking"] = {
            "k": k, "sigma": sigma, "sidelobe": sidelobe, "edge_snr": edge_snr,
            "edge_emission": edge_emission,
            "sidelobethreshold": imaging.sidelobe_guard(cfg, sidelobe, ctx, label),
            "noise_estimate": f"dirty edge channels ({n_edge} at each end)",
            "cost_model": {"job_cost": chunking.JOB_COST, "snr_scale": chunking.SNR_SCALE,
                           "line_snr": snr, "line_snr_source": "visibility power spectra"
                           if snr is not None else None, "line_snr_s": t_snr,
                           "shares": chunking.tapered_shares(k) if snr and any(snr)
                           else "even"},
            "chunks": chunking.chunk_plan(cube, k, snr)}
        chunked.append(cube)
    plan["cubes"] = keep
    plan["chunked"] = chunked
    if chunked:  # the chunks image the continuum-subtracted data after this job
        plan["cfg"]["keep_contsub_for_chunks"] = bool(plan["cfg"].get("keep_contsub", False))
        plan["cfg"]["keep_contsub"] = True
    imaging._save_plan(ctx, plan)
    (ctx.out / CHUNKS_NAME).write_text(json.dumps(chunked, indent=1))
    return {"products": [], "chunked": [c["line"]["name"] for c in chunked]}


def use_image_plan(ctx, plan_path: str, output: dict[str, Any]) -> dict[str, Any]:
    """The plan job's ``plan.json`` (``plan_path``) as this job's plan; ``output``: what
    that job's plan step returned (this job's manifest says the same)."""
    shutil.copy2(plan_path, imaging._plan_path(ctx))
    return output


def image_continuum_of(ctx, plan_path: str) -> dict[str, Any]:
    """The continuum of the plan job's plan (``plan_path``), in this job's folder."""
    shutil.copy2(plan_path, imaging._plan_path(ctx))
    return imaging.image_continuum(ctx)


def image_cube_chunk(ctx, plan_path: str, cube_key: str, index: int) -> dict[str, Any]:
    """Deconvolve chunk ``index`` of the cube named ``cube_key`` (its imagename) in the
    main job's ``plan.json`` at ``plan_path``, as ``_one_cube`` deconvolves a whole cube."""
    plan = json.loads(Path(plan_path).read_text())
    cfg = plan["cfg"]
    cube = next(c for c in plan["chunked"] if c["imagename"] == cube_key)
    chk = cube["chunking"]
    ch = chk["chunks"][index]
    label = f"{cube['line']['name']} cube of {plan['field']!r}, chunk {index + 1}/{chk['k']}"
    name = str(imaging._casa_dir(ctx) / ch["imagename"])
    base = imaging.cube_params(plan, cube, name, nchan=ch["nchan"], start_kms=ch["start_kms"])
    base["sidelobethreshold"] = chk["sidelobethreshold"]
    base["restoration"] = False  # restored once the chunks are put together
    user_mask = imaging._user_mask(base, cfg)
    runs0 = [imaging.run_tclean(ctx, label, **dict(base, niter=0, deconvolver="hogbom"))]
    imaging._check_finite(label, f"{name}.residual", cleaned=False)
    inside = imaging._inside(f"{name}.pb", cfg["pblimit"])
    peaks0 = healing.dirty_peaks(f"{name}.residual", inside)
    runs, heal = imaging.deconvolve_cube(ctx, label, base, name, runs0, cfg, chk["sigma"],
                                         user_mask, inside, peaks0)
    return {"products": [], "chunk": ch, "runs": runs, "healing": heal,
            "user_mask": user_mask}


def _link_tree(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """``src``'s folders (CASA images) into ``dst`` as hard links (copies across file
    systems), its files as copies (the job appends to some): the main job's products stay as
    they are until the assembled folder replaces it."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    for entry in src.iterdir():
        if entry.name.startswith(".") or entry.name in ("result.json", *skip):
            continue
        target = dst / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, copy_function=link, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, target)


def _add_record(ctx, folder: Path, read: tuple[str, ...] = ()) -> None:
    """Another job's CASA calls after this job's (one record of the target's work); the
    ``read`` folders, as its calls name them, are this folder's parts too."""
    theirs = folder / calls.CALLS_NAME
    if theirs.exists():
        calls.extend(ctx, json.loads(theirs.read_text()), read)


def _add_continuum(ctx, src: Path) -> None:
    """The continuum job's folder ``src`` into the assembled folder: its images and FITS,
    and its CASA calls after the main job's."""
    _link_tree(src, ctx.out, skip=(imaging.PLAN_NAME, calls.CALLS_NAME, calls.CALLS_SCRIPT))
    _add_record(ctx, src)


def _concat_and_restore(ctx, name: str, chunks: list[dict[str, Any]], dirs: list[Path],
                        main: Path, cell_arcsec: float) -> None:
    """The chunk jobs' calls into the record (their images in this folder's ``casa/``, the
    main job's continuum-subtracted data in its ``work/``), then the chunks' images
    concatenated, and every channel restored with the common beam of all channels' PSFs,
    as tclean restores the unchunked cube (the chunks restore nothing)."""
    for d in dirs:
        _add_record(ctx, d, (str(main),))
    casa = Path(name).parent
    for ext in chunking.CONCAT_EXTS:
        parts = [str(d / "casa" / f"{ch['imagename']}.{ext}")
                 for d, ch in zip(dirs, chunks, strict=True)]
        if all(Path(p).exists() for p in parts):
            calls.pipeline_call(
                ctx, restoration.concat_images, parts=parts, out=f"{name}.{ext}",
                replayed={"parts": [str(casa / f"{ch['imagename']}.{ext}") for ch in chunks],
                          "out": f"{name}.{ext}"})
    shutil.rmtree(f"{name}.pbcor", ignore_errors=True)  # of an earlier try
    calls.pipeline_call(ctx, restoration.restore_cube, name=name, cell_arcsec=cell_arcsec)


def assemble_chunked_cube(ctx, main_dir: str, chunk_dirs: dict[str, list[str]],
                          chunk_results: dict[str, list[dict[str, Any]]],
                          main_job: dict[str, Any] | None = None,
                          continuum_dir: str | None = None,
                          continuum_job: dict[str, Any] | None = None,
                          plan_job: dict[str, Any] | None = None) -> dict[str, Any]:
    """Main job folder + continuum job folder + concatenated, re-restored chunked cubes ->
    the target's products."""
    main = Path(main_dir)
    _link_tree(main, ctx.out)
    if continuum_dir:
        _add_continuum(ctx, Path(continuum_dir))
    plan = imaging._load_plan(ctx)
    cfg = plan["cfg"]
    prods: list[dict[str, Any]] = []
    summary = {}
    for cube in plan.get("chunked") or []:
        chk = cube["chunking"]
        key = cube["imagename"]
        name = str(imaging._casa_dir(ctx) / key)
        _concat_and_restore(ctx, name, chk["chunks"], [Path(d) for d in chunk_dirs[key]],
                            main, float(plan["cell_arcsec"]))
        results = chunk_results[key]
        runs = [r for res in results for r in res["runs"]]
        heals = [res["healing"] for res in results]
        heal = max(heals, key=lambda h: len((h or {}).get("attempts") or []))
        p, s = imaging.finish_cube(ctx, plan, cube, name, imaging.CubeRun(
            chk["sigma"], chk["sidelobe"], chk["sidelobethreshold"], chk["edge_snr"],
            chk["edge_emission"], runs, heal, any(r["user_mask"] for r in results)))
        for prod in p:
            if prod["kind"] == "cube":
                prod["metrics"]["chunks"] = {
                    "k": chk["k"], "noise_estimate": chk["noise_estimate"],
                    "channels": [[c["first"], c["nchan"]] for c in chk["chunks"]],
                    "costs": [c.get("cost") for c in chk["chunks"]],
                    "run_order": chunking.run_order(chk["chunks"]),
                    "cost_model": chk.get("cost_model"),
                    "beam": "common beam of all channels, restored after concatenation",
                    "plan_job": plan_job, "main_job": main_job,
                    "continuum_job": continuum_job,
                    "jobs": [r.get("job") for r in results]}
        prods.extend(p)
        summary[cube["line"]["name"]] = s
    if not cfg.get("keep_contsub_for_chunks", cfg.get("keep_contsub", False)):
        shutil.rmtree(ctx.out / "work", ignore_errors=True)
    return {"products": prods, "cubes": summary}


STEPS = {
    "cube_chunk_plan": cube_chunk_plan,
    "use_image_plan": use_image_plan,
    "image_continuum_of": image_continuum_of,
    "image_cube_chunk": image_cube_chunk,
    "assemble_chunked_cube": assemble_chunked_cube,
}
