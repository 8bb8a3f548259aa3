"""Small simulated ``*_targets.ms`` for the imaging tests (CASA runs in a child process).

A stand-in until ``sails.sim`` lands: one or more target fields, a line spw holding C18O 2-1
and a wide continuum spw, point sources with a known flux, a Gaussian line with a known
integrated flux and centroid, thermal noise with WEIGHT/SIGMA set from it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sails.casaenv import casa_env

_CODE = r'''
import json, sys, math
import numpy as np
import casatools, casadata, os

spec = json.loads(sys.argv[1])
out = spec["ms"]
qa = casatools.quanta(); me = casatools.measures()
cfg = os.path.join(casadata.datapath, "alma/simmos", spec.get("config", "alma.cycle10.1.cfg"))
xs, ys, zs, ds, names = [], [], [], [], []
for line in open(cfg):
    if line.startswith("#") or not line.strip():
        continue
    p = line.split()
    xs.append(float(p[0])); ys.append(float(p[1])); zs.append(float(p[2]))
    ds.append(float(p[3])); names.append(p[4])
n = spec.get("n_ant", 16)
xs, ys, zs, ds, names = xs[:n], ys[:n], zs[:n], ds[:n], names[:n]
obs = me.observatory("ALMA")
sm = casatools.simulator()
sm.open(out)
sm.setconfig(telescopename="ALMA", x=xs, y=ys, z=zs, dishdiameter=ds, mount=["ALT-AZ"] * n,
             antname=names, padname=names, coordsystem="local", referencelocation=obs)
for i, w in enumerate(spec["spws"]):
    sm.setspwindow(spwname=w["name"], freq=f"{w['f0_ghz']}GHz", deltafreq=f"{w['df_mhz']}MHz",
                   freqresolution=f"{w['df_mhz']}MHz", nchannels=w["nchan"], refcode="LSRK",
                   stokes="XX YY")
for f in spec["fields"]:
    sm.setfield(sourcename=f["name"], sourcedirection=me.direction("J2000", f["ra"], f["dec"]))
sm.setlimits(shadowlimit=0.01, elevationlimit="10deg")
sm.setauto(autocorrwt=0.0)
sm.settimes(integrationtime=f"{spec.get('tint_s', 30)}s", usehourangle=True,
            referencetime=me.epoch("UTC", "2024/05/01/00:00:00"))
scan_s = spec.get("scan_s", 600)
t = 0.0
for rep in range(spec.get("n_scans", 2)):
    for f in spec["fields"]:
        for w in spec["spws"]:
            sm.observe(sourcename=f["name"], spwname=w["name"], starttime=f"{t}s",
                       stoptime=f"{t + scan_s}s", state_obs_mode="OBSERVE_TARGET#ON_SOURCE")
        t += scan_s
sm.setvp(dovp=True, usedefaultvp=True)
sm.close()

# Predict the sky, field by field.
cl = casatools.componentlist(); ia = casatools.imager()
msmd = casatools.msmetadata()
for fi, f in enumerate(spec["fields"]):
    comps = f.get("components", [])
    line = f.get("line")
    sm = casatools.simulator(); sm.openfromms(out)
    sm.setvp(dovp=True, usedefaultvp=True)
    sm.setdata(spwid=list(range(len(spec["spws"]))), fieldid=[fi])
    if comps:
        clname = out + f".field{fi}.cl"
        cl.done()
        for c in comps:
            cl.addcomponent(flux=c["flux_jy"], fluxunit="Jy", polarization="Stokes",
                            dir=me.direction("J2000", c["ra"], c["dec"]), shape="point",
                            freq=f"{c['ref_ghz']}GHz", spectrumtype="spectral index",
                            index=c.get("alpha", 0.0))
        cl.rename(clname); cl.close()
        sm.predict(complist=clname, incremental=False)
    sm.close()
    if line:
        # The line: a point source with a Gaussian spectrum, added to DATA directly
        # (V = S(nu) PB exp(-2 pi i (u l + v m) nu / c)) so the truth is exact.
        ws = spec["spws"][line["spw"]]
        freqs = ws["f0_ghz"] * 1e9 + np.arange(ws["nchan"]) * ws["df_mhz"] * 1e6
        v = 299792.458 * (1 - freqs / (line["rest_ghz"] * 1e9))
        dv = abs(299792.458 * ws["df_mhz"] * 1e6 / (line["rest_ghz"] * 1e9))
        sig = line["fwhm_kms"] / 2.3548
        prof = np.exp(-0.5 * ((v - line["v_kms"]) / sig) ** 2)
        prof = prof / (prof.sum() * dv) * line["int_flux_jykms"]  # Jy per channel
        ra0 = qa.convert(f["ra"], "rad")["value"]; de0 = qa.convert(f["dec"], "rad")["value"]
        ra1 = qa.convert(line["ra"], "rad")["value"]; de1 = qa.convert(line["dec"], "rad")["value"]
        l = math.cos(de1) * math.sin(ra1 - ra0)
        m = math.sin(de1) * math.cos(de0) - math.cos(de1) * math.sin(de0) * math.cos(ra1 - ra0)
        nn = math.sqrt(max(0.0, 1 - l * l - m * m))
        r = math.asin(math.sqrt(l * l + m * m))
        fwhm = 1.13 * (299792458.0 / freqs) / 12.0
        pb = np.exp(-4 * math.log(2) * r ** 2 / fwhm ** 2)
        tb = casatools.table(); tb.open(out, nomodify=False)
        sub = tb.query(f"DATA_DESC_ID=={line['spw']} && FIELD_ID=={fi}")
        uvw = sub.getcol("UVW"); d = sub.getcol("DATA")
        ph = (2j * math.pi / 299792458.0) * np.outer(freqs, uvw[0] * l + uvw[1] * m
                                                       + uvw[2] * (nn - 1))
        d += (prof * pb)[None, :, None] * np.exp(ph)[None, :, :]
        sub.putcol("DATA", d); sub.close(); tb.close()

# Thermal noise with WEIGHT/SIGMA as a pipeline restore sets them.
tb = casatools.table(); tb.open(out, nomodify=False)
rng = np.random.default_rng(spec.get("seed", 1))
sigma = spec["sigma_jy"]
ddids = tb.getcol("DATA_DESC_ID")
for ddid in sorted(set(ddids.tolist())):
    sub = tb.query(f"DATA_DESC_ID=={ddid}")
    d = sub.getcol("DATA")
    d = d + sigma * (rng.standard_normal(d.shape) + 1j * rng.standard_normal(d.shape))
    sub.putcol("DATA", d)
    npol, nchan, nrow = d.shape
    sub.putcol("SIGMA", np.full((npol, nrow), sigma))
    sub.putcol("WEIGHT", np.full((npol, nrow), 1.0 / sigma ** 2))
    sub.close()
# a split *_targets.ms holds the calibrated data in DATA only
extra = [c for c in ("MODEL_DATA", "CORRECTED_DATA") if c in tb.colnames()]
if extra:
    tb.removecols(extra)
tb.close()
print(json.dumps({"ok": True}))
'''


def c18o_spec(ms: Path, *, fields: list[dict] | None = None, sigma_jy: float = 0.05,
              n_ant: int = 16, line_spw_chans: int = 60, cont_f0_ghz: float = 232.0) -> dict:
    """A band 6 dataset: spw0 covers C18O 2-1 (0.5 MHz channels), spw1 is wide continuum."""
    return {
        "ms": str(ms), "n_ant": n_ant, "sigma_jy": sigma_jy, "seed": 7,
        "spws": [
            {"name": "X1#ALMA_RB_06#BB_1#SW-01#FULL_RES", "f0_ghz": 219.545,
             "df_mhz": 0.5, "nchan": line_spw_chans},
            {"name": "X1#ALMA_RB_06#BB_2#SW-01#FULL_RES", "f0_ghz": cont_f0_ghz,
             "df_mhz": 125.0, "nchan": 8},
        ],
        "fields": fields or [],
    }


def make_ms(spec: dict) -> Path:
    """Build the MS described by ``spec`` in a CASA child process."""
    out = Path(spec["ms"])
    out.parent.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([sys.executable, "-c", _CODE, json.dumps(spec)], env=casa_env(),
                         capture_output=True, text=True, cwd=str(out.parent))
    if res.returncode != 0 or not out.exists():
        raise RuntimeError(f"simulation failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
    return out
