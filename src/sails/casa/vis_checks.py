"""Visibility-domain checks for the QA scores (job side): the flagged fraction of the data
imaged, and whether line emission sits in the channels used for the continuum.

The line check averages the (unflagged) visibilities of the target over all rows per
channel, as a scalar spectrum of the vector average, fits a straight line to the selected
continuum channels of each spw (the continuum's own slope), and reports the largest
positive excess in units of the robust channel-to-channel scatter (MAD). A line left in the
continuum shows up as a bump of many sigma; a flat continuum stays near 3 sigma. Rows are
read in chunks, so memory stays small on large measurement sets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sails.casa.tools import opened

CHUNK_ROWS = 20000


def channels(sel: str, nchan: int) -> np.ndarray:
    keep = np.zeros(nchan, bool)
    for part in sel.split(";"):
        a, _, b = part.partition("~")
        lo, hi = int(a), int(b or a)
        keep[max(0, lo): min(nchan - 1, hi) + 1] = True
    return keep


def _spectrum(vis: str, field: str, spw: str, column: str) -> tuple[np.ndarray, int, int]:
    """Vector-averaged spectrum (over rows and correlations), flagged and total counts."""
    acc = cnt = None
    flagged = total = 0
    with opened("ms", vis) as ms:
        ms.msselect({"field": field, "spw": spw})
        ms.iterinit(maxrows=CHUNK_ROWS)
        more = ms.iterorigin()
        while more:
            d = ms.getdata([column, "flag"])
            data, flag = d[column], d["flag"]
            ok = ~flag
            flagged += int(flag.sum())
            total += int(flag.size)
            s = np.where(ok, data, 0).sum(axis=(0, 2))
            n = ok.sum(axis=(0, 2))
            acc = s if acc is None else acc + s
            cnt = n if cnt is None else cnt + n
            more = ms.iternext()
        ms.iterend()
    if acc is None:
        return np.zeros(0), 0, 0
    with np.errstate(invalid="ignore", divide="ignore"):
        spec = np.abs(acc / cnt)
    return spec, flagged, total


def continuum_checks(cont: dict[str, Any]) -> dict[str, Any]:
    """``flagged_fraction``, ``cont_line_snr`` and where the worst excess is."""
    column = "corrected_data" if cont["datacolumn"] == "corrected" else "data"
    flagged = total = 0
    best, where = None, ""
    for vis, field, sel in zip(cont["vis"], cont["field"], cont["spw"], strict=True):
        for part in filter(None, sel.split(",")):
            spw, _, chans = part.partition(":")
            spec, f, t = _spectrum(vis, field, spw, column)
            flagged, total = flagged + f, total + t
            if spec.size < 8:
                continue
            keep = channels(chans, spec.size) & np.isfinite(spec)
            x = np.flatnonzero(keep)
            if x.size < 8:
                continue
            y = spec[x]
            fit = np.polyval(np.polyfit(x, y, 1), x)
            res = y - fit
            scatter = 1.4826 * float(np.median(np.abs(res - np.median(res))))
            if scatter <= 0:
                continue
            i = int(np.argmax(res))
            snr = float(res[i] / scatter)
            if best is None or snr > best:
                best, where = snr, f"spw {spw} channel {int(x[i])} of {vis.rsplit('/', 1)[-1]}"
    return {"flagged_fraction": flagged / total if total else None,
            "cont_line_snr": best, "cont_line_where": where}
