"""The size model: how many bytes each stage needs while it runs and keeps when it is done.

Pure functions of numbers the catalog already holds (ObsCore/DataLink file sizes, the MS
facts verify records), so the orchestrator can predict a stage's disk use *before* it
claims it, and the imaging plan can check a cube against the configured limits before
tclean writes it. Nothing here reads a file or the catalog; :mod:`sails.stages.sizing`
gathers the facts, this module holds the formulas (and :func:`mitigate`, the one place that
decides how a too-large imaging plan is cut down, after ALMA's ``hif_checkproductsize``).

Formulas (bytes; ``vis`` = visibilities = rows x channels x correlations):

- download: final = sum of the listed file sizes; peak = final + the tarballs' sizes (a
  tarball is kept until its extraction is verified).
- split: ``vis_split = vis_in x target_time_fraction x science_channel_fraction``; bytes =
  ``vis_split x bytes_per_vis`` of the delivered MS (measured: it carries the storage
  managers' overheads) x ``SPLIT_FACTOR``.
- restore (raw deliveries only): final = ``RESTORE_FACTOR`` x the ASDMs' bytes (the
  imported MS holds DATA and CORRECTED_DATA as complex64 where the ASDM's binary data are
  smaller, plus flag versions); peak = final + the ASDMs' bytes (caltables are small).
- verify: ``VERIFY_BYTES_PER_MS`` per MS (a summary and a listobs).
- auto_selfcal: ``AUTO_SELFCAL_FACTOR`` x the split bytes (a working copy of each split, one
  ``*.selfcal.ms`` per target with DATA, MODEL and CORRECTED columns, flag versions, the
  per-iteration images and the weblog), plus ``FULLRES_FACTOR`` x the split bytes for the
  full-resolution copies with the solutions applied (``selfcal.apply_full_res``); peak =
  final.
- image (per target): a plane is ``nx x nx x nchan x 4`` bytes; a tclean run writes
  ``CASA_IMAGES`` CASA images of it (plus ``IMAGE_OVERHEAD`` each) and ``FITS_PER_IMAGE``
  FITS; each cube adds ``MOMENTS`` 2-D moment maps (CASA + FITS); nx = ``pb_factor x PB FWHM
  / cell`` with cell = ``s_resolution x FRINGE_PER_RESOLUTION / pixels_per_beam``; a cube's
  channels = the +-window in native channels, clipped to its spw; peak adds the
  continuum-subtracted line-spw MS (removed at the end unless ``imaging.keep_contsub``).
- cleanup: final = 0 (it frees bytes); peak = 0.

Every constant is a measured ratio on simulated data (see tests/pipeline/test_sizes.py,
which prints predictions beside the measured sizes) and is meant to be revised from the
``predicted_bytes``/``measured_bytes`` columns of real runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

GB = 1024**3
BYTES_PER_PIXEL = 4  # float32
CASA_IMAGES = 8  # image, residual, model, psf, pb, mask, signal mask, pbcor per tclean run
FITS_PER_IMAGE = 3  # pbcor, pb and mask exported as FITS
MOMENTS = 5  # mom0, mom1, mom8, mom0_err, mom1_err per cube: a CASA image and a FITS each
IMAGE_OVERHEAD = 170_000  # table/keyword files of one CASA image directory, measured
FRINGE_PER_RESOLUTION = 1.2  # plan's fringe spacing (longest baseline) / ObsCore s_resolution
# restored MS (DATA + CORRECTED_DATA) / ASDM bytes: measured 1.70 on the simulated tiny raw
# delivery (11.72 MB MS from a 6.89 MB ASDM of one BDF per integration, as the simulator
# writes it to keep the scans; tests/casa/test_restore_casa.py prints it)
RESTORE_FACTOR = 1.70
VERIFY_BYTES_PER_MS = 24_000  # summary JSON + listobs text of one MS, measured
# working copy + *.selfcal.ms (3 data columns) + flag versions + per-solint images: measured
# 6.8x, 10.7x and 13.9x the split on three simulated tiny MOUS (the number of solution
# intervals auto-selfcal tries depends on the S/N); this is their geometric middle.
AUTO_SELFCAL_FACTOR = 9.7
# selfcal.apply_full_res: a full-resolution copy of each split with the solutions applied
# (DATA + CORRECTED_DATA: about twice the split, which carries one data column)
FULLRES_FACTOR = 2.0
CONTSUB_FACTOR = 1.0  # the continuum-subtracted line-spw MS, relative to that spw's data
DEFAULT_BYTES_PER_VIS = 24.0  # DATA + CORRECTED (complex64) + flags/weights, per visibility
SPLIT_FACTOR = 1.1  # a split adds WEIGHT/SIGMA_SPECTRUM; storage-manager tiles round up
MS_FIXED_BYTES = 1_000_000  # subtables (POINTING, SOURCE, ...) every MS carries
JOB_RAM_FLOOR_GB = 2
RAM_PER_IMAGE_FACTOR = 6  # tclean holds about this many image planes per cube channel


@dataclass
class MsFacts:
    """What verify knows about one delivered measurement set."""

    bytes: int
    n_rows: int
    n_vis: int
    target_fraction: float = 1.0  # on-target share of the observing time
    science_fraction: float = 1.0  # science (FULL_RES) share of the channels

    @property
    def bytes_per_vis(self) -> float:
        if self.n_vis <= 0:
            return DEFAULT_BYTES_PER_VIS
        return max(1.0, (self.bytes - MS_FIXED_BYTES) / self.n_vis)


@dataclass
class ImageFacts:
    """What the catalog (ObsCore) says about one target's imaging."""

    resolution_arcsec: float
    fov_arcsec: float  # PB FWHM
    cube_channels: list[int] = field(default_factory=list)  # planned channels per cube


@dataclass
class Prediction:
    peak_bytes: int  # most the stage has on disk at once (scratch + outputs)
    final_bytes: int  # what it leaves behind when done
    basis: str  # which facts it used (so a person can judge it)

    def to_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "final_bytes": self.final_bytes,
                "basis": self.basis}


# ------------------------------------------------------------------ per stage
def download(file_sizes: list[int | None], tar_sizes: list[int]) -> Prediction:
    known = [s for s in file_sizes if s is not None]
    final = sum(known)
    basis = "DataLink sizes" if len(known) == len(file_sizes) else \
        f"DataLink sizes ({len(file_sizes) - len(known)} unknown)"
    return Prediction(final + sum(tar_sizes), final, basis)


def split_ms_bytes(ms: MsFacts) -> int:
    vis = ms.n_vis * ms.target_fraction * ms.science_fraction
    return int(MS_FIXED_BYTES + vis * ms.bytes_per_vis * SPLIT_FACTOR)


def split(mss: list[MsFacts]) -> Prediction:
    total = sum(split_ms_bytes(m) for m in mss)
    return Prediction(total, total, "verify MS facts")


def split_upper_bound(delivered_bytes: int) -> int:
    """Before verify knows the MS facts: a split keeps at most every row and channel of the
    delivered measurement sets."""
    return int(delivered_bytes * SPLIT_FACTOR)


def auto_selfcal(split_bytes: int, full_res: bool = True) -> Prediction:
    factor = AUTO_SELFCAL_FACTOR + (FULLRES_FACTOR if full_res else 0.0)
    total = int(split_bytes * factor)
    return Prediction(total, total, "split size" + (" (+ full-resolution copies)"
                                                    if full_res else ""))


def image_pixels(resolution_arcsec: float, fov_arcsec: float, pixels_per_beam: float,
                 pb_factor: float) -> int:
    """Pixels across the image, as the imaging plan chooses them (before FFT rounding)."""
    cell = resolution_arcsec * FRINGE_PER_RESOLUTION / pixels_per_beam
    return max(64, math.ceil(pb_factor * fov_arcsec / cell))


def casa_image_bytes(npix: int, nchan: int = 1) -> int:
    return npix * npix * nchan * BYTES_PER_PIXEL + IMAGE_OVERHEAD


def cube_bytes(npix: int, nchan: int) -> int:
    """One tclean product on disk: its CASA image directories plus its FITS exports."""
    plane = npix * npix * nchan * BYTES_PER_PIXEL
    return CASA_IMAGES * (plane + IMAGE_OVERHEAD) + FITS_PER_IMAGE * plane


def moments_bytes(npix: int) -> int:
    plane = npix * npix * BYTES_PER_PIXEL
    return MOMENTS * (2 * plane + IMAGE_OVERHEAD)


def restore(asdm_bytes: int) -> Prediction:
    final = int(asdm_bytes * RESTORE_FACTOR)
    return Prediction(final + asdm_bytes, final, "ASDM bytes x RESTORE_FACTOR"
                      if asdm_bytes else "nothing to restore")


def verify(n_ms: int) -> Prediction:
    return Prediction(n_ms * VERIFY_BYTES_PER_MS, n_ms * VERIFY_BYTES_PER_MS, "MS count")


FINDCONT_BASE_BYTES = 12_000  # cont.dat, manifest, job records
FINDCONT_BYTES_PER_CHANNEL = 120  # spectra (peak, mean, frequency) in two JSON files
FINDCONT_CUBE_SIDE = 128  # typical coarse dirty-cube side (3 pixels per beam, 1.2 x PB)


def findcont(n_targets: int, channels: list[int]) -> Prediction:
    """The findcont folder: spectra per target and channel; at the peak one coarse dirty
    cube (image, pb, psf, residual, weight, sumwt: six float planes) of the widest spw."""
    n = max(1, n_targets)
    kept = FINDCONT_BASE_BYTES + n * FINDCONT_BYTES_PER_CHANNEL * sum(channels)
    cube = 6 * 4 * FINDCONT_CUBE_SIDE ** 2 * max(channels or [1])
    return Prediction(kept + cube, kept, "targets x science channels")


def cube_channels(window_kms: float, width_kms: float, spw_kms: float) -> int:
    """Channels of a cube: +-window at ``width_kms``, clipped to the spw (less one channel
    each side, as the plan does)."""
    if width_kms <= 0 or width_kms > window_kms:
        return 0
    return max(0, int(min(2 * window_kms, spw_kms - 2 * width_kms) / width_kms))


def image(facts: ImageFacts, pixels_per_beam: float, pb_factor: float,
          contsub_bytes: int = 0) -> Prediction:
    npix = image_pixels(facts.resolution_arcsec, facts.fov_arcsec, pixels_per_beam, pb_factor)
    cubes = [n for n in facts.cube_channels if n > 0]
    final = cube_bytes(npix, 1) + sum(cube_bytes(npix, n) + moments_bytes(npix) for n in cubes)
    peak = final + (contsub_bytes if cubes else 0)
    return Prediction(peak, final, f"ObsCore resolution/FoV: {npix} px, cubes {cubes}")


def job_resources(stage: str, peak_bytes: int, default_cores: int) -> tuple[int, int]:
    """(cores, RAM GB) for a job from its predicted bytes: CASA holds a few image planes or
    a visibility chunk in memory; never less than JOB_RAM_FLOOR_GB."""
    ram = math.ceil(RAM_PER_IMAGE_FACTOR * peak_bytes / CASA_IMAGES / GB) if stage == "image" \
        else math.ceil(peak_bytes / 4 / GB)
    return default_cores, max(JOB_RAM_FLOOR_GB, ram)


# ------------------------------------------------------------------ mitigation
MITIGATION_KEY = "size_mitigation"  # image products' metrics: what the limits cut, in order

def mitigate(plan: dict[str, Any], max_cube_bytes: int | None,
             max_product_bytes: int | None, pb_level_factor: float = 1.0,
             max_binning: int = 4) -> list[dict[str, Any]]:
    """Cut an imaging plan down to the limits, in place; return what was done, in order.

    The order (after ``hif_checkproductsize``): 1. image size down to ``pb_level_factor`` x
    the PB FWHM; 2. channel binning of the cubes (up to ``max_binning``); 3. drop the largest
    cubes (fewer spws) until the product set fits; 4. a cube that still exceeds the per-cube
    limit is skipped with its reason. ``plan`` is the imaging plan's dict (``imsize``,
    ``cell_arcsec``, ``pb_fwhm_arcsec``, ``cubes`` with ``nchan``/``width_kms``).
    """
    actions: list[dict[str, Any]] = []
    cubes = plan.get("cubes") or []

    def sizes() -> tuple[int, int]:
        per = [cube_bytes(plan["imsize"], c["nchan"]) for c in cubes]
        total = cube_bytes(plan["imsize"], 1) + sum(per)
        return (max(per) if per else 0), total

    def over() -> bool:
        largest, total = sizes()
        return bool((max_cube_bytes and largest > max_cube_bytes)
                    or (max_product_bytes and total > max_product_bytes))

    if not over():
        return actions
    # 1. image size to the PB level
    npix = max(64, math.ceil(pb_level_factor * plan["pb_fwhm_arcsec"] / plan["cell_arcsec"]))
    npix += npix % 2
    if npix < plan["imsize"]:
        actions.append({"step": "imsize", "from": plan["imsize"], "to": npix,
                        "why": f"image size reduced to {pb_level_factor:g} x the PB FWHM"})
        plan["imsize"] = npix
    # 2. channel binning
    binning = 1
    while over() and binning < max_binning and any(c["nchan"] > 2 for c in cubes):
        binning *= 2
        for c in cubes:
            if c["nchan"] > 2:
                c["nchan"] = max(2, c["nchan"] // 2)
                c["width_kms"] *= 2
                c["chan_factor"] = c.get("chan_factor", 1) * 2
                c["chans_per_sens"] = c.get("chans_per_sens", 1) * 2
    if binning > 1:
        actions.append({"step": "binning", "factor": binning,
                        "why": f"cube channels binned by {binning}"})
    # 3. fewer spws: drop the largest cubes while the product set is over its limit
    while max_product_bytes and cubes and sizes()[1] > max_product_bytes:
        big = max(cubes, key=lambda c: c["nchan"])
        cubes.remove(big)
        actions.append({"step": "drop_cube", "line": big["line"]["name"],
                        "why": f"{big['line']['name']} cube dropped: the product set would "
                               f"exceed {max_product_bytes / GB:.3g} GB"})
    # 4. skip what still exceeds the per-cube limit
    for c in list(cubes):
        size = cube_bytes(plan["imsize"], c["nchan"])
        if max_cube_bytes and size > max_cube_bytes:
            cubes.remove(c)
            actions.append({"step": "skip_cube", "line": c["line"]["name"],
                            "why": f"{c['line']['name']} cube skipped: {size / GB:.3g} GB "
                                   f"exceeds the {max_cube_bytes / GB:.3g} GB cube limit"})
    plan["cubes"] = cubes
    return actions


# ------------------------------------------------------------------ facts from a summary
TARGET_INTENT = "OBSERVE_TARGET"


def ms_size_facts(summary: dict[str, Any], science_spws: list[int], ms_bytes: int
                  ) -> dict[str, Any]:
    """The size facts of one MS, from verify's summary JSON (recorded in its metrics).

    ``target_fraction``: on-target share of the scan time; ``science_fraction``: science
    spws' share of the channels (rows are spread over every spw the same way in ALMA data).
    """
    scans = summary.get("scans") or []
    fields = {f["id"]: f for f in summary.get("fields") or []}

    def dur(s: dict[str, Any]) -> float:
        from datetime import datetime
        try:
            return (datetime.fromisoformat(s["end"]) - datetime.fromisoformat(s["start"])
                    ).total_seconds() or 1.0
        except (KeyError, TypeError, ValueError):
            return 1.0

    total = sum(dur(s) for s in scans) or 1.0
    on = sum(dur(s) for s in scans if any(
        any(i.startswith(TARGET_INTENT) for i in fields.get(f, {}).get("intents", []))
        for f in s.get("fields", [])))
    spws = [s for s in summary.get("spws") or [] if s.get("has_data", True)]
    chans = sum(int(s.get("num_chan") or 0) for s in spws) or 1
    sci = [s for s in spws if s["id"] in set(science_spws)]
    return {
        "ms_bytes": int(ms_bytes), "n_rows": int(summary.get("n_rows") or 0),
        "n_visibilities": int(summary.get("n_visibilities") or 0),
        "target_fraction": on / total if scans else 1.0,
        "science_fraction": sum(int(s.get("num_chan") or 0) for s in sci) / chans,
        "science_spw_widths": [[s.get("min_freq_hz"), s.get("max_freq_hz"),
                                s.get("chan_width_hz")] for s in sci],
    }
