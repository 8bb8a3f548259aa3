"""CASA child: execute a simulation plan and write one measurement set per EB.

Run as ``python -m sails.sim._casajob JOB.json`` with the environment from
``sails.casaenv.casa_env()``. Never imported by the orchestrator: it imports casatools.

Per EB: ``casatools.simulator`` builds the skeleton (antennas, spws, fields, scans with
intents, UVW); the sky, the residual antenna phases, the uncalibrated gains and the noise are
then computed with numpy and written with ``casatools.table`` (the simulator's own ``setgain``
gave NaNs and its ``setnoise`` leaves WEIGHT/SIGMA at 1). The job writes ``result.json`` last.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sails.atomic import write_json_atomic
from sails.casa.tools import opened, released
from sails.constants import C_M_S

LN2 = math.log(2.0)
ARCSEC = math.pi / 180.0 / 3600.0
NO_SKY_KINDS = ("WVR", "SQLD")  # windows without sky visibilities: zero and flagged


def j1(x: np.ndarray) -> np.ndarray:
    """Bessel J1 by its power series (numpy only; fine for the |x| < 25 used here)."""
    x = np.asarray(x, dtype=np.float64)
    term = x / 2.0
    total = term.copy()
    for k in range(1, 60):
        term = term * -(x * x / 4.0) / (k * (k + 1))
        total = total + term
    return total


def _ndtr(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (numpy only; scipy is not needed in the child)."""
    from math import erf

    return 0.5 * (1.0 + np.vectorize(erf)(x / math.sqrt(2.0)))


class EBBuilder:
    def __init__(self, plan: dict[str, Any], eb: dict[str, Any], ms: Path) -> None:
        import casatools

        self.plan, self.eb, self.ms = plan, eb, ms
        self.me = casatools.measures()
        self.qa = casatools.quanta()
        self.rng = np.random.default_rng(eb["seed"])
        self.fields = []
        for f in plan["fields"]:
            if "target_index" in f:  # a pointing: the target's sky, seen from this centre
                tgt = plan["targets"][f["target_index"]]
                f = dict(tgt, ra_deg=f["ra_deg"], dec_deg=f["dec_deg"], sim_name=f["sim_name"],
                         sky_ra_deg=tgt["ra_deg"], sky_dec_deg=tgt["dec_deg"])
            self.fields.append(f)
        self.ref_hz = plan["ref_freq_ghz"] * 1e9

    # ----------------------------------------------------------------- skeleton
    def _direction(self, f: dict[str, Any]):
        return self.me.direction("J2000", f"{f['ra_deg']}deg", f"{f['dec_deg']}deg")

    def _topo_ratio(self, epoch_utc: str, f: dict[str, Any]) -> float:
        """f_TOPO / f_LSRK for a source at an epoch (doppler tracking at EB start)."""
        me = self.me
        me.doframe(me.observatory("ALMA"))
        me.doframe(me.epoch("UTC", epoch_utc))
        me.doframe(self._direction(f))
        out = me.measure(me.frequency("LSRK", self.qa.quantity(1e11, "Hz")), "TOPO")
        return float(out["m0"]["value"]) / 1e11

    def build_skeleton(self) -> None:
        plan, eb = self.plan, self.eb
        ants = plan["antennas"]
        with opened("simulator", str(self.ms)) as sm:
            sm.setconfig(telescopename="ALMA", x=[a["x"] for a in ants], y=[a["y"] for a in ants],
                         z=[a["z"] for a in ants], dishdiameter=[a["diam"] for a in ants],
                         mount=["alt-az"], antname=[a["name"] for a in ants],
                         padname=[a["station"] for a in ants], coordsystem="local",
                         referencelocation=self.me.observatory("ALMA"))
            # ALMA tunes the windows at the start of each EB so the LSRK sky frequencies land
            # where the proposal asked: the TOPO frequencies differ from EB to EB.
            ratio = self._topo_ratio(eb["start_utc"], plan["targets"][0])
            self.topo_ratio = ratio
            for s in plan["spws"]:
                width = s["chan_width_mhz"] * 1e6
                center = s["center_ghz"] * 1e9 * (ratio if s["kind"] != "WVR" else 1.0)
                first = center - (s["nchan"] - 1) / 2.0 * width
                sm.setspwindow(spwname=s["name"], freq=f"{first!r}Hz", deltafreq=f"{width!r}Hz",
                               freqresolution=f"{width!r}Hz", nchannels=s["nchan"],
                               stokes="XX YY", refcode="TOPO")
            sm.setfeed(mode="perfect X Y")
            for f in self.fields:  # pointings of a mosaic get unique names until renamed
                sm.setfield(sourcename=f["sim_name"], sourcedirection=self._direction(f))
            sm.setlimits(shadowlimit=0.001, elevationlimit="3deg")
            sm.setauto(autocorrwt=0.0)
            sm.settimes(integrationtime=f"{plan['integration_s']}s", usehourangle=False,
                        referencetime=self.me.epoch("UTC", eb["start_utc"]))
            for sc in eb["scans"]:
                for sub in sc["subscans"]:
                    name = self.fields[sub["field_id"]]["sim_name"]
                    for s in plan["spws"]:
                        sm.observe(sourcename=name, spwname=s["name"],
                                   starttime=f"{sub['start_s']}s", stoptime=f"{sub['stop_s']}s",
                                   state_obs_mode=sc["intent"])

    def fix_metadata(self) -> None:
        """Scan numbers as ALMA writes them, BBC_NO, project/EB ids, drop MODEL_DATA."""
        plan, eb = self.plan, self.eb
        with opened("table", str(self.ms), nomodify=False) as tb:
            sim_scan = tb.getcol("SCAN_NUMBER")
            times = tb.getcol("TIME")
            half = tb.getcol("INTERVAL") / 2.0
            # the EB's whole span (the simulator records its first scan's only); exportasdm
            # cuts the ExecBlock at TIME_RANGE's length
            time_range = [float((times - half).min()), float((times + half).max())]
            starts = {}
            for s in np.unique(sim_scan):
                starts[int(s)] = float(times[sim_scan == s].min())
            order = sorted(set(round(v, 3) for v in starts.values()))
            # one simulator scan per subscan; a mosaic scan's subscans share its number
            scan_of = [sc["scan"] for sc in eb["scans"] for _ in sc["subscans"]]
            if len(order) != len(scan_of):
                raise RuntimeError(f"expected {len(scan_of)} subscans, simulator made "
                                   f"{len(order)}")
            remap = {s: scan_of[order.index(round(t, 3))] for s, t in starts.items()}
            tb.putcol("SCAN_NUMBER", np.array([remap[int(s)] for s in sim_scan], dtype=np.int32))
            drop = ["MODEL_DATA"] + (["CORRECTED_DATA"] if plan["datacolumn"] == "data" else [])
            tb.removecols([c for c in drop if c in tb.colnames()])

        with opened("table", str(self.ms / "SPECTRAL_WINDOW"), nomodify=False) as tb:
            if "BBC_NO" not in tb.colnames():
                tb.addcols({"BBC_NO": {"valueType": "int", "dataManagerType": "StandardStMan",
                                       "dataManagerGroup": "StandardStMan", "option": 0,
                                       "maxlen": 0, "comment": "Baseband converter number"}})
            tb.putcol("BBC_NO", np.array([s["bbc_no"] for s in plan["spws"]], dtype=np.int32))

        with opened("table", str(self.ms / "OBSERVATION"), nomodify=False) as tb:
            tb.putcol("PROJECT", np.array([plan["proposal_id"]]))
            tb.putcol("OBSERVER", np.array(["sails-sim"]))
            tb.putcell("SCHEDULE", 0, np.array([f"SchedulingBlock {plan['schedblock_uid']}",
                                                f"ExecBlock {eb['uid']}"]))
            tb.putcol("SCHEDULE_TYPE", np.array(["ALMA"]))
            tb.putcell("TIME_RANGE", 0, np.array(time_range))

    def name_fields(self) -> None:
        """Give a mosaic's pointings their one source name and source id, as ALMA writes
        them (the simulator needs a unique name per field while it builds the scans)."""
        final = [f["name"] for f in self.fields]
        sims = [f["sim_name"] for f in self.fields]
        if final == sims:
            return
        with opened("table", str(self.ms / "FIELD"), nomodify=False) as tb:
            src = tb.getcol("SOURCE_ID")
            first = {}
            for i, n in enumerate(final):
                first.setdefault(n, int(src[i]))
            tb.putcol("NAME", np.array(final))
            tb.putcol("SOURCE_ID", np.array([first[n] for n in final], dtype=np.int32))
        with opened("table", str(self.ms / "SOURCE"), nomodify=False) as tb:
            if tb.nrows():
                names = list(tb.getcol("NAME"))
                by_sim = dict(zip(sims, final, strict=True))
                tb.putcol("NAME", np.array([by_sim.get(n, n) for n in names]))
                keep = {v for v in first.values()}
                ids = tb.getcol("SOURCE_ID")
                drop = [i for i, v in enumerate(ids) if int(v) not in keep]
                if drop:
                    tb.removerows(drop)

    # ----------------------------------------------------------------- sky model
    def _lm(self, field: dict[str, Any], dx: float, dy: float) -> tuple[float, float, float]:
        """Direction cosines of an (east, north) arcsec offset from the target centre, seen
        from the field's phase centre (a mosaic pointing need not be the target centre)."""
        ra0, dec0 = math.radians(field["ra_deg"]), math.radians(field["dec_deg"])
        ras = math.radians(field.get("sky_ra_deg", field["ra_deg"]))
        decs = math.radians(field.get("sky_dec_deg", field["dec_deg"]))
        dec = decs + dy * ARCSEC
        ra = ras + dx * ARCSEC / math.cos(dec)
        lval = math.cos(dec) * math.sin(ra - ra0)
        mval = math.sin(dec) * math.cos(dec0) - math.cos(dec) * math.sin(dec0) * math.cos(ra - ra0)
        return lval, mval, math.sqrt(1.0 - lval * lval - mval * mval) - 1.0

    def _pb_at(self, field: dict[str, Any], freqs: np.ndarray, dx: float,
               dy: float) -> np.ndarray:
        if "sky_ra_deg" not in field or (field["sky_ra_deg"], field["sky_dec_deg"]) == (
                field["ra_deg"], field["dec_deg"]):
            return self._pb(freqs, dx, dy)
        lval, mval, _ = self._lm(field, dx, dy)
        rho = math.asin(min(1.0, math.hypot(lval, mval))) / ARCSEC
        return self._pb(freqs, rho, 0.0)

    def _pb(self, freqs: np.ndarray, dx: float, dy: float) -> np.ndarray:
        """Primary-beam power at an offset: blocked Airy pattern (CASA's ALMA model)."""
        rho = math.hypot(dx, dy) * ARCSEC
        if rho == 0.0:
            return np.ones_like(freqs)
        d, eps = self.plan["pb_dish_m"], self.plan["pb_blockage_m"] / self.plan["pb_dish_m"]
        x = math.pi * d * rho * freqs / C_M_S
        amp = (2 * j1(x) / x - eps * eps * 2 * j1(eps * x) / (eps * x)) / (1 - eps * eps)
        return amp * amp

    def _spatial(self, uvw: np.ndarray, freqs: np.ndarray, field: dict[str, Any],
                 obj: dict[str, Any]) -> np.ndarray:
        """Unit-flux visibility (nchan, nrow) of a point/Gaussian at an offset, PB applied."""
        lval, mval, nm1 = self._lm(field, obj["dx_arcsec"], obj["dy_arcsec"])
        scale = freqs[:, None] / C_M_S
        u, v, w = (uvw[i][None, :] * scale for i in range(3))
        vis = np.exp(2j * math.pi * (u * lval + v * mval + w * nm1))
        major = obj.get("major_arcsec", 0.0)
        if obj.get("shape", "gaussian") == "gaussian" and major > 0:
            pa = math.radians(obj.get("pa_deg", 0.0))
            bmaj, bmin = major * ARCSEC, obj["minor_arcsec"] * ARCSEC
            umaj = u * math.sin(pa) + v * math.cos(pa)
            umin = u * math.cos(pa) - v * math.sin(pa)
            vis *= np.exp(-(math.pi ** 2) / (4 * LN2) * (bmaj ** 2 * umaj ** 2
                                                        + bmin ** 2 * umin ** 2))
        return vis * self._pb_at(field, freqs, obj["dx_arcsec"], obj["dy_arcsec"])[:, None]

    def _line_profile(self, blob: dict[str, Any], lo_hz: np.ndarray, hi_hz: np.ndarray,
                      rest_hz: float) -> np.ndarray:
        """Channel-averaged flux density (Jy) of a Gaussian line: exact integral per channel."""
        c_kms = self.plan["c_kms"]
        v_lo = c_kms * (1.0 - hi_hz / rest_hz)
        v_hi = c_kms * (1.0 - lo_hz / rest_hz)
        sig = blob["fwhm_kms"] / math.sqrt(8 * LN2)
        frac = _ndtr((v_hi - blob["vlsr_kms"]) / sig) - _ndtr((v_lo - blob["vlsr_kms"]) / sig)
        return blob["flux_jykms"] * frac / (v_hi - v_lo)

    def model(self, field: dict[str, Any], spw: dict[str, Any], uvw: np.ndarray,
              freqs: np.ndarray, widths: np.ndarray, lsrk_over_topo: float) -> np.ndarray:
        """Model visibilities (nchan, nrow), Stokes I, for one field and spw."""
        nrow = uvw.shape[1]
        ref = self.ref_hz
        out = np.zeros((freqs.size, nrow), dtype=np.complex128)
        if spw["kind"] in NO_SKY_KINDS:
            return out
        if "role" in field:  # calibrator: a point source at the phase centre
            out += (field["flux_jy"] * (freqs / ref) ** field["spectral_index"])[:, None]
            return out
        for comp in field["components"]:
            spec = comp["flux_jy"] * (freqs / ref) ** comp["spectral_index"]
            out += spec[:, None] * self._spatial(uvw, freqs, field, comp)
        for line in [field.get("line"), *(field.get("extra_lines") or [])]:
            if not line:
                continue
            rest = line["rest_freq_ghz"] * 1e9
            lo = (freqs - np.abs(widths) / 2) * lsrk_over_topo
            hi = (freqs + np.abs(widths) / 2) * lsrk_over_topo
            for blob in line["blobs"]:
                prof = self._line_profile(blob, lo, hi, rest)
                if np.max(prof) < 1e-9:
                    continue
                obj = dict(blob, shape="gaussian")
                out += prof[:, None] * self._spatial(uvw, freqs, field, obj)
        return out

    # ----------------------------------------------------------------- corruption
    def _ou(self, times: np.ndarray, tau: float, n: int) -> np.ndarray:
        """n independent unit-variance mean-reverting random walks sampled at ``times``."""
        out = np.zeros((n, times.size))
        x = self.rng.standard_normal(n)
        out[:, 0] = x
        for i in range(1, times.size):
            a = math.exp(-(times[i] - times[i - 1]) / tau)
            x = a * x + math.sqrt(1 - a * a) * self.rng.standard_normal(n)
            out[:, i] = x
        return out

    def make_gains(self, utimes: np.ndarray) -> None:
        plan = self.plan
        nant = len(plan["antennas"])
        # Residual phases (rad at the reference frequency): smooth, zero-mean, exact rms.
        ph = self._ou(utimes, plan["phase_timescale_s"], nant)
        ph -= ph.mean(axis=1, keepdims=True)
        rms = np.sqrt(np.mean(ph ** 2, axis=1, keepdims=True))
        rms[rms == 0] = 1.0
        self.phase = ph / rms * math.radians(plan["phase_rms_deg"])
        # Uncalibrated gains for the raw DATA column: per antenna and polarization.
        drift = self._ou(utimes, 600.0, 2 * nant) * math.radians(25)
        amp = self.rng.uniform(0.7, 1.3, size=(2 * nant, 1))
        off = self.rng.uniform(-math.pi, math.pi, size=(2 * nant, 1))
        self.delay_ns = self.rng.normal(0.0, 0.3, size=2 * nant)
        self.raw_gain = amp * np.exp(1j * (off + drift))  # (2*nant, ntime)

    # ----------------------------------------------------------------- data
    def fill(self) -> dict[str, Any]:
        plan, eb = self.plan, self.eb
        with opened("table", str(self.ms / "SPECTRAL_WINDOW")) as tb:
            chan_freq = [tb.getcell("CHAN_FREQ", i) for i in range(tb.nrows())]
            chan_width = [tb.getcell("CHAN_WIDTH", i) for i in range(tb.nrows())]
        with opened("table", str(self.ms / "DATA_DESCRIPTION")) as tb:
            dd_spw = tb.getcol("SPECTRAL_WINDOW_ID")
        with opened("table", str(self.ms / "FIELD")) as tb:
            field_names = list(tb.getcol("NAME"))
        by_name = {f["sim_name"]: f for f in self.fields}
        field_of = [by_name[n] for n in field_names]
        tsysf = np.array([a["tsys_factor"] for a in plan["antennas"]])

        with opened("table", str(self.ms), nomodify=False) as tb:
            all_times = tb.getcol("TIME")
            utimes = np.unique(all_times)
            self.make_gains(utimes - utimes[0])
            t0 = utimes[0]
            # LSRK/TOPO ratio per scan and field (tiny changes within a scan are ignored).
            scan_col = tb.getcol("SCAN_NUMBER")
            field_col = tb.getcol("FIELD_ID")
            ratios: dict[tuple[int, int], float] = {}
            for sc in np.unique(scan_col):
                for fid in np.unique(field_col[scan_col == sc]):  # mosaic: several per scan
                    sel = (scan_col == sc) & (field_col == fid)
                    tmid = float(np.median(all_times[sel]))
                    epoch = self.qa.time(self.qa.quantity(tmid, "s"), form="ymd", prec=9)[0]
                    ratios[(int(sc), int(fid))] = 1.0 / self._topo_ratio(epoch,
                                                                         field_of[int(fid)])
            # "quack": the first integration of every scan longer than four integrations
            quack_t = np.full(int(scan_col.max()) + 1, -1.0)
            for sc in np.unique(scan_col):
                ts = np.unique(all_times[scan_col == sc])
                if ts.size > 4:
                    quack_t[int(sc)] = ts[0]
            has_corr = "CORRECTED_DATA" in tb.colnames()
            stats = {"n_rows": int(tb.nrows()), "flagged": 0, "total": 0}
            for ddid, spw_id in enumerate(dd_spw):
                spw = plan["spws"][int(spw_id)]
                with released(tb.query(f"DATA_DESC_ID=={ddid}")) as q:
                    n = q.nrows()
                    if n == 0:
                        continue
                    uvw = q.getcol("UVW")
                    a1, a2 = q.getcol("ANTENNA1"), q.getcol("ANTENNA2")
                    tcol, fcol = q.getcol("TIME"), q.getcol("FIELD_ID")
                    scol = q.getcol("SCAN_NUMBER")
                    flag = q.getcol("FLAG")  # (npol, nchan, nrow): shadowing / elevation flags
                    freqs = np.asarray(chan_freq[int(spw_id)])
                    widths = np.asarray(chan_width[int(spw_id)])
                    nchan = freqs.size
                    cal = np.zeros((nchan, n), dtype=np.complex128)
                    for fid in np.unique(fcol):
                        for sc in np.unique(scol[fcol == fid]):
                            sel = (fcol == fid) & (scol == sc)
                            cal[:, sel] = self.model(field_of[int(fid)], spw, uvw[:, sel], freqs,
                                                     widths, ratios[(int(sc), int(fid))])
                    tidx = np.searchsorted(utimes, tcol)
                    dphi = self.phase[a1, tidx] - self.phase[a2, tidx]
                    cal = cal * np.exp(1j * dphi[None, :] * (freqs / self.ref_hz)[:, None])
                    sigma_row = spw["sigma_jy"] * np.sqrt(tsysf[a1] * tsysf[a2])
                    weight_sigma = spw["weight_sigma_jy"] * np.sqrt(tsysf[a1] * tsysf[a2])
                    corr = np.empty((2, nchan, n), dtype=np.complex64)
                    for p in range(2):
                        noise = (self.rng.standard_normal((nchan, n))
                                 + 1j * self.rng.standard_normal((nchan, n))) * sigma_row[None, :]
                        corr[p] = cal + noise
                    if spw["kind"] in NO_SKY_KINDS:
                        flag[:] = True
                    if plan["flags"]:
                        quack = tcol == quack_t[scol]
                        flag[:, :, quack] = True
                        fa = eb["flag_antenna"]
                        bad = ((a1 == fa) | (a2 == fa)) & (scol == eb["flag_scan"])
                        flag[:, :, bad] = True
                    sig = np.repeat(weight_sigma[None, :], 2, axis=0).astype(np.float32)
                    q.putcol("SIGMA", sig)
                    q.putcol("WEIGHT", (1.0 / sig ** 2).astype(np.float32))
                    q.putcol("FLAG", flag)
                    q.putcol("FLAG_ROW", np.all(flag, axis=(0, 1)))
                    if has_corr:
                        q.putcol("CORRECTED_DATA", corr)
                        raw = np.empty_like(corr)
                        for p in range(2):
                            g1 = self.raw_gain[2 * a1 + p, tidx]
                            g2 = self.raw_gain[2 * a2 + p, tidx]
                            dly = (self.delay_ns[2 * a1 + p] - self.delay_ns[2 * a2 + p]) * 1e-9
                            bp = np.exp(2j * math.pi * (freqs - freqs.mean())[:, None]
                                        * dly[None, :])
                            raw[p] = corr[p] * (g1 * np.conj(g2))[None, :] * bp
                        q.putcol("DATA", raw)
                    else:
                        q.putcol("DATA", corr)
                    stats["flagged"] += int(flag.sum())
                    stats["total"] += int(flag.size)
        stats["flagged_fraction"] = stats["flagged"] / max(1, stats["total"])
        stats["duration_s"] = float(utimes[-1] - t0)
        stats["start_mjd_s"] = float(t0)
        stats["lsrk_over_topo_start"] = 1.0 / self.topo_ratio
        return stats

    def checksum(self) -> str:
        """sha256 of the visibilities, weights and flags as stored (read back from disk)."""
        h = hashlib.sha256()
        with opened("table", str(self.ms)) as tb:
            cols = [c for c in ("DATA", "CORRECTED_DATA", "WEIGHT", "SIGMA", "FLAG", "UVW")
                    if c in tb.colnames()]
        with opened("table", str(self.ms / "DATA_DESCRIPTION")) as tb:
            n_dd = tb.nrows()
        with opened("table", str(self.ms)) as tb:
            for ddid in range(n_dd):
                query = tb.query(f"DATA_DESC_ID=={ddid}", sortlist="TIME,ANTENNA1,ANTENNA2")
                with released(query) as q:
                    for c in cols:
                        if q.nrows():
                            h.update(np.ascontiguousarray(q.getcol(c)).tobytes())
        return h.hexdigest()


def run(job_path: Path) -> dict[str, Any]:
    job = json.loads(job_path.read_text())
    plan = job["plan"]
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    import casatools

    log = job.get("casa_log")
    if log:
        casatools.logsink().setlogfile(log)  # route this process's CASA log
    result = {"ebs": [], "casa_version": casatools.version_string()}
    for eb in plan["ebs"]:
        t_start = time.time()
        final = out_dir / f"{eb['fs']}.ms"
        tmp = out_dir / f".{eb['fs']}.ms.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        builder = EBBuilder(plan, eb, tmp)
        builder.build_skeleton()
        builder.fix_metadata()
        stats = builder.fill()
        builder.name_fields()
        checksum = builder.checksum()
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        result["ebs"].append(dict(stats, uid=eb["uid"], ms=final.name, checksum=checksum,
                                  seconds=round(time.time() - t_start, 2)))
    write_json_atomic(job["result"], result, indent=1)
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m sails.sim._casajob JOB.json", file=sys.stderr)
        return 2
    run(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
