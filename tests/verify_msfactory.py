"""Small ALMA-like measurement sets for the verify/split tests (run in a CASA child process).

``python tests/verify_msfactory.py SPEC.json`` builds every MS the spec lists;
``... compare SPLIT.ms SOURCE.ms`` prints how a split's DATA matches the source columns. Entry:
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
        for f in [] if spec.get("empty") else spec["fields"]:
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
        if tb.nrows():  # an "empty" MS keeps its header and subtables only
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


def compare(split_ms: str, source_ms: str) -> dict:
    """How the split's DATA compares with the source's CORRECTED_DATA and DATA (target rows)."""
    from casatools import table

    tb = table()

    def col(path: str, name: str) -> list:
        tb.open(path)
        try:
            return list(tb.getcol(name))
        finally:
            tb.close()

    out_names = col(f"{split_ms}/SPECTRAL_WINDOW", "NAME")
    src_names = col(f"{source_ms}/SPECTRAL_WINDOW", "NAME")
    out_dd = col(f"{split_ms}/DATA_DESCRIPTION", "SPECTRAL_WINDOW_ID")
    src_dd = col(f"{source_ms}/DATA_DESCRIPTION", "SPECTRAL_WINDOW_ID")
    out_fields = col(f"{split_ms}/FIELD", "NAME")
    src_fields = col(f"{source_ms}/FIELD", "NAME")
    res = {"max_diff_corrected": 0.0, "min_diff_data": None, "rows": 0, "spws": []}
    for d_out, spw_out in enumerate(out_dd):
        name = out_names[spw_out]
        d_src = src_dd.index(src_names.index(name))
        res["spws"].append(name)
        tb.open(split_ms)
        q = tb.query(f"DATA_DESC_ID=={d_out}", sortlist="TIME,ANTENNA1,ANTENNA2")
        split_data, fids = q.getcol("DATA"), q.getcol("FIELD_ID")
        q.close()
        tb.close()
        wanted = sorted({src_fields.index(out_fields[f]) for f in set(fids.tolist())})
        tb.open(source_ms)
        q = tb.query(f"DATA_DESC_ID=={d_src} && FIELD_ID IN {wanted}",
                     sortlist="TIME,ANTENNA1,ANTENNA2")
        corr, data = q.getcol("CORRECTED_DATA"), q.getcol("DATA")
        q.close()
        tb.close()
        assert split_data.shape == corr.shape, (split_data.shape, corr.shape)
        res["rows"] += split_data.shape[-1]
        res["max_diff_corrected"] = max(res["max_diff_corrected"],
                                        float(np.max(np.abs(split_data - corr))))
        dd = float(np.max(np.abs(split_data - data)))
        res["min_diff_data"] = dd if res["min_diff_data"] is None else min(
            res["min_diff_data"], dd)
    return res


def main() -> None:
    if sys.argv[1] == "compare":
        print(json.dumps(compare(sys.argv[2], sys.argv[3])))
        return
    for spec in json.loads(Path(sys.argv[1]).read_text()):
        build(spec)


if __name__ == "__main__":
    main()
