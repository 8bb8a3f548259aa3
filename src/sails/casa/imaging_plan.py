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
#: Mosaics: the "inner region" of the mosaic metrics is where the mosaic's primary-beam
#: response is at least this (flat noise there, away from the edge).
MOSAIC_INNER_PB = 0.8
#: Pointings closer than this (arcsec) are one pointing (the same field in several EBs).
SAME_POINTING_ARCSEC = 0.01


class PlanError(BadInput):
    """The data cannot be imaged as asked (no such field, no science spw ...)."""


def _field_ids(msmd, name: str, vis: str) -> list[int]:
    """Every field row called ``name`` that has data: one, or a mosaic's pointings."""
    names = list(msmd.fieldnames())
    ids = [i for i, n in enumerate(names) if n == name]
    if not ids:
        raise PlanError(f"field {name!r} is not in {vis} (fields: {names})")
    with_data = [fid for fid in ids if len(msmd.scansforfield(fid)) > 0]
    if not with_data:
        raise PlanError(f"field {name!r} has no scans in {vis}")
    return with_data


def _field_id(msmd, name: str, vis: str) -> int:
    return _field_ids(msmd, name, vis)[0]


def _direction_deg(msmd, fid: int) -> tuple[str, float, float]:
    d = msmd.phasecenter(fid)
    return (str(d.get("refer", "J2000")), math.degrees(d["m0"]["value"]) % 360.0,
            math.degrees(d["m1"]["value"]))


def mosaic_geometry(mss: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Centre, pointings and radius of a mosaic (None for a single pointing).

    The centre is the mean direction of the distinct pointings of every measurement set; the
    radius is the largest pointing offset from it (arcsec).
    """
    if not all(m.get("pointings") for m in mss):
        return None
    frame = mss[0]["pointings"][0][0]
    pts: list[tuple[float, float]] = []
    for m in mss:
        for _f, ra, dec in m["pointings"]:
            if not any(_sep_arcsec(ra, dec, a, b) < SAME_POINTING_ARCSEC for a, b in pts):
                pts.append((ra, dec))
    if len(pts) < 2:
        return None
    vec = [sum(c) for c in zip(*(_unit(ra, dec) for ra, dec in pts), strict=True)]
    norm = math.sqrt(sum(c * c for c in vec))
    ra0 = math.degrees(math.atan2(vec[1], vec[0])) % 360.0
    dec0 = math.degrees(math.asin(vec[2] / norm))
    radius = max(_sep_arcsec(ra, dec, ra0, dec0) for ra, dec in pts)
    return {"n_pointings": len(pts), "centre_deg": [ra0, dec0], "frame": frame,
            "radius_arcsec": radius, "pointings_deg": [list(p) for p in pts],
            "phasecenter": f"{frame} {ra0:.9f}deg {dec0:.9f}deg"}


def _sel(m: dict[str, Any]) -> str:
    """The field selection of one measurement set: its target field ids."""
    return m.get("field_sel") or str(m["field_id"])


def _unit(ra: float, dec: float) -> tuple[float, float, float]:
    a, d = math.radians(ra), math.radians(dec)
    return (math.cos(d) * math.cos(a), math.cos(d) * math.sin(a), math.sin(d))


def _sep_arcsec(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    u, v = _unit(ra1, dec1), _unit(ra2, dec2)
    chord = math.sqrt(sum((x - y) ** 2 for x, y in zip(u, v, strict=True)))
    return math.degrees(2 * math.asin(min(1.0, chord / 2))) * 3600.0


def _has_column(vis: str, column: str) -> bool:
    with opened("table", vis) as tb:
        return column in tb.colnames()


def describe_ms(vis: str, field: str, datacolumn: str = "auto") -> dict[str, Any]:
    """Field id, science spws with LSRK channel frequencies, longest baseline, dish size."""
    with opened("msmetadata", vis) as msmd:
        fids = _field_ids(msmd, field, vis)
        fid = fids[0]
        pointings = [_direction_deg(msmd, f) for f in fids]
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
        ms.msselect({"field": ",".join(str(f) for f in fids)})
        uvmax = float(ms.range(["uvdist"])["uvdist"][1])
    if datacolumn == "auto":
        datacolumn = "corrected" if _has_column(vis, "CORRECTED_DATA") else "data"
    return {"vis": vis, "field_id": fid, "field_ids": fids,
            "field_sel": ",".join(str(f) for f in fids), "pointings": pointings,
            "spws": spws, "max_baseline_m": uvmax,
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


def catalogue_linefree(lines: list[dict[str, Any]], vsys: float) -> LinefreeFn:
    """Today's rule: catalogue windows only (``linefree_for(lines, vsys, None)``)."""
    return linefree_for(lines, vsys, None)


def edge_channels(nchan: int, fraction: float) -> list[tuple[int, int]]:
    """The outer ``fraction`` of a spw's channels on each side (at least one each): the
    continuum of a narrow line window whose catalogue window covers all of it is fitted
    there, with order 0, as the ALMA pipeline falls back to for a line-filled window."""
    k = max(1, int(round(fraction * nchan)))
    if 2 * k >= nchan:
        return []
    return [(0, k - 1), (nchan - k, nchan - 1)]


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
    mosaic = mosaic_geometry(mss)
    raw = im.raw_imsize(pb_fwhm, float(cfg["pb_factor"]), cell)
    if mosaic:  # the union of the pointings: their spread plus one pointing's width
        raw += math.ceil(2 * mosaic["radius_arcsec"] / cell)
    with opened("synthesisutils") as su:
        imsize = int(su.getOptimumSize(raw))

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
    if not cfg.get("name_spw", True):
        label = ""
    elif spw_labels:
        label = "spw" + "_".join(spw_labels.get(str(s), str(s)) for s in sorted(cont_spw_ids))
    datacolumn = _common_column(mss, warnings)
    continuum = {
        "imagename": f"{stem}.{label}.cont.I" if label else f"{stem}.cont.I",
        "vis": [m["vis"] for m in mss], "field": [_sel(m) for m in mss],
        "spw": cont_sel, "datacolumn": datacolumn, "nterms": nterms,
        # multiscale when the config asks for continuum scales (extended emission: the
        # source stage's joint 12-m + 7-m images); hogbom for a single array's targets
        "deconvolver": "mtmfs" if nterms == 2 else ("multiscale" if cfg.get("cont_scales")
                                                   else "hogbom"),
        "scales": list(cfg.get("cont_scales") or ([0] if nterms == 2 else [])),
        "reffreq_hz": 0.5 * (lo + hi), "fractional_bw": fbw, "spw_ids": sorted(cont_spw_ids),
        "linefree_fraction": nfree / max(ntot, 1), "freq_range_hz": [lo, hi],
        "linefree_source": sources,
        "archive_spw_ids": [spw_labels.get(str(s), str(s)) for s in sorted(cont_spw_ids)],
    }

    # Cubes: every catalogue line whose systemic frequency falls in a science spw.
    cubes, in_band = [], []
    if cfg.get("make_cubes", True):
        for ln in sorted(lines, key=lambda x: x["rest_ghz"]):
            cube = _plan_cube(ln, line_mss, free_of, cfg, stem, spw_labels, warnings, in_band)
            if cube:
                cubes.append(cube)

    spw_cubes = []
    if cfg.get("make_cubes", True) and cfg.get("all_spw_cubes"):
        for s0 in line_mss[0]["spws"]:
            cube = _plan_spw_cube(s0, line_mss, free_of, cfg, stem, spw_labels, warnings)
            if cube:
                spw_cubes.append(cube)

    plan = {
        "field": field, "stem": stem, "cell_arcsec": cell, "imsize": imsize,
        "pb_fwhm_arcsec": pb_fwhm, "max_baseline_m": bmax, "dish_m": dish,
        "phasecenter_field": ref["field_id"], "continuum": continuum, "cubes": cubes,
        "mosaic": mosaic, "gridder": "mosaic" if mosaic else "standard",
        "phasecenter": mosaic["phasecenter"] if mosaic else "",
        "spw_cubes": spw_cubes,
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


def _plan_spw_cube(s0: dict[str, Any], line_mss: list[dict[str, Any]], free_of: LinefreeFn,
                   cfg: dict[str, Any], stem: str, spw_labels: dict[str, str],
                   warnings: list[str]) -> dict[str, Any] | None:
    """``imaging.all_spw_cubes``: a native-resolution cube of the whole science spw ``s0``
    (as the ALMA pipeline makes), continuum-subtracted like the line cubes. Planned as a
    line cube whose "line" is the spw centre and whose window is the whole spw."""
    lo, hi = _spw_range(s0)
    label = spw_labels.get(str(s0["id"]), str(s0["id"]))
    pseudo = {"name": f"spw{label}", "species": "", "transition": "",
              "rest_ghz": 0.5 * (lo + hi) / 1e9}
    half = C_KMS * (hi - lo) / (lo + hi)
    sub = [dict(m, spws=[s for s in m["spws"] if s["id"] == s0["id"]]) for m in line_mss]
    sub = [m for m in sub if m["spws"]]
    excl = float(cfg["velocity_window_kms"]) + float(cfg["line_free_margin_kms"])
    mine: list[str] = []
    cube = _plan_cube(pseudo, sub, free_of, dict(cfg, systemic_velocity_kms=0.0,
                                                 velocity_window_kms=half * 1.001),
                      stem, spw_labels, mine, [], excl_kms=excl)
    warnings += [w for w in mine if "clipped" not in w and "only" not in w]
    if cube:
        cube.update(kind="spw", imagename=f"{stem}.spw{label}.cube.I")
    return cube


def _plan_cube(ln: dict[str, Any], line_mss: list[dict[str, Any]], free_of: LinefreeFn,
               cfg: dict[str, Any], stem: str, spw_labels: dict[str, str],
               warnings: list[str], in_band: list[str],
               excl_kms: float | None = None) -> dict[str, Any] | None:
    vsys = float(cfg["systemic_velocity_kms"])
    window = float(cfg["velocity_window_kms"])
    excl = excl_kms if excl_kms is not None else window + float(cfg["line_free_margin_kms"])
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
    method = "uvcontsub"
    min_fit = float(cfg.get("min_linefree_fraction", 0.1))
    for m, s in per_ms:
        free = free_of(s, excl)
        n = sum(b - a + 1 for a, b in free)
        if n < max(3, min_fit * s["nchan"]):
            method = "uvcontsub_edges_order0"
        fit.append({"vis": m["vis"], "field_id": m["field_id"], "field_sel": _sel(m),
                    "spw": s["id"],
                    "fitspec": f"{s['id']}:{im.chan_selection(free)}", "fitorder": None,
                    "datacolumn": m["datacolumn"], "nchan": s["nchan"],
                    "chan_width_hz": s["chan_width_hz"]})
    if method != "uvcontsub":
        # The catalogue window covers the whole (narrow) spw: fit a constant to its edge
        # channels, the part of a line window farthest from the line (ALMA tunes it there).
        frac = float(cfg.get("edge_fit_fraction", 0.1))
        edges = [edge_channels(f["nchan"], frac) for f in fit]
        if all(edges):
            warnings.append(f"{ln['name']}: too few line-free channels outside +-{excl:g} "
                            f"km/s; continuum fitted (order 0) to the outer {frac:.0%} of "
                            "the channels on each side")
            for f, e in zip(fit, edges, strict=True):
                f.update(fitspec=f"{f['spw']}:{im.chan_selection(e)}", fitorder=0)
        else:
            method = "none"
            warnings.append(f"{ln['name']}: too few channels to fit the continuum; cube "
                            "made WITHOUT continuum subtraction")
            for f in fit:
                f["fitspec"] = None
    contsub = method != "none"
    label = spw_labels.get(str(s0["id"]), str(s0["id"]))
    # a joint image of several arrays has no one spw id (each MOUS numbers its own)
    spw_part = f".spw{label}" if cfg.get("name_spw", True) else ""
    return {
        "line": ln, "imagename": f"{stem}{spw_part}.{ln['name']}.cube.I",
        "spw_label": label, "spw_id": s0["id"], "per_ms": fit, "contsub": contsub,
        "contsub_method": method,
        "start_kms": start,
        "width_kms": width, "nchan": nchan, "native_width_kms": native,
        "restfreq_hz": rest, "chan_factor": max(1, int(round(width / native))),
        "chans_per_sens": max(1, int(math.ceil(width / native - 1e-6))),
    }
