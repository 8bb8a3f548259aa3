"""Describe a measurement set: a ``listobs`` text file and a JSON summary from ``msmetadata``.

The summary holds facts only (fields with intents, scans, spws, antennas, time range, data
columns, flagged fraction); the verify stage, on the orchestrator side, checks them against the
catalog. Every casatools object is closed on the way out (:mod:`sails.casa.tools`), so a failing
MS leaks nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from sails.casa.tools import opened, released

DATA_COLUMNS = ("DATA", "CORRECTED_DATA", "MODEL_DATA", "FLOAT_DATA")
# Calibrator intents whose presence shows the MS still carries the calibration scans.
GAIN_CAL_INTENTS = ("CALIBRATE_BANDPASS", "CALIBRATE_PHASE", "CALIBRATE_FLUX",
                    "CALIBRATE_AMPLI", "CALIBRATE_DELAY", "CALIBRATE_POLARIZATION",
                    "CALIBRATE_DIFFGAIN")
FLAG_CHUNK_ROWS = 20000
SAMPLE_ROWS = 64


class NotAMeasurementSet(Exception):
    """The path is missing, not a casacore table, or not a MeasurementSet."""


def mjd_to_iso(mjd_days: float) -> str:
    t = dt.datetime(1858, 11, 17, tzinfo=dt.UTC) + dt.timedelta(days=float(mjd_days))
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def check_is_ms(vis: str) -> None:
    """Cheap file-level checks, before any casatools call can crash on garbage."""
    p = Path(vis)
    if not p.exists():
        raise NotAMeasurementSet(f"{vis} does not exist")
    if not p.is_dir():
        raise NotAMeasurementSet(f"{vis} is a file, not a measurement set directory")
    missing = [f for f in ("table.dat", "table.info") if not (p / f).is_file()]
    if missing:
        raise NotAMeasurementSet(f"{vis} is not a casacore table (no {', '.join(missing)})")
    info = (p / "table.info").read_text(errors="replace")
    if "Measurement Set" not in info and "MeasurementSet" not in info:
        first = info.splitlines()[0] if info.strip() else "empty table.info"
        raise NotAMeasurementSet(f"{vis} is a casacore table but not a MeasurementSet ({first})")
    for sub in ("ANTENNA", "FIELD", "SPECTRAL_WINDOW", "DATA_DESCRIPTION", "POLARIZATION"):
        if not (p / sub / "table.dat").is_file():
            raise NotAMeasurementSet(f"{vis} is incomplete: subtable {sub} is missing")


def _column_facts(tb, names: list[str], ddids: list[int]) -> dict[str, dict[str, Any]]:
    """Which data columns exist and whether they hold anything (sampled, not read whole)."""
    out: dict[str, dict[str, Any]] = {}
    for col in DATA_COLUMNS:
        if col not in names:
            continue
        filled = False
        for dd in ddids:
            with released(tb.query(f"DATA_DESC_ID=={int(dd)}")) as sub:
                n = sub.nrows()
                if n == 0:
                    continue
                starts = sorted({0, max(0, n // 2 - SAMPLE_ROWS // 2), max(0, n - SAMPLE_ROWS)})
                for s in starts:
                    if not sub.iscelldefined(col, s):
                        continue
                    vals = sub.getcol(col, s, min(SAMPLE_ROWS, n - s))
                    if np.any(vals != 0):
                        filled = True
                        break
            if filled:
                break
        out[col] = {"present": True, "filled": filled}
    return out


def _flag_fraction(tb, ddids: list[int]) -> tuple[float | None, int]:
    """Fraction of flagged visibilities, read in chunks per data description."""
    flagged = total = 0
    for dd in ddids:
        with released(tb.query(f"DATA_DESC_ID=={int(dd)}")) as sub:
            n = sub.nrows()
            for start in range(0, n, FLAG_CHUNK_ROWS):
                fl = sub.getcol("FLAG", start, min(FLAG_CHUNK_ROWS, n - start))
                flagged += int(np.count_nonzero(fl))
                total += int(fl.size)
    return (flagged / total if total else None), total


def _history_says_calibrated(vis: str) -> bool:
    """True when the HISTORY shows a split/mstransform of the corrected column."""
    hist = os.path.join(vis, "HISTORY")
    if not os.path.isdir(hist):
        return False
    try:
        with opened("table", hist) as tb:
            if tb.nrows() == 0:
                return False
            text = "\n".join(str(m) for m in tb.getcol("MESSAGE"))
            text += "\n".join(str(m) for m in tb.getcol("ORIGIN"))
    except RuntimeError:
        return False
    low = text.lower()
    return bool(re.search(r"datacolumn\s*=\s*['\"]?corrected", low)) and (
        "split" in low or "mstransform" in low)


def _subtable(vis: str, name: str, cols: list[str]) -> dict[str, Any]:
    with opened("table", os.path.join(vis, name)) as tb:
        have = set(tb.colnames())
        out: dict[str, Any] = {"_nrows": tb.nrows(), "_cols": sorted(have)}
        for c in cols:
            v = tb.getcol(c) if c in have and tb.nrows() else []
            out[c] = v.tolist() if hasattr(v, "tolist") else list(v)
        return out


def summarize_ms(vis: str) -> dict[str, Any]:
    """All facts verify needs about one MS (raises on an unreadable MS)."""
    check_is_ms(vis)
    vis = str(Path(vis).resolve())
    summary: dict[str, Any] = {"vis": vis, "name": Path(vis).name}
    with opened("table", vis) as tb:
        colnames = list(tb.colnames())
        nrows = int(tb.nrows())
        summary["n_rows"] = nrows
        ddids = sorted({int(d) for d in tb.getcol("DATA_DESC_ID")}) if nrows else []
        summary["data_columns"] = _column_facts(tb, colnames, ddids) if nrows else {
            c: {"present": True, "filled": False} for c in DATA_COLUMNS if c in colnames}
        frac, nvis = _flag_fraction(tb, ddids) if nrows else (None, 0)
        summary["flagged_fraction"] = frac
        summary["n_visibilities"] = nvis

    if nrows == 0:  # msmetadata cannot open an MS without observations: facts from tables
        return _empty_summary(vis, summary)
    spw_table = _subtable(vis, "SPECTRAL_WINDOW",
                          ["NAME", "NUM_CHAN", "REF_FREQUENCY", "TOTAL_BANDWIDTH", "BBC_NO"])
    summary["has_bbc_no"] = "BBC_NO" in spw_table["_cols"]
    fields: list[dict[str, Any]] = []
    scans: list[dict[str, Any]] = []
    spws: list[dict[str, Any]] = []
    with opened("msmetadata", vis) as md:
        nspw = int(md.nspw())
        names = list(md.namesforspws()) if nspw else []
        observed = {int(s) for s in md.spwsforintent("*")} if nrows else set()
        for i in range(nspw):
            freqs = np.asarray(md.chanfreqs(i), dtype=float)
            widths = np.asarray(md.chanwidths(i), dtype=float)
            half = np.abs(widths) / 2
            lo = float(np.min(freqs - half)) if freqs.size else None
            hi = float(np.max(freqs + half)) if freqs.size else None
            bbc = spw_table["BBC_NO"][i] if summary["has_bbc_no"] else None
            spws.append({
                "id": i,
                "name": names[i] if i < len(names) else "",
                "num_chan": int(freqs.size),
                "ref_freq_hz": float(spw_table["REF_FREQUENCY"][i]),
                "min_freq_hz": lo,
                "max_freq_hz": hi,
                "first_chan_freq_hz": float(freqs[0]) if freqs.size else None,
                "chan_width_hz": float(widths[0]) if widths.size else None,
                "total_bandwidth_hz": float(spw_table["TOTAL_BANDWIDTH"][i]),
                "bbc_no": int(bbc) if bbc is not None else None,
                "intents": sorted(md.intentsforspw(i)) if i in observed else [],
                "has_data": i in observed,
            })
        intents_all = sorted(md.intents()) if nrows else []
        for f in range(int(md.nfields())):
            pc = md.phasecenter(f)
            fields.append({
                "id": f,
                "name": md.namesforfields(f)[0],
                "intents": sorted(md.intentsforfield(f)) if nrows else [],
                "ra_deg": float(np.degrees(pc["m0"]["value"])) % 360.0,
                "dec_deg": float(np.degrees(pc["m1"]["value"])),
                "scans": [int(s) for s in md.scansforfield(f)] if nrows else [],
            })
        for s in (md.scannumbers() if nrows else []):
            s = int(s)
            times = md.timesforscan(s)
            scans.append({
                "scan": s,
                "fields": [int(x) for x in md.fieldsforscan(s)],
                "intents": sorted(md.intentsforscan(s)),
                "spws": [int(x) for x in md.spwsforscan(s)],
                "start": mjd_to_iso(float(np.min(times)) / 86400.0),
                "end": mjd_to_iso(float(np.max(times)) / 86400.0),
            })
        antennas = [{"id": i, "name": n, "station": st} for i, (n, st) in enumerate(
            zip(md.antennanames(), md.antennastations(), strict=False))]
        begin = end = None
        if nrows:
            for obs in range(int(md.nobservations())):
                tr = md.timerangeforobs(obs)
                b, e = tr["begin"]["m0"]["value"], tr["end"]["m0"]["value"]
                begin = b if begin is None else min(begin, b)
                end = e if end is None else max(end, e)

    summary["fields"] = fields
    summary["scans"] = scans
    summary["spws"] = spws
    summary["antennas"] = antennas
    summary["intents"] = intents_all
    summary["time_range"] = {
        "begin": mjd_to_iso(begin) if begin is not None else None,
        "end": mjd_to_iso(end) if end is not None else None,
        "duration_s": (end - begin) * 86400.0 if begin is not None else None,
    }
    summary["has_gain_calibrators"] = any(i.startswith(GAIN_CAL_INTENTS) for i in intents_all)
    summary["history_calibrated_split"] = _history_says_calibrated(vis)
    cols = summary["data_columns"]
    summary["datacolumn"] = (
        "CORRECTED_DATA" if cols.get("CORRECTED_DATA", {}).get("filled") else
        "DATA" if "DATA" in cols else None)
    summary["counts"] = {  # fields/spws with visibilities (subtables may list more)
        "n_fields": sum(1 for f in fields if f["scans"]),
        "n_scans": len(scans),
        "n_spws": sum(1 for s in spws if s["has_data"]),
        "n_antennas": len(antennas), "n_rows": nrows,
        "n_fields_table": len(fields), "n_spws_table": len(spws),
    }
    return summary


def _empty_summary(vis: str, summary: dict[str, Any]) -> dict[str, Any]:
    spw = _subtable(vis, "SPECTRAL_WINDOW", ["NAME", "NUM_CHAN", "REF_FREQUENCY"])
    fld = _subtable(vis, "FIELD", ["NAME"])
    ant = _subtable(vis, "ANTENNA", ["NAME", "STATION"])
    summary.update(
        has_bbc_no="BBC_NO" in spw["_cols"],
        fields=[{"id": i, "name": n, "intents": [], "scans": []}
                for i, n in enumerate(fld["NAME"])],
        scans=[],
        spws=[{"id": i, "name": n, "num_chan": int(c), "ref_freq_hz": float(f),
               "has_data": False, "intents": []}
              for i, (n, c, f) in enumerate(zip(spw["NAME"], spw["NUM_CHAN"],
                                                spw["REF_FREQUENCY"], strict=False))],
        antennas=[{"id": i, "name": n, "station": s}
                  for i, (n, s) in enumerate(zip(ant["NAME"], ant["STATION"], strict=False))],
        intents=[], time_range={"begin": None, "end": None, "duration_s": None},
        has_gain_calibrators=False, history_calibrated_split=False, datacolumn=None,
        counts={"n_fields": 0, "n_scans": 0, "n_spws": 0, "n_antennas": ant["_nrows"],
                "n_rows": 0, "n_fields_table": fld["_nrows"], "n_spws_table": spw["_nrows"]},
    )
    return summary


def run_listobs(vis: str, listfile: Path) -> None:
    from casatasks import listobs

    listobs(vis=vis, listfile=str(listfile), overwrite=True, verbose=True)
    if not listfile.is_file():
        raise RuntimeError(f"listobs wrote no {listfile.name} for {vis}")


def ms_summary(ctx, vis: str, name: str, listobs: bool = True,
               strict: bool = True) -> dict[str, Any]:
    """Write ``<name>.summary.json`` (+ ``<name>.listobs.txt``) into the job's output folder.

    ``strict=False`` turns an unreadable MS into ``{"ok": false, "error": ...}`` instead of a
    failed job, so one bad EB does not hide what is wrong with the others.
    """
    out: dict[str, Any] = {"vis": vis, "ok": False, "error": None}
    path = Path(vis) if Path(vis).is_absolute() else ctx.out / vis  # relative: a staged output
    try:
        summary = summarize_ms(str(path))
        if not Path(vis).is_absolute():
            summary["vis"] = out["vis"] = ctx.final_path(path)
        spath = ctx.out / f"{name}.summary.json"
        spath.write_text(json.dumps(summary, indent=1))
        out["summary"] = ctx.final_path(spath)
        if listobs and summary["n_rows"]:  # listobs has nothing to say about an empty MS
            lpath = ctx.out / f"{name}.listobs.txt"
            run_listobs(str(path), lpath)
            if not Path(vis).is_absolute():  # name the MS where it will live, not staging
                text = lpath.read_text(errors="replace")
                lpath.write_text(text.replace(str(path), out["vis"]))
            out["listobs"] = ctx.final_path(lpath)
        out["ok"] = True
        out["metrics"] = dict(summary["counts"], flagged_fraction=summary["flagged_fraction"],
                              datacolumn=summary["datacolumn"])
    except Exception as exc:  # noqa: BLE001 - reported per MS when not strict
        if strict:
            raise
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


STEPS = {"ms_summary": ms_summary}
