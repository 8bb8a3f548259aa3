"""Small ALMA-like measurement sets for the verify/split tests (run in a CASA child process).

``python tests/verify_msfactory.py SPEC.json`` builds every MS the spec lists. Each MS entry:
``{"path", "antennas", "fields": [{"name", "ra", "dec", "intent"}], "spws": [{"name", "freq_ghz",
"nchan", "width_mhz", "bbc", "observe"}], "corrected": bool, "seed": int}``. DATA gets random
values and CORRECTED_DATA gets DATA + 10 (so a test can tell which one a split copied).
Only spws with ``observe`` true (default) get visibilities, so ids can mimic the archive's
numbering (WVR / CH_AVG windows present in SPECTRAL_WINDOW but without science rows).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def _antennas(n: int) -> tuple[list[float], ...]:
    import casadata

    cfg = os.path.join(casadata.datapath, "alma/simmos/alma.cycle10.1.cfg")
    xs, ys, zs, ds, names = [], [], [], [], []
    with open(cfg) as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            p = line.split()
            xs.append(float(p[0]))
            ys.append(float(p[1]))
            zs.append(float(p[2]))
            ds.append(float(p[3]))
            names.append(p[4])
    return xs[:n], ys[:n], zs[:n], ds[:n], names[:n]


def build(spec: dict) -> None:
    from casatools import measures, simulator, table

    path = spec["path"]
    sm, me, tb = simulator(), measures(), table()
    xs, ys, zs, ds, names = _antennas(spec.get("antennas", 5))
    sm.open(path)
    try:
        sm.setconfig(telescopename="ALMA", x=xs, y=ys, z=zs, dishdiameter=ds,
                     mount=["alt-az"] * len(xs), antname=names, padname=names,
                     coordsystem="local", referencelocation=me.observatory("ALMA"))
        for spw in spec["spws"]:
            width = f"{spw.get('width_mhz', 15.625)}MHz"
            sm.setspwindow(spwname=spw["name"], freq=f"{spw['freq_ghz']}GHz", deltafreq=width,
                           freqresolution=width, nchannels=spw.get("nchan", 4),
                           stokes="XX YY")
        for f in spec["fields"]:
            sm.setfield(sourcename=f["name"],
                        sourcedirection=me.direction("J2000", f["ra"], f["dec"]))
        sm.setlimits(shadowlimit=0.001, elevationlimit="8.0deg")
        sm.setauto(autocorrwt=0.0)
        sm.settimes(integrationtime="10s", usehourangle=True,
                    referencetime=me.epoch("UTC", spec.get("date", "2024/05/01/00:00:00")))
        t = 0
        for f in spec["fields"]:
            for spw in spec["spws"]:
                if not spw.get("observe", True):
                    continue
                sm.observe(sourcename=f["name"], spwname=spw["name"], starttime=f"{t}s",
                           stoptime=f"{t + 20}s", state_obs_mode=f["intent"])
            t += 30
    finally:
        sm.close()
    rng = np.random.default_rng(spec.get("seed", 1))
    tb.open(path, nomodify=False)
    try:
        data = tb.getcol("DATA")
        data = (rng.normal(size=data.shape) + 1j * rng.normal(size=data.shape)).astype(
            data.dtype)
        tb.putcol("DATA", data)
        if spec.get("corrected", True):
            tb.putcol("CORRECTED_DATA", data + 10)
        else:
            tb.removecols(["CORRECTED_DATA"])
    finally:
        tb.close()
    tb.open(os.path.join(path, "SPECTRAL_WINDOW"), nomodify=False)
    try:
        desc = tb.getcoldesc("NUM_CHAN")
        desc["comment"] = "Baseband converter number"
        tb.addcols({"BBC_NO": desc})
        tb.putcol("BBC_NO", np.array([s.get("bbc", 1) for s in spec["spws"]], dtype=np.int32))
    finally:
        tb.close()


def main() -> None:
    for spec in json.loads(Path(sys.argv[1]).read_text()):
        build(spec)


if __name__ == "__main__":
    main()
