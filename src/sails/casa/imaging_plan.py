"""Read the measurement sets of one target and decide every imaging parameter (job side).

The plan is plain JSON (written beside the products) so a person can see why an image has
the cell, size, channels and spws it has. Fields are selected by id resolved from the name
with msmetadata, never by passing an archive name through CASA's selection syntax.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from sails import sizes
from sails.casa import imaging_math as im
from sails.casa.contract import BadInput
from sails.casa.tools import opened
from sails.constants import C_KMS

EXCLUDED_SPW_TAGS = ("WVR", "SQLD", "CH_AVG")


class PlanError(BadInput):
    """The data cannot be imaged as asked (no such field, no science spw ...)."""


def _field_id(msmd, name: str, vis: str) -> int:
    names = list(msmd.fieldnames())
    ids = [i for i, n in enumerate(names) if n == name]
    if not ids:
        raise PlanError(f"field {name!r} is not in {vis} (fields: {names})")
    # several rows with one name (mosaics are not handled here): use the first with data
    for fid in ids:
        if len(msmd.scansforfield(fid)) > 0:
            return fid
    raise PlanError(f"field {name!r} has no scans in {vis}")


def _has_column(vis: str, column: str) -> bool:
    with opened("table", vis) as tb:
        return column in tb.colnames()


def describe_ms(vis: str, field: str, datacolumn: str = "auto") -> dict[str, Any]:
    """Field id, science spws with LSRK channel frequencies, longest baseline, dish size."""
    with opened("msmetadata", vis) as msmd:
        fid = _field_id(msmd, field, vis)
        names = list(msmd.namesforspws())
        spws = []
        for s in sorted(int(x) for x in msmd.spwsforfield(fid)):
            name = names[s] if s < len(names) else ""
            if any(tag in name for tag in EXCLUDED_SPW_TAGS):
                continue
            spws.append({"id": s, "name": name, "nchan": int(msmd.nchan(s)),
                         "chan_width_hz": float(abs(msmd.chanwidths(s)[0]))})
        dish = min(float(msmd.antennadiameter(a)["value"]) for a in range(msmd.nantennas()))
    if not spws:
        raise PlanError(f"no science spectral window for field {field!r} in {vis}")
    with opened("ms", vis) as ms:
        for spw in spws:
            freqs = ms.cvelfreqs(spwids=[spw["id"]], fieldids=[fid], mode="channel",
                                 outframe="LSRK")
            spw["lsrk_hz"] = [float(f) for f in freqs]
        ms.msselect({"field": str(fid)})
        uvmax = float(ms.range(["uvdist"])["uvdist"][1])
    if datacolumn == "auto":
        datacolumn = "corrected" if _has_column(vis, "CORRECTED_DATA") else "data"
    return {"vis": vis, "field_id": fid, "spws": spws, "max_baseline_m": uvmax,
            "dish_m": dish, "datacolumn": datacolumn}


def _spw_range(spw: dict[str, Any]) -> tuple[float, float]:
    f = spw["lsrk_hz"]
    half = spw["chan_width_hz"] / 2
    return (min(f) - half, max(f) + half)


def linefree(spw: dict[str, Any], lines: list[dict[str, Any]], vsys: float,
             half_kms: float) -> list[tuple[int, int]]:
    """Channel ranges of ``spw`` outside every catalogue line's window (vsys +- half)."""
    freqs = spw["lsrk_hz"]
    bad: set[int] = set()
    for ln in lines:
        rest = ln["rest_ghz"] * 1e9
        lo = im.sky_freq(vsys + half_kms, rest)
        hi = im.sky_freq(vsys - half_kms, rest)
        bad.update(im.channels_in(freqs, lo, hi))
    return im.ranges_of(i for i in range(len(freqs)) if i not in bad)


LinefreeFn = Callable[[dict[str, Any], float], list[tuple[int, int]]]
"""(spw, half-width km/s of the catalogue windows) -> line-free channel ranges of the spw."""

ContForField = dict[str, list[tuple[float, float]]]  # archive spw id -> LSRK GHz ranges


def _archive_id(spw: dict[str, Any]) -> str:
    return str(spw.get("archive_id", spw["id"]))


def linefree_source(spw: dict[str, Any], cont: ContForField | None) -> str:
    """Where ``spw``'s line-free channels come from: ``contdat`` (ranges found from the data,
    shipped, or given per target) or ``catalogue`` (windows around catalogue lines)."""
    return "contdat" if cont and _archive_id(spw) in cont else "catalogue"


def contdat_channels(spw: dict[str, Any],
                     ranges: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """Channels of ``spw`` lying wholly inside one of ``ranges`` (GHz): a channel that
    straddles a range edge may hold line emission (another EB's LSRK grid is shifted)."""
    freqs = spw["lsrk_hz"]
    half = abs(freqs[1] - freqs[0]) / 2 if len(freqs) > 1 else spw["chan_width_hz"] / 2
    slack = 0.02 * half
    chans = [i for i, f in enumerate(freqs)
             if any(lo * 1e9 - slack <= f - half and f + half <= hi * 1e9 + slack
                    for lo, hi in ranges)]
    return im.ranges_of(chans)


def linefree_for(lines: list[dict[str, Any]], vsys: float,
                 cont: ContForField | None) -> LinefreeFn:
    """The line-free channel rule every consumer (continuum image, uvcontsub) uses: the
    cont.dat ranges of a spw when ``cont`` has them, else the catalogue windows around
    ``vsys`` (``cont=None``: the catalogue for every spw)."""
    def fn(spw: dict[str, Any], half_kms: float) -> list[tuple[int, int]]:
        if linefree_source(spw, cont) == "contdat":
            return contdat_channels(spw, cont[_archive_id(spw)])  # type: ignore[index]
        return linefree(spw, lines, vsys, half_kms)
    return fn


def velocity_from_setup(spws: list[dict[str, Any]], lines: list[dict[str, Any]],
                        max_abs_kms: float = 300.0,
                        narrow_hz: float = 1.0e9) -> tuple[float, str] | None:
    """(velocity, line) from the narrowest window (< ``narrow_hz`` wide) whose centre is a
    catalogue line within +-``max_abs_kms``: the Observing Tool centres a line window on the
    line at the source velocity, so the window centre gives the velocity. ``spws`` need
    ``lsrk_hz``. None when no narrow window sits on a catalogue line."""
    narrow = [s for s in spws if s["chan_width_hz"] * s["nchan"] < narrow_hz]
    for s in sorted(narrow, key=lambda x: x["chan_width_hz"] * x["nchan"]):
        f = s["lsrk_hz"]
        centre = 0.5 * (min(f) + max(f))
        cands = [(im.radio_velocity(centre, ln["rest_ghz"] * 1e9), ln["name"]) for ln in lines]
        cands = [c for c in cands if abs(c[0]) <= max_abs_kms]
        if cands:
            return min(cands, key=lambda c: abs(c[0]))
    return None


def systemic_velocity(cfg: dict[str, Any], mss: list[dict[str, Any]],
                      lines: list[dict[str, Any]]) -> tuple[float, str]:
    """(velocity km/s, ``vsys_origin``): ``config`` (imaging.systemic_velocity_kms or the
    target's), else ``data`` (the strongest catalogue line the continuum finder found,
    ``cfg['data_velocity_kms']``), else ``setup`` (:func:`velocity_from_setup`), else
    ``default`` (0 km/s). The labels are :data:`sails.imaging.lines.VSYS_ORIGINS`."""
    if cfg.get("systemic_velocity_kms") is not None:
        return float(cfg["systemic_velocity_kms"]), "config"
    if cfg.get("data_velocity_kms") is not None:
        return float(cfg["data_velocity_kms"]), "data"
    narrow = [s for m in mss for s in m["spws"]]
    got = velocity_from_setup(narrow, lines) if narrow else None
    if got is not None:
        return float(got[0]), "setup"
    return 0.0, "default"


def make_plan(mss: list[dict[str, Any]], line_mss: list[dict[str, Any]], field: str,
              lines: list[dict[str, Any]], cfg: dict[str, Any], stem: str,
              spw_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything tclean needs for the continuum and each cube of one target."""
    spw_labels = spw_labels or {}
    for m in (*mss, *line_mss):  # archive ids, for cont.dat and product names
        for s in m["spws"]:
            s["archive_id"] = spw_labels.get(str(s["id"]), str(s["id"]))
    vsys, vsys_origin = systemic_velocity(cfg, line_mss, lines)
    cfg = {**cfg, "systemic_velocity_kms": vsys}
    cont = cfg.get("cont_ranges") or None
    free_of = linefree_for(lines, vsys, cont)
    window = float(cfg["velocity_window_kms"])
    excl = window + float(cfg["line_free_margin_kms"])
    min_free = float(cfg.get("min_linefree_fraction", 0.1))
    warnings: list[str] = []

    ref = mss[0]
    all_ranges = [_spw_range(s) for m in mss for s in m["spws"]]
    fmax = max(r[1] for r in all_ranges)
    fmin = min(r[0] for r in all_ranges)
    bmax = max(m["max_baseline_m"] for m in mss + line_mss)
    dish = min(m["dish_m"] for m in mss + line_mss)
    cell = im.cell_arcsec(fmax, bmax, float(cfg["pixels_per_beam"]))
    pb_fwhm = im.pb_fwhm_arcsec(fmin, dish)
    with opened("synthesisutils") as su:
        imsize = int(su.getOptimumSize(im.raw_imsize(pb_fwhm, float(cfg["pb_factor"]), cell)))

    # Continuum: line-free channels of every science spw, per measurement set.
    cont_sel, cont_ranges, nfree, ntot, cont_spw_ids = [], [], 0, 0, set()
    sources: dict[str, str] = {}
    for m in mss:
        parts = []
        for s in m["spws"]:
            free = free_of(s, excl)
            sources[_archive_id(s)] = linefree_source(s, cont)
            n = sum(b - a + 1 for a, b in free)
            ntot += s["nchan"]
            if n < max(1, min_free * s["nchan"]):
                warnings.append(f"spw {s['id']} of {m['vis']}: only {n}/{s['nchan']} line-free"
                                " channels; left out of the continuum")
                continue
            nfree += n
            cont_spw_ids.add(s["id"])
            parts.append(f"{s['id']}:{im.chan_selection(free)}")
            cont_ranges.append(_spw_range(s))
        cont_sel.append(",".join(parts))
    if not cont_ranges:
        raise PlanError("no line-free channels left for the continuum in any spw")
    fbw = im.fractional_bandwidth(cont_ranges)
    nterms = 2 if fbw > float(cfg["nterms2_fractional_bw"]) else 1
    lo = min(r[0] for r in cont_ranges)
    hi = max(r[1] for r in cont_ranges)
    label = im.spw_label(cont_spw_ids)
    if spw_labels:
        label = "spw" + "_".join(spw_labels.get(str(s), str(s)) for s in sorted(cont_spw_ids))
    datacolumn = _common_column(mss, warnings)
    continuum = {
        "imagename": f"{stem}.{label}.cont.I",
        "vis": [m["vis"] for m in mss], "field": [str(m["field_id"]) for m in mss],
        "spw": cont_sel, "datacolumn": datacolumn, "nterms": nterms,
        "deconvolver": "mtmfs" if nterms == 2 else "hogbom",
        "reffreq_hz": 0.5 * (lo + hi), "fractional_bw": fbw, "spw_ids": sorted(cont_spw_ids),
        "linefree_fraction": nfree / max(ntot, 1), "freq_range_hz": [lo, hi],
        "linefree_source": sources,
        "archive_spw_ids": [spw_labels.get(str(s), str(s)) for s in sorted(cont_spw_ids)],
    }

    # Cubes: every catalogue line whose systemic frequency falls in a science spw.
    cubes, in_band = [], []
    if cfg.get("make_cubes", True):
        for ln in sorted(lines, key=lambda x: x["rest_ghz"]):
            cube = _plan_cube(ln, line_mss, lines, cfg, stem, spw_labels, warnings, in_band)
            if cube:
                cubes.append(cube)

    plan = {
        "field": field, "stem": stem, "cell_arcsec": cell, "imsize": imsize,
        "pb_fwhm_arcsec": pb_fwhm, "max_baseline_m": bmax, "dish_m": dish,
        "phasecenter_field": ref["field_id"], "continuum": continuum, "cubes": cubes,
        "ms": mss, "line_ms": line_mss, "warnings": warnings, "lines_in_band": in_band,
        "vsys_kms": vsys, "vsys_origin": vsys_origin, "window_kms": window,
        "linefree_half_kms": excl,
    }
    limits = cfg.get("size_limits") or {}
    plan["mitigation"] = sizes.mitigate(
        plan, limits.get("max_cube_bytes"), limits.get("max_products_bytes"),
        float(limits.get("pb_level_factor", 1.0)), int(limits.get("max_binning", 4)))
    if plan["mitigation"] and plan["imsize"] != imsize:
        with opened("synthesisutils") as su:  # keep an FFT-friendly size
            plan["imsize"] = min(imsize, int(su.getOptimumSize(plan["imsize"])))
    warnings += [f"size limit: {a['why']}" for a in plan["mitigation"]]
    return plan


def _common_column(mss: list[dict[str, Any]], warnings: list[str]) -> str:
    cols = {m["datacolumn"] for m in mss}
    if len(cols) == 1:
        return cols.pop()
    warnings.append(f"data columns differ between measurement sets ({sorted(cols)}); "
                    "imaging DATA")
    return "data"


def _plan_cube(ln: dict[str, Any], line_mss: list[dict[str, Any]], lines: list[dict[str, Any]],
               cfg: dict[str, Any], stem: str, spw_labels: dict[str, str],
               warnings: list[str], in_band: list[str]) -> dict[str, Any] | None:
    vsys = float(cfg["systemic_velocity_kms"])
    window = float(cfg["velocity_window_kms"])
    excl = window + float(cfg["line_free_margin_kms"])
    rest = ln["rest_ghz"] * 1e9
    f_sys = im.sky_freq(vsys, rest)
    per_ms = []
    for m in line_mss:
        hit = [s for s in m["spws"] if _spw_range(s)[0] <= f_sys <= _spw_range(s)[1]]
        if not hit:
            continue
        # the narrowest channels win (a high-resolution line window over a wide TDM one)
        s = min(hit, key=lambda x: x["chan_width_hz"])
        per_ms.append((m, s))
    if not per_ms:
        return None
    if len(per_ms) < len(line_mss):
        warnings.append(f"{ln['name']}: only {len(per_ms)}/{len(line_mss)} measurement sets "
                        "cover it")
    m0, s0 = per_ms[0]
    lo_hz, hi_hz = _spw_range(s0)
    v_edge = sorted([im.radio_velocity(lo_hz, rest), im.radio_velocity(hi_hz, rest)])
    # Native width in the output frame: LSRK channels are a little wider than TOPO ones, and
    # tclean refuses a width below the widest input channel (slightly above it is fine).
    widths = [abs(s["lsrk_hz"][1] - s["lsrk_hz"][0]) if len(s["lsrk_hz"]) > 1
              else s["chan_width_hz"] for _, s in per_ms]
    native = C_KMS * max(max(widths), s0["chan_width_hz"]) / rest * (1 + 1e-5)
    width = float(cfg["channel_width_kms"] or 0.0) or native
    if width < native * 0.999:
        warnings.append(f"{ln['name']}: channel width {width:.3f} km/s is finer than the "
                        f"native {native:.3f} km/s; using native")
        width = native
    if native > window:
        warnings.append(f"{ln['name']}: spw {s0['id']} channels are {native:.1f} km/s wide, "
                        f"coarser than the +-{window:g} km/s window; no cube")
        return None
    in_band.append(ln["name"])  # in a spectral-line window: a cube is expected
    v_lo = max(vsys - window, v_edge[0] + width)
    v_hi = min(vsys + window, v_edge[1] - width)
    if v_hi - v_lo < 2 * width:
        warnings.append(f"{ln['name']}: spw {s0['id']} covers too little of the velocity "
                        "window; no cube")
        return None
    if v_lo > vsys - window or v_hi < vsys + window:
        warnings.append(f"{ln['name']}: velocity window clipped to {v_lo:.2f}..{v_hi:.2f} km/s "
                        "by the spw edge")
    start, nchan = im.cube_grid(v_lo, v_hi, width)
    fit = []
    contsub = True
    for m, s in per_ms:
        free = linefree(s, lines, vsys, excl)
        n = sum(b - a + 1 for a, b in free)
        if n < max(3, float(cfg.get("min_linefree_fraction", 0.1)) * s["nchan"]):
            contsub = False
        fit.append({"vis": m["vis"], "field_id": m["field_id"], "spw": s["id"],
                    "fitspec": f"{s['id']}:{im.chan_selection(free)}",
                    "datacolumn": m["datacolumn"], "nchan": s["nchan"],
                    "chan_width_hz": s["chan_width_hz"]})
    if not contsub:
        # A line in the band still deserves a cube: image it with its continuum.
        warnings.append(f"{ln['name']}: too few line-free channels outside +-"
                        f"{excl:g} km/s to fit the continuum; cube made WITHOUT continuum "
                        "subtraction (narrow spw, or set imaging.line_free_margin_kms)")
        for f in fit:
            f["fitspec"] = None
    label = spw_labels.get(str(s0["id"]), str(s0["id"]))
    return {
        "line": ln, "imagename": f"{stem}.spw{label}.{ln['name']}.cube.I",
        "spw_label": label, "spw_id": s0["id"], "per_ms": fit, "contsub": contsub,
        "start_kms": start,
        "width_kms": width, "nchan": nchan, "native_width_kms": native,
        "restfreq_hz": rest, "chan_factor": max(1, int(round(width / native))),
        "chans_per_sens": max(1, int(math.ceil(width / native - 1e-6))),
    }
