"""Survey-wide plots: self-cal S/N gain, image rms against theoretical, stage wall times,
and a sky map of targets coloured by state. Each returns False (and draws nothing) when
there is no data for it yet, so the page shows a note instead of an empty axis.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter  # noqa: E402

from sails.imaging.preview import save_png  # noqa: E402

STATE_COLOURS = {
    "pending": "#9e9e9e",
    "running": "#2f86c9",
    "done": "#3c9a48",
    "failed": "#d0393e",
    "skipped": "#e69a1c",
    "blocked": "#8e52b3",
}


def snr_gain(gains: list[float], out: Path) -> bool:
    """Histogram of final/initial peak S/N of self-calibrated targets."""
    g = np.asarray([x for x in gains if np.isfinite(x) and x > 0], dtype=float)
    if g.size == 0:
        return False
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    bins = max(5, min(40, int(np.sqrt(g.size)) + 3))
    ax.hist(g, bins=bins, color="#2f86c9", edgecolor="white")
    ax.axvline(1.0, color="0.3", ls="--", lw=1, label="no change")
    ax.axvline(float(np.median(g)), color="#d0393e", lw=1.2,
               label=f"median {np.median(g):.2f}")
    ax.set_xlabel("self-cal S/N gain (final / initial peak S/N)")
    ax.set_ylabel("targets")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Self-calibration S/N gain (n = {g.size})", fontsize=10)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.14, top=0.91)
    save_png(fig, out)
    return True


def rms_vs_theory(pairs: list[tuple[float, float, str]], out: Path) -> bool:
    """Measured image rms against theoretical sensitivity (log-log, with the 1:1 line)."""
    pts = [(t, r, k) for t, r, k in pairs if t and r and t > 0 and r > 0]
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for kind, colour in (("cont_image", "#2f86c9"), ("cube", "#e69a1c")):
        sel = [(t, r) for t, r, k in pts if k == kind]
        if sel:
            a = np.asarray(sel)
            ax.scatter(a[:, 0] * 1e3, a[:, 1] * 1e3, s=14, color=colour, alpha=0.8,
                       label="continuum" if kind == "cont_image" else "cubes")
    a = np.asarray([(t, r) for t, r, _ in pts]) * 1e3
    lo, hi = float(a.min()) / 1.5, float(a.max()) * 1.5
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=1, label="1:1")
    ax.plot([lo, hi], [1.15 * lo, 1.15 * hi], color="0.3", lw=0.8, ls=":", label="+15%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("theoretical rms (mJy/beam)")
    ax.set_ylabel("measured rms (mJy/beam)")
    ax.set_title(f"Image rms against theoretical (n = {len(pts)})", fontsize=10)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.92)
    save_png(fig, out)
    return True


def wall_times(durations: dict[str, list[float]], out: Path) -> bool:
    """Distribution of wall time per stage (box plot, log scale)."""
    stages = [s for s, v in durations.items() if v]
    if not stages:
        return False
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    data = [np.maximum(np.asarray(durations[s], dtype=float), 0.1) for s in stages]
    ax.boxplot(data, whis=(5, 95), showfliers=True, flierprops={"markersize": 3})
    ax.set_xticks(range(1, len(stages) + 1),
                  [f"{s}\n(n={len(d)})" for s, d in zip(stages, data, strict=True)])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_ylabel("wall time (s)")
    total_h = sum(float(np.sum(d)) for d in data) / 3600.0
    ax.set_title(f"Stage wall times (total {total_h:.2f} h)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.17, top=0.91)
    save_png(fig, out)
    return True


def sky_map(points: list[tuple[float, float, str]], out: Path) -> bool:
    """Targets on the sky (Mollweide, RA increasing to the left) coloured by state."""
    if not points:
        return False
    fig = plt.figure(figsize=(7.4, 4.2))
    ax = fig.add_subplot(111, projection="mollweide")
    for state, colour in STATE_COLOURS.items():
        sel = [(ra, dec) for ra, dec, s in points if s == state]
        if not sel:
            continue
        a = np.asarray(sel, dtype=float)
        lon = np.radians(180.0 - (a[:, 0] % 360.0))  # RA 0h at the centre-right, east left
        ax.scatter(lon, np.radians(a[:, 1]), s=12, color=colour, label=f"{state} ({len(sel)})",
                   alpha=0.85, edgecolors="none")
    ax.set_xticks(np.radians(np.arange(-150, 181, 30)))
    ax.set_xticklabels([f"{int(h)}h" for h in (np.arange(330, -1, -30) % 360) / 15],
                       fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(f"Targets on the sky ({len(points)})", fontsize=10, pad=12)
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.12, -0.05))
    fig.subplots_adjust(left=0.04, right=0.88, bottom=0.05, top=0.88)
    save_png(fig, out)
    return True
