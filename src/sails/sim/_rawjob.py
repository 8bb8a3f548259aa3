"""CASA child: turn simulated calibrated EBs into a raw ALMA delivery.

Run as ``python -m sails.sim._rawjob JOB.json`` (environment from ``sails.casaenv``); never
imported by the orchestrator. Per EB:

1. copy the calibrated MS and corrupt its DATA with known per-antenna gains
   (``V_ij * g_i * conj(g_j)``, constant amplitude and phase per antenna);
2. ``exportasdm`` it to ``raw/<eb>.asdm.sdm`` and put the scans, intents and window names
   that exportasdm drops back into the ASDM (:mod:`sails.sim._asdmscans`);
3. ``importasdm`` that ASDM (as ALMA's scripts do), copy the simulated flags onto it and save
   them as flag version ``Pipeline_Final`` (-> ``calibration/<eb>.ms.flagversions.tgz``);
4. ``gencal`` the amplitude and phase tables that undo the gains (-> caltables.tgz) and
   write ``calibration/<eb>.ms.calapply.txt`` with the ``applycal`` call.

The job writes ``result.json`` last.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from sails.atomic import write_json_atomic
from sails.casa.tools import opened, released
from sails.sim._asdmscans import Span, restructure

FLAG_VERSION = "Pipeline_Final"
IMPORT_OPTIONS = {"asis": "Antenna Station Receiver Source CalAtmosphere CalWVR",
                  "bdfflags": False, "process_caldevice": False,
                  "with_pointing_correction": False, "ocorr_mode": "ca"}


def corrupt(ms: Path, amp: np.ndarray, phase_deg: np.ndarray) -> None:
    """DATA_ij *= g_i conj(g_j), g = amp exp(i phase) per antenna (both polarizations)."""
    g = amp * np.exp(1j * np.radians(phase_deg))
    with opened("table", str(ms), nomodify=False) as tb:
        n_dd = len(np.unique(tb.getcol("DATA_DESC_ID")))
        for ddid in range(n_dd):
            with released(tb.query(f"DATA_DESC_ID=={ddid}")) as q:
                if not q.nrows():
                    continue
                a1, a2 = q.getcol("ANTENNA1"), q.getcol("ANTENNA2")
                data = q.getcol("DATA")
                data = data * (g[a1] * np.conj(g[a2]))[None, None, :]
                q.putcol("DATA", data.astype(np.complex64))


def one_polarization(ms: Path) -> None:
    """The simulator writes one identical POLARIZATION row per spw; exportasdm keeps one
    and then finds DATA_DESCRIPTION rows pointing at the others: point them all at row 0."""
    with opened("table", str(ms / "DATA_DESCRIPTION"), nomodify=False) as tb:
        tb.putcol("POLARIZATION_ID", np.zeros(tb.nrows(), dtype=np.int32))
    with opened("table", str(ms / "POLARIZATION"), nomodify=False) as tb:
        if tb.nrows() > 1:
            tb.removerows(list(range(1, tb.nrows())))


def scan_spans(ms: Path) -> tuple[list[Span], list[str], dict[str, str], float]:
    """The MS's scans as :class:`Span` s (one per scan and field), its spw names, EB and
    scheduling block UIDs and its integration time: what
    :func:`sails.sim._asdmscans.restructure` puts back into the ASDM."""
    with opened("table", str(ms / "STATE")) as tb:
        modes = list(tb.getcol("OBS_MODE")) if tb.nrows() else []
    with opened("table", str(ms / "FIELD")) as tb:
        fields = list(tb.getcol("NAME"))
    with opened("table", str(ms / "SPECTRAL_WINDOW")) as tb:
        spw_names = list(tb.getcol("NAME"))
    with opened("table", str(ms / "OBSERVATION")) as tb:
        schedule = [str(s) for s in tb.getcell("SCHEDULE", 0)] if tb.nrows() else []
    uids = {k.lower().replace("schedulingblock", "schedblock"): v
            for k, _, v in (s.partition(" ") for s in schedule) if v}
    with opened("table", str(ms)) as tb:
        time, half = tb.getcol("TIME"), tb.getcol("INTERVAL") / 2.0
        scan, field, state = (tb.getcol("SCAN_NUMBER"), tb.getcol("FIELD_ID"),
                              tb.getcol("STATE_ID"))
    spans = []
    for s, f in sorted({(int(a), int(b)) for a, b in zip(scan, field, strict=True)}):
        sel = (scan == s) & (field == f)
        st = int(state[sel][0])
        spans.append(Span(scan=s, field_id=f, field_name=fields[f],
                          start_s=float((time - half)[sel].min()),
                          end_s=float((time + half)[sel].max()),
                          obs_mode=modes[st] if 0 <= st < len(modes) else "OBSERVE_TARGET"))
    return spans, spw_names, uids, float(np.median(half) * 2.0)


def export_asdm(ms: Path, asdm: Path) -> dict[str, int]:
    """``exportasdm`` with one integration per subscan, then the archive's scan structure
    written back into the ASDM (see :mod:`sails.sim._asdmscans`)."""
    from casatasks import exportasdm

    spans, spw_names, uids, integration = scan_spans(ms)
    exportasdm(vis=str(ms), asdm=str(asdm), datacolumn="DATA",
               subscanduration=f"{integration / 2.0:.3f}s")
    return restructure(asdm, spans, spw_names, uids)


def make_twin(bad: Path, cal_ms: Path) -> None:
    """``bad`` (corrupted DATA) gets CORRECTED_DATA = the calibrated visibilities of
    ``cal_ms`` (same rows, it is a copy) and replaces it: an SRDP restore's calibrated MS."""
    from casatasks import clearcal

    clearcal(vis=str(bad), addmodel=False)
    with opened("table", str(cal_ms)) as src, opened("table", str(bad), nomodify=False) as dst:
        n_dd = len(np.unique(src.getcol("DATA_DESC_ID")))
        for ddid in range(n_dd):
            with released(src.query(f"DATA_DESC_ID=={ddid}")) as qs, \
                    released(dst.query(f"DATA_DESC_ID=={ddid}")) as qd:
                if qs.nrows():
                    qd.putcol("CORRECTED_DATA", qs.getcol("DATA"))
    shutil.rmtree(cal_ms)
    os.replace(bad, cal_ms)


def _rows_by_spw(ms: Path) -> dict[int, int]:
    with opened("table", str(ms / "DATA_DESCRIPTION")) as tb:
        return {int(spw): dd for dd, spw in enumerate(tb.getcol("SPECTRAL_WINDOW_ID"))}


def copy_flags(src: Path, dst: Path) -> int:
    """The simulated flags onto the imported MS, row by row where both hold the same row
    (matched on spw, TIME, ANTENNA1, ANTENNA2); returns the rows copied."""
    src_dd, dst_dd = _rows_by_spw(src), _rows_by_spw(dst)
    copied = 0
    with opened("table", str(src)) as ts, opened("table", str(dst), nomodify=False) as td:
        for spw, dd in dst_dd.items():
            if spw not in src_dd:
                continue
            with released(ts.query(f"DATA_DESC_ID=={src_dd[spw]}")) as qs:
                if not qs.nrows():
                    continue
                keys = zip(np.round(qs.getcol("TIME"), 3), qs.getcol("ANTENNA1"),
                           qs.getcol("ANTENNA2"), strict=True)
                index = {(float(t), int(a), int(b)): i for i, (t, a, b) in enumerate(keys)}
                flags = qs.getcol("FLAG")
            with released(td.query(f"DATA_DESC_ID=={dd}")) as qd:
                if not qd.nrows():
                    continue
                t, a, b = (np.round(qd.getcol("TIME"), 3), qd.getcol("ANTENNA1"),
                           qd.getcol("ANTENNA2"))
                out = qd.getcol("FLAG")
                if out.shape[:2] != flags.shape[:2]:
                    continue
                for j in range(len(t)):
                    i = index.get((float(t[j]), int(a[j]), int(b[j])))
                    if i is not None:
                        out[:, :, j] = flags[:, :, i]
                        copied += 1
                qd.putcol("FLAG", out)
                qd.putcol("FLAG_ROW", np.all(out, axis=(0, 1)))
    return copied


def _tar(dest: Path, folders: list[Path]) -> None:
    with tarfile.open(dest, "w:gz") as tf:
        for f in folders:
            tf.add(str(f), arcname=f.name)


def make_eb(job: dict[str, Any], eb: dict[str, Any], root: Path, work: Path) -> dict[str, Any]:
    from casatasks import flagmanager, gencal, importasdm

    name = eb["name"]
    amp, phase = np.asarray(eb["amp"], float), np.asarray(eb["phase_deg"], float)
    bad = work / f"{name}.corrupt.ms"
    shutil.copytree(eb["cal_ms"], bad)
    corrupt(bad, amp, phase)
    one_polarization(bad)
    asdm = root / "raw" / f"{name}.asdm.sdm"
    asdm.parent.mkdir(parents=True, exist_ok=True)
    structure = export_asdm(bad, asdm)
    if eb.get("srdp_twin"):  # the same EB as an SRDP restore holds it: raw DATA + CORRECTED
        make_twin(bad, Path(eb["cal_ms"]))
    else:
        shutil.rmtree(bad)
    ms = work / f"{name}.ms"
    importasdm(asdm=str(asdm), vis=str(ms), **IMPORT_OPTIONS)
    copied = copy_flags(Path(eb["cal_ms"]), ms)
    flagmanager(vis=str(ms), mode="save", versionname=FLAG_VERSION,
                comment="flags at the end of the simulated calibration")
    calib = root / "calibration"
    calib.mkdir(parents=True, exist_ok=True)
    _tar(calib / f"{name}.ms.flagversions.tgz", [work / f"{name}.ms.flagversions"])
    with opened("table", str(ms / "ANTENNA")) as tb:
        names = list(tb.getcol("NAME"))
    amp_t, ph_t = work / f"{name}.ms.sim.amp.tbl", work / f"{name}.ms.sim.phase.tbl"
    # gencal's G-type tables: applycal divides by g_i conj(g_j)
    gencal(vis=str(ms), caltable=str(amp_t), caltype="amp", antenna=",".join(names),
           pol="", parameter=[float(x) for x in amp])
    gencal(vis=str(ms), caltable=str(ph_t), caltype="ph", antenna=",".join(names),
           pol="", parameter=[float(x) for x in phase])
    tables = [amp_t, ph_t]
    call = (f"applycal(vis='{name}.ms', field='', spw='', intent='', "
            f"gaintable={[t.name for t in tables]!r}, gainfield=['', ''], "
            "interp=['nearest', 'nearest'], spwmap=[[], []], calwt=[False, False], "
            "parang=False, applymode='calflagstrict', flagbackup=False)\n")
    (calib / f"{name}.ms.calapply.txt").write_text(call)
    shutil.rmtree(ms)
    shutil.rmtree(work / f"{name}.ms.flagversions", ignore_errors=True)
    return {"name": name, "asdm": str(asdm), "tables": [str(t) for t in tables],
            "flag_rows_copied": copied, "antennas": names, "asdm_structure": structure}


def run(job_path: Path) -> dict[str, Any]:
    job = json.loads(job_path.read_text())
    import casatools

    if job.get("casa_log"):
        casatools.logsink().setlogfile(job["casa_log"])
    root, work = Path(job["out_dir"]), Path(job["work"])
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    result: dict[str, Any] = {"casa_version": casatools.version_string(), "ebs": []}
    tables: list[Path] = []
    for eb in job["ebs"]:
        out = make_eb(job, eb, root, work)
        tables += [Path(t) for t in out["tables"]]
        result["ebs"].append(out)
    _tar(root / "calibration" / f"{job['mous_fs']}.session_1.caltables.tgz", tables)
    result["seconds"] = round(time.time() - t0, 2)
    write_json_atomic(job["result"], result, indent=1)
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m sails.sim._rawjob JOB.json", file=sys.stderr)
        return 2
    run(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
