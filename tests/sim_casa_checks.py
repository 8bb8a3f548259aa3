"""Independent CASA checks on simulated data, run as a child process by the tests.

``python tests/sim_casa_checks.py ARGS.json OUT.json``; ARGS holds ``op`` and its arguments.
Uses listobs/msmetadata/tclean/imfit directly (not the generator's own metadata).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np


def summary(ms: str, listfile: str) -> dict:
    import casatasks
    import casatools

    casatasks.listobs(vis=ms, listfile=listfile, overwrite=True)
    md = casatools.msmetadata()
    md.open(ms)
    scans = [int(s) for s in md.scannumbers()]
    out = {
        "scans": scans,
        "intents_per_scan": {str(s): sorted(md.intentsforscan(s)) for s in scans},
        "fields_per_scan": {str(s): [int(f) for f in md.fieldsforscan(s)] for s in scans},
        "field_names": list(md.fieldnames()),
        "spw_names": list(md.namesforspws()),
        "nchan": [int(md.nchan(i)) for i in range(md.nspw())],
        "antennas": list(md.antennanames()),
        "intents": sorted(md.intents()),
        "field_dirs_deg": [[math.degrees(d["m0"]["value"]) % 360, math.degrees(d["m1"]["value"])]
                           for d in (md.phasecenter(i) for i in range(md.nfields()))],
        "fields_for_name": {n: [int(f) for f in md.fieldsforname(n)]
                            for n in sorted(set(md.fieldnames()))},
    }
    md.close()
    tb = casatools.table()
    tb.open(ms + "/FIELD")
    out["field_source_ids"] = [int(x) for x in tb.getcol("SOURCE_ID")]
    tb.close()
    tb.open(ms + "/ANTENNA")
    out["dish_diameters"] = sorted({float(x) for x in tb.getcol("DISH_DIAMETER")})
    out["stations"] = list(tb.getcol("STATION"))
    tb.close()
    tb = casatools.table()
    tb.open(ms + "/SPECTRAL_WINDOW")
    out["bbc_no"] = [int(x) for x in tb.getcol("BBC_NO")]
    tb.close()
    tb.open(ms)
    out["columns"] = list(tb.colnames())
    w = tb.getcol("WEIGHT")
    s = tb.getcol("SIGMA")
    out["weight_sigma_max_err"] = float(np.max(np.abs(w * s * s - 1.0)))
    out["flag_fraction"] = float(tb.getcol("FLAG").mean())
    tb.close()
    return out


def compare(ms_a: str, ms_b: str) -> dict:
    import casatools

    tb = casatools.table()
    res = {}
    tb.open(ms_a)
    cols = [c for c in ("DATA", "CORRECTED_DATA", "WEIGHT", "SIGMA", "FLAG", "UVW", "TIME")
            if c in tb.colnames()]
    n_dd = len(np.unique(tb.getcol("DATA_DESC_ID")))
    tb.close()
    tb2 = casatools.table()
    tb.open(ms_a)
    tb2.open(ms_b)
    for c in cols:
        same = True
        for dd in range(n_dd):
            qa_ = tb.query(f"DATA_DESC_ID=={dd}")
            qb = tb2.query(f"DATA_DESC_ID=={dd}")
            a, b = qa_.getcol(c), qb.getcol(c)
            same = same and a.shape == b.shape and a.tobytes() == b.tobytes()
            qa_.close()
            qb.close()
        res[c] = same
    tb.close()
    tb2.close()
    return res


def _tclean(**kw) -> None:
    import casatasks

    for ext in (".image", ".model", ".psf", ".residual", ".pb", ".sumwt", ".mask",
                ".image.pbcor"):
        shutil.rmtree(kw["imagename"] + ext, ignore_errors=True)
    casatasks.tclean(**kw)


def _beam(image: str) -> dict:
    import casatools

    ia = casatools.image()
    ia.open(image)
    rb = ia.restoringbeam()
    ia.close()
    if "beams" in rb:
        rb = rb["beams"]["*0"]["*0"]
    return {"bmaj": rb["major"]["value"], "bmin": rb["minor"]["value"],
            "bpa": rb["positionangle"]["value"], "unit": rb["major"]["unit"]}


def image_cont(ms: str, field: str, spw: str, imagename: str, cell: float, imsize: int,
               reffreq_ghz: float, components: list[dict], niter: int, threshold: str,
               mask: list[str], datacolumn: str) -> dict:
    import casatasks

    _tclean(vis=ms, field=field, spw=spw, imagename=imagename, specmode="mfs",
            reffreq=f"{reffreq_ghz}GHz", deconvolver="hogbom", weighting="natural",
            cell=f"{cell}arcsec", imsize=imsize, niter=niter, threshold=threshold,
            usemask="user", mask=mask, pbcor=True, datacolumn=datacolumn, gridder="standard")
    img = imagename + ".image.pbcor"
    beam = _beam(img)
    stats = casatasks.imstat(imagename=imagename + ".residual")
    peak = casatasks.imstat(imagename=imagename + ".image")["max"][0]
    fits = []
    for c in components:
        region = (f"centerbox[[{c['ra_deg']}deg, {c['dec_deg']}deg], "
                  f"[{c['box_arcsec']}arcsec, {c['box_arcsec']}arcsec]]")
        r = casatasks.imfit(imagename=img, region=region)
        comp = r["results"]["component0"]
        d = comp["shape"]["direction"]
        fits.append({"flux_jy": float(comp["flux"]["value"][0]),
                     "ra_deg": math.degrees(d["m0"]["value"]),
                     "dec_deg": math.degrees(d["m1"]["value"]),
                     "converged": bool(r["converged"][0])})
    return {"beam": beam, "rms": float(stats["rms"][0]), "peak": float(peak), "fits": fits}


def dirty_snr(ms: str, field: str, spw: str, imagename: str, cell: float, imsize: int,
              datacolumn: str) -> dict:
    import casatasks

    _tclean(vis=ms, field=field, spw=spw, imagename=imagename, specmode="mfs",
            weighting="natural", cell=f"{cell}arcsec", imsize=imsize, niter=0,
            datacolumn=datacolumn)
    st = casatasks.imstat(imagename=imagename + ".image")
    # rms from the outer part of the image (away from the sources)
    n = imsize
    box = f"0,0,{n - 1},{n // 5}"
    rms = casatasks.imstat(imagename=imagename + ".image", box=box)["rms"][0]
    return {"peak": float(st["max"][0]), "rms": float(rms), "snr": float(st["max"][0] / rms)}


def image_cube(ms: str, field: str, spw: str, imagename: str, cell: float, imsize: int,
               rest_ghz: float, center: list[float], radius_arcsec: float,
               vrange: list[float], niter: int, threshold: str, datacolumn: str) -> dict:
    import casatools

    mask = f"circle[[{center[0]}deg, {center[1]}deg], {radius_arcsec}arcsec]"
    _tclean(vis=ms, field=field, spw=spw, imagename=imagename, specmode="cube",
            outframe="LSRK", restfreq=f"{rest_ghz}GHz", deconvolver="hogbom",
            weighting="natural", cell=f"{cell}arcsec", imsize=imsize, niter=niter,
            threshold=threshold, usemask="user", mask=mask, pbcor=True,
            restoringbeam="common", datacolumn=datacolumn, gridder="standard")
    img = imagename + ".image.pbcor"
    ia = casatools.image()
    ia.open(img)
    data = ia.getchunk()[:, :, 0, :]  # x, y, chan
    cs = ia.coordsys()
    nchan = data.shape[-1]
    freqs = np.array([cs.toworld([0, 0, 0, k])["numeric"][3] for k in range(nchan)])
    world = cs.referencevalue()["numeric"]
    world[0], world[1] = math.radians(center[0]), math.radians(center[1])
    pix = cs.topixel(world)["numeric"]
    incr = abs(cs.increment()["numeric"][0])  # rad
    beam = _beam(img)
    ia.close()
    cell_rad = incr
    bmaj = beam["bmaj"] * (math.pi / 180 / 3600 if beam["unit"] == "arcsec" else 1)
    bmin = beam["bmin"] * (math.pi / 180 / 3600 if beam["unit"] == "arcsec" else 1)
    beam_pix = math.pi * bmaj * bmin / (4 * math.log(2)) / cell_rad ** 2
    yy, xx = np.meshgrid(np.arange(data.shape[1]), np.arange(data.shape[0]))
    r = np.hypot(xx - pix[0], yy - pix[1]) * cell_rad * 180 / math.pi * 3600
    sel = r <= radius_arcsec
    spec = np.array([data[:, :, k][sel].sum() / beam_pix for k in range(nchan)])
    vel = 299792.458 * (1 - freqs / (rest_ghz * 1e9))
    free = (vel < vrange[0] - 1.0) | (vel > vrange[1] + 1.0)
    base = float(np.median(spec[free])) if free.any() else 0.0
    dv = np.abs(np.gradient(vel))
    inside = ~free
    flux = float(np.sum((spec[inside] - base) * dv[inside]))
    return {"integrated_flux_jykms": flux, "continuum_jy": base, "nchan": nchan,
            "n_line_free": int(free.sum()), "beam": beam,
            "spectrum": spec.tolist(), "velocity": vel.tolist()}


def image_region_flux(ms: str, field: str, spw: str, imagename: str, cell: float,
                      imsize: int, reffreq_ghz: float, phasecenter: str, gridder: str,
                      niter: int, threshold: str, mask: list[str], regions: dict[str, dict],
                      pb_probe_arcsec: list[float], scales: list[int]) -> dict:
    """Clean (multiscale, user mask, pbcor) and sum the pbcor image inside each region.

    ``regions``: name -> {"include": [[ra, dec, r_arcsec], ...], "exclude": [...]}; flux is
    the sum over the region's pixels divided by the restoring-beam area in pixels. Also
    returns the .pb value at ``pb_probe_arcsec`` north of the phase centre.
    """
    import casatasks
    import casatools

    _tclean(vis=ms, field=field, spw=spw, imagename=imagename, specmode="mfs",
            reffreq=f"{reffreq_ghz}GHz", deconvolver="multiscale", scales=scales,
            weighting="natural", cell=f"{cell}arcsec", imsize=imsize, niter=niter,
            threshold=threshold, usemask="user", mask=mask, pbcor=True, datacolumn="corrected",
            gridder=gridder, phasecenter=phasecenter, pblimit=0.2)
    beam = _beam(imagename + ".image.pbcor")
    ia = casatools.image()
    ia.open(imagename + ".image.pbcor")
    data = ia.getchunk()[:, :, 0, 0]
    cs = ia.coordsys()
    ia.close()
    ia.open(imagename + ".pb")
    pb = ia.getchunk()[:, :, 0, 0]
    ia.close()
    ref = cs.referencepixel()["numeric"]
    refval = cs.referencevalue()["numeric"]
    inc = cs.increment()["numeric"]
    nx, ny = data.shape
    ii, jj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    # flat-sky offsets (arcsec) of each pixel from the image centre
    x = (ii - ref[0]) * inc[0] * 206264.806  # east positive (the RA increment is < 0)
    y = (jj - ref[1]) * inc[1] * 206264.806
    ra0, dec0 = refval[0], refval[1]

    def offsets(ra_deg: float, dec_deg: float) -> tuple[float, float]:
        return ((math.radians(ra_deg) - ra0) * math.cos(dec0) * 206264.806,
                (math.radians(dec_deg) - dec0) * 206264.806)

    cell_arcsec = abs(inc[0]) * 206264.806
    beam_pix = math.pi * beam["bmaj"] * beam["bmin"] / (4 * math.log(2)) / cell_arcsec ** 2
    out = {}
    valid = np.isfinite(data)
    for name, reg in regions.items():
        sel = np.zeros_like(valid)
        for ra, dec, r in reg["include"]:
            ox, oy = offsets(ra, dec)
            sel |= np.hypot(x - ox, y - oy) <= r
        for ra, dec, r in reg.get("exclude", []):
            ox, oy = offsets(ra, dec)
            sel &= np.hypot(x - ox, y - oy) > r
        out[name] = float(np.nansum(data[sel & valid]) / beam_pix)
        out[name + "_blanked_pixels"] = int((sel & ~valid).sum())
    probes = []
    for r in pb_probe_arcsec:
        j = int(round(ref[1] + r / (inc[1] * 206264.806)))
        probes.append(float(pb[int(round(ref[0])), j]))
    rms = casatasks.imstat(imagename=imagename + ".residual")["rms"][0]
    return {"flux": out, "beam": beam, "pb_probe": probes, "residual_rms": float(rms),
            "beam_pix": beam_pix}


def restored_vs_truth(restored: str, truth: str, truth_column: str = "DATA") -> dict:
    """Per antenna: median |CORRECTED| / |DATA_truth| and phase(CORRECTED - truth) statistics
    over unflagged visibilities of rows present in both MS (matched on spw, time, baseline)."""
    import casatools

    def by_spw(ms):
        tb = casatools.table()
        tb.open(ms + "/DATA_DESCRIPTION")
        out = {int(s): dd for dd, s in enumerate(tb.getcol("SPECTRAL_WINDOW_ID"))}
        tb.close()
        return out

    dd_r, dd_t = by_spw(restored), by_spw(truth)
    tr, tt = casatools.table(), casatools.table()
    tr.open(restored)
    tt.open(truth)
    nant = int(max(tt.getcol("ANTENNA2").max(), tt.getcol("ANTENNA1").max())) + 1
    ratios = [[] for _ in range(nant)]
    phases = [[] for _ in range(nant)]
    n_matched = 0
    for spw, ddt in dd_t.items():
        if spw not in dd_r:
            continue
        qt = tt.query(f"DATA_DESC_ID=={ddt}", sortlist="TIME,ANTENNA1,ANTENNA2")
        qr = tr.query(f"DATA_DESC_ID=={dd_r[spw]}", sortlist="TIME,ANTENNA1,ANTENNA2")
        if not qt.nrows() or qr.nrows() != qt.nrows():
            qt.close(), qr.close()
            continue
        a1, a2 = qt.getcol("ANTENNA1"), qt.getcol("ANTENNA2")
        assert (a1 == qr.getcol("ANTENNA1")).all() and (a2 == qr.getcol("ANTENNA2")).all()
        vt, vr = qt.getcol(truth_column), qr.getcol("CORRECTED_DATA")
        ok = ~(qt.getcol("FLAG") | qr.getcol("FLAG")) & (np.abs(vt) > 0)
        ratio = np.abs(vr) / np.where(np.abs(vt) > 0, np.abs(vt), 1)
        dphi = np.degrees(np.angle(vr * np.conj(vt)))
        for ant in range(nant):
            sel = ok & ((a1 == ant) | (a2 == ant))[None, None, :]
            if sel.any():
                ratios[ant].append(ratio[sel])
                phases[ant].append(dphi[sel])
        n_matched += qt.nrows()
        qt.close(), qr.close()
    tr.close(), tt.close()
    out = {"n_rows_matched": n_matched, "amp_ratio_median": [], "phase_mean_deg": [],
           "phase_rms_deg": []}
    for ant in range(nant):
        r = np.concatenate(ratios[ant]) if ratios[ant] else np.array([np.nan])
        ph = np.concatenate(phases[ant]) if phases[ant] else np.array([np.nan])
        out["amp_ratio_median"].append(float(np.median(r)))
        out["phase_mean_deg"].append(float(np.mean(ph)))
        out["phase_rms_deg"].append(float(np.sqrt(np.mean(ph ** 2))))
    return out


OPS = {"restored_vs_truth": restored_vs_truth, "summary": summary, "compare": compare,
       "image_cont": image_cont, "dirty_snr": dirty_snr, "image_cube": image_cube,
       "image_region_flux": image_region_flux}


def main() -> None:
    args = json.loads(Path(sys.argv[1]).read_text())
    op = args.pop("op")
    Path(sys.argv[2]).write_text(json.dumps(OPS[op](**args)))


if __name__ == "__main__":
    main()
