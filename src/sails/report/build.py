"""Build the static report: overview, survey plots and one page per target, incrementally.

A target page is rewritten only when its inputs changed: its catalog rows, its MOUS's rows,
its products and the size/mtime of their files and of its logs. A PNG is redrawn only when
its FITS inputs changed. Both fingerprints live in ``reports/.state.json``. The catalog is
opened read-only: building a report never changes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sails.pipeline import PIPELINE
from sails.qa.survey import write_csv
from sails.report import plots
from sails.report.data import Snapshot, load_snapshot, metric, overall_state, stage_duration
from sails.report.html import write_atomic
from sails.report.overview import fmt_median, overview_html, survey_html
from sails.report.qa import CSV_NAME, snapshot_rows
from sails.report.sources import write_source_pages
from sails.report.target import ImageCache, TargetPage, resolve, signature

# Bump when the page layout changes so every page is rewritten once.
REPORT_VERSION = 2
STATE_FILE = ".state.json"


@dataclass
class BuildResult:
    index: Path
    pages_written: int
    pages_unchanged: int
    pages_removed: int
    images_drawn: int
    seconds: float


def _load_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and state.get("version") == REPORT_VERSION else {}


def _fingerprint(parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _log_listing(d: Path) -> list[tuple[str, int, int]]:
    try:
        return sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                      for e in os.scandir(d) if e.is_file())
    except OSError:
        return []


def generate(project, *, force: bool = False,
             progress: Callable[[int, int], None] | None = None) -> BuildResult:
    """Write the report into ``project.reports``; return what was (re)written."""
    t0 = time.perf_counter()
    snap = load_snapshot(project.catalog_path)
    out = project.reports
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    old = {} if force else _load_state(state_path)
    old_pages: dict[str, str] = old.get("pages", {})
    cache = ImageCache(old=old.get("images", {}), force=force)
    new_pages: dict[str, str] = {}
    written = unchanged = 0
    units = snap.units()
    total = len(units)
    qa_settings = project.settings.qa
    qa_rows = snapshot_rows(snap, qa_settings)
    write_csv(list(qa_rows.values()), out / CSV_NAME)
    for i, (m, u) in enumerate(units):
        logs_dir = project.logs / m.fs
        prods = m.products + u.products
        inputs = {
            "v": REPORT_VERSION, "mous": m.meta, "project": m.project, "files": m.files,
            "mstages": m.stages, "ustages": u.stages, "rows": u.rows, "products": prods,
            "events": [e for e in m.events if (e.get("target") or "") in ("", u.target)],
            "sigs": signature([resolve(project.root, p["path"]) for p in prods]),
            "logs": _log_listing(logs_dir), "qa": qa_settings.model_dump(),
        }
        fp = _fingerprint(inputs)
        tp = TargetPage(root=project.root, reports=out, logs_dir=logs_dir, mous=m, unit=u,
                        cache=cache, now=snap.taken_at, qa=qa_rows.get((m.mous_id, u.target)),
                        qa_settings=qa_settings)
        if old_pages.get(u.key) == fp and tp.path.exists():
            # Keep the previews of an unchanged page in the state file.
            prefix = f"targets/{u.key}."
            cache.new.update({k: v for k, v in cache.old.items() if k.startswith(prefix)})
            unchanged += 1
        else:
            write_atomic(tp.path, tp.render())
            written += 1
        new_pages[u.key] = fp
        if progress:
            progress(i + 1, total)

    removed = _remove_stale(out, set(old_pages) - set(new_pages))
    write_source_pages(project.catalog_path, out)  # one page per source of several MOUS
    plot_paths, facts = _survey_plots(project, snap, out, old, force)
    write_atomic(out / "index.html", overview_html(snap, project.settings.project_name,
                                                   _label(project), qa_rows))
    write_atomic(out / "survey.html", survey_html(snap, project.settings.project_name,
                                                  plot_paths, facts))
    state = {"version": REPORT_VERSION, "pages": new_pages, "images": cache.new,
             "plots": {k: str(v.name) if v else None for k, v in plot_paths.items()},
             "plots_fp": _plots_fp(snap), "built_at": time.time()}
    write_atomic(state_path, json.dumps(state, indent=1, sort_keys=True))
    return BuildResult(index=out / "index.html", pages_written=written, pages_unchanged=unchanged,
                       pages_removed=removed, images_drawn=cache.drawn,
                       seconds=time.perf_counter() - t0)


def build_report(project, *, open_browser: bool = False, force: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Write (or refresh) the static HTML report of ``project``; return index.html's path."""
    result = generate(project, force=force, progress=progress)
    if open_browser:
        webbrowser.open(result.index.resolve().as_uri())
    return result.index


def _label(project) -> str:
    p = project.catalog_path
    return str(p.relative_to(project.root)) if p.is_relative_to(project.root) else str(p)


def _remove_stale(out: Path, keys: set[str]) -> int:
    """Pages (and their PNGs) of targets that left the catalog."""
    n = 0
    for key in keys:
        page = out / "targets" / f"{key}.html"
        stem = Path(key).name + "."
        if page.parent.is_dir():
            for f in page.parent.iterdir():
                if f.name.startswith(stem):
                    f.unlink(missing_ok=True)
            n += 1
            if not any(page.parent.iterdir()):
                shutil.rmtree(page.parent, ignore_errors=True)
    return n


def _plot_data(snap: Snapshot) -> dict[str, Any]:
    gains, rms_pairs, points = [], [], []
    durations: dict[str, list[float]] = {}
    for m, u in snap.units():
        for p in u.products:
            if p.get("kind") == "selfcal_summary":
                a, b = metric(p, "snr_initial"), metric(p, "snr_final")
                if isinstance(a, int | float) and isinstance(b, int | float) and a > 0:
                    gains.append(float(b) / float(a))
            elif p.get("kind") in ("cont_image", "cube"):
                r, t = metric(p, "rms"), metric(p, "theoretical_rms")
                if isinstance(r, int | float) and isinstance(t, int | float):
                    rms_pairs.append((float(t), float(r), p["kind"]))
        pos = u.position
        if pos is not None:
            points.append((pos[0], pos[1], overall_state(m.stages + u.stages)))
    for m in snap.mous:
        for s in m.stages + [s for u in m.units for s in u.stages]:
            if s["status"] in ("done", "failed", "skipped"):
                d = stage_duration(s, snap.taken_at)
                if d is not None:
                    durations.setdefault(s["stage"], []).append(d)
    durations = {k: durations[k] for k in PIPELINE.names if k in durations}
    return {"gains": gains, "rms": rms_pairs, "points": points, "durations": durations}


def _plots_fp(snap: Snapshot) -> str:
    return _fingerprint(_plot_data(snap))


def _survey_plots(project, snap: Snapshot, out: Path, old: dict,
                  force: bool) -> tuple[dict[str, Path | None], list[tuple[str, str]]]:
    data = _plot_data(snap)
    d = out / "plots"
    files = {"snr_gain": d / "selfcal_snr_gain.png", "rms": d / "rms_vs_theoretical.png",
             "walltime": d / "stage_wall_times.png", "sky": d / "sky_map.png"}
    fp = _fingerprint(data)
    old_plots = old.get("plots") or {}
    reuse = (not force and old.get("plots_fp") == fp
             and all((old_plots.get(k) is None) == (not f.exists()) for k, f in files.items()))
    if reuse:
        result = {k: (f if old_plots.get(k) else None) for k, f in files.items()}
    else:
        made = {
            "snr_gain": plots.snr_gain(data["gains"], files["snr_gain"]),
            "rms": plots.rms_vs_theory(data["rms"], files["rms"]),
            "walltime": plots.wall_times(data["durations"], files["walltime"]),
            "sky": plots.sky_map(data["points"], files["sky"]),
        }
        for k, ok in made.items():
            if not ok:
                files[k].unlink(missing_ok=True)
        result = {k: (files[k] if ok else None) for k, ok in made.items()}
    facts = []
    n_units = len(snap.units())
    done = sum(1 for m, u in snap.units() if overall_state(m.stages + u.stages) == "done")
    facts.append(("targets finished", f"{done} of {n_units}"))
    if data["gains"]:
        facts.append(("median self-cal S/N gain", fmt_median(data["gains"])))
    ratios = [r / t for t, r, k in data["rms"] if k == "cont_image" and t > 0]
    if ratios:
        facts.append(("median continuum rms / theoretical", fmt_median(ratios)))
    total = sum(sum(v) for v in data["durations"].values())
    if total:
        facts.append(("total stage wall time", f"{total / 3600:.2f} h"))
    return result, facts
