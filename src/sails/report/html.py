"""Small HTML helpers: escaping, formatting, the page frame, state cells.

Everything that comes from the archive or the catalog goes through :func:`esc`; source
names contain quotes, '<', '&' and '+'.
"""

from __future__ import annotations

import html
import math
import os
import time
from pathlib import Path
from urllib.parse import quote

from sails.atomic import write_text_atomic
from sails.report.assets import CHECK_IMAGES_JS, CSS, SORT_JS

STATE_ORDER = ("pending", "running", "done", "failed", "skipped", "blocked")


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def href(target: Path, page_dir: Path) -> str:
    """Relative, URL-quoted link from a page folder to a file (works from disk)."""
    rel = os.path.relpath(target, page_dir)
    return quote(rel.replace(os.sep, "/"), safe="/")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{max(seconds, 0):.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} m {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} m"


def fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def fmt_num(v: object, digits: int = 3) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.{digits}e}"
        return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"
    if isinstance(v, list | tuple):
        return ", ".join(fmt_num(x, digits) for x in v)
    return str(v)


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1000.0
    return ""


def fmt_flux(v: object) -> str:
    """A flux density in Jy shown in mJy (the unit astronomers read ALMA noise in)."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        return fmt_num(v)
    return f"{v * 1e3:.4g} mJy"


def state_cell(stage: dict | None, now: float, *, compact: bool = True) -> str:
    """One coloured <td>: the state, the duration, and the why in its hover title."""
    if stage is None:
        return '<td class="st st-none" data-sort="">&ndash;</td>'
    status = stage["status"]
    dur = _duration(stage, now)
    why = stage.get("error") or stage.get("reason") or ""
    title = f"{stage['stage']}: {status}"
    if dur is not None:
        title += (" for " if status == "running" else " after ") + fmt_duration(dur)
    if stage.get("attempts"):
        title += f" (attempts: {stage['attempts']})"
    if why:
        title += f"\n{why}"
    small = f"<small>{esc(fmt_duration(dur))}</small>" if dur is not None and compact else ""
    return (f'<td class="st st-{esc(status)}" title="{esc(title)}" data-sort="{esc(status)}">'
            f"{esc(status)}{small}</td>")


def _duration(stage: dict, now: float) -> float | None:
    from sails.report.data import stage_duration

    return stage_duration(stage, now)


def badge(status: str) -> str:
    return f'<span class="badge st-{esc(status)}">{esc(status)}</span>'


def kv_table(pairs: list[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v if isinstance(v, Raw) else esc(v)}</td></tr>"
                   for k, v in pairs if v not in (None, ""))
    return f'<table class="kv">{rows}</table>' if rows else '<p class="note">nothing recorded</p>'


class Raw(str):
    """Already-escaped HTML (a link, a badge) for :func:`kv_table` and :func:`table`."""


def table(headers: list[str], rows: list[list[object]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, Raw) else esc(c)}</td>" for c in r) + "</tr>"
        for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def figure(src: str, caption: str = "", alt: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{esc(src)}" alt="{esc(alt or caption)}">{cap}</figure>'


def page(title: str, body: str, root: str, active: str = "", extra_js: str = "") -> str:
    """The frame every page shares; ``root`` is the relative path back to reports/."""
    nav = "".join(
        f'<a href="{root}{name}.html"{" class=active" if active == name else ""}>{label}</a>'
        for name, label in (("index", "Overview"), ("survey", "Survey plots")))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><span class="brand">ALMA-SAILS</span>{nav}</header>'
        f"<main>{body}<footer>generated by sails report on {esc(fmt_time(time.time()))}"
        "</footer></main>"
        f"<script>{SORT_JS}{extra_js}{CHECK_IMAGES_JS}</script></body></html>\n"
    )


def write_atomic(path: Path, text: str) -> None:
    """Readers (a browser open on the report) never see a half-written page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
