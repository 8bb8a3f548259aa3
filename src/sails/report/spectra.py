"""The report's per-spw spectra: each science window's dirty-cube peak spectrum with the
continuum ranges the findcont stage found (or was given) shaded, and the systemic velocity
with where it came from.

Reads the per-target ``<target>.findcont.json`` the findcont stage writes
(:mod:`sails.stages.findcont`); draws nothing when the stage has not run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sails.imaging.lines import VSYS_ORIGINS  # noqa: E402
from sails.imaging.preview import save_png  # noqa: E402
from sails.report.html import esc  # noqa: E402


def spectra_png(result_path: Path, out: Path, title: str = "") -> dict[str, Any]:
    """One panel per spw: peak spectrum (mJy/beam) against LSRK GHz, continuum shaded."""
    data = json.loads(Path(result_path).read_text())
    spws = data.get("spws") or {}
    if not spws:
        raise ValueError("no spectra recorded (ranges shipped or given, not found)")
    keys = sorted(spws, key=lambda s: (len(s), s))
    fig, axes = plt.subplots(len(keys), 1, figsize=(7.0, 1.9 * len(keys) + 0.6), squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        s = spws[key]
        f = np.asarray(s["freqs_ghz"], float)
        peak = np.asarray([np.nan if v is None else v for v in s["peak_jy"]], float) * 1e3
        ax.step(f, peak, where="mid", color="0.15", lw=0.9)
        ranges = (data.get("metrics") or {}).get("ranges_ghz", {}).get(key, s["ranges_ghz"])
        for lo, hi in ranges:
            ax.axvspan(lo, hi, color="#3c9a48", alpha=0.18, lw=0)
        for m in s.get("lines_found") or []:
            ax.axvline(m["freq_ghz"], color="#d0393e", lw=0.8, ls=":")
            ax.annotate(m["name"], (m["freq_ghz"], np.nanmax(peak)), fontsize=6,
                        color="#d0393e", ha="left", va="top")
        ax.set_ylabel("mJy/beam", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_title(f"spw {key}: continuum {100 * s['cont_fraction']:.0f}% of channels",
                     fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("LSRK frequency (GHz); green: continuum ranges", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, out)
    return {"spws": keys}


def vsys_text(cont_metrics: dict[str, Any] | None) -> str:
    """'57.27 km/s (from the data: ...)' from a continuum image's spectral metrics."""
    spec = (cont_metrics or {}).get("spectral") or {}
    v, origin = spec.get("vsys_kms"), spec.get("vsys_origin")
    if v is None:
        return ""
    why = VSYS_ORIGINS.get(origin or "", origin or "unknown")
    return f"systemic velocity <b>{float(v):.2f} km/s</b> (LSRK, radio): {esc(why)}"


def ranges_table(metrics: dict[str, Any]) -> str:
    """Per-spw continuum fraction, ranges and catalogue lines found."""
    rows = []
    fr = metrics.get("cont_fraction") or {}
    found = metrics.get("lines_found") or {}
    for spw, rr in sorted((metrics.get("ranges_ghz") or {}).items(),
                          key=lambda kv: (len(kv[0]), kv[0])):
        text = ", ".join(f"{lo:.4f}-{hi:.4f}" for lo, hi in rr) or "none"
        frac = f"{100 * fr[spw]:.0f}%" if spw in fr else "-"
        rows.append(f"<tr><td>{esc(spw)}</td><td>{frac}</td><td>{esc(text)}</td>"
                    f"<td>{esc(', '.join(found.get(spw) or []) or '-')}</td></tr>")
    if not rows:
        return ""
    return ("<table><tr><th>spw</th><th>continuum</th><th>ranges (GHz LSRK)</th>"
            "<th>catalogue lines found</th></tr>" + "".join(rows) + "</table>")
