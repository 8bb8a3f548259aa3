"""One report page per source of several MOUS (``reports/sources/<name>.html``) and an index.

A page shows the source's members (MOUS, target, array, how they joined), its source-stage
rows, the per-array and combined images side by side (the previews the source stage drew,
copied beside the page so the report works offline), and the flux each array combination
recovered (continuum and line). The catalog is opened read-only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sails.names import safe_name
from sails.report.data import open_readonly
from sails.report.html import Raw, badge, esc, figure, fmt_num, page, table, write_atomic

SOURCES_DIR = "sources"
IMAGE_KINDS = ("cont_image", "mom0", "feather_mom0")


def _rows(con, sql: str, params=()) -> list[dict]:
    return [dict(r) for r in con.execute(sql, params)]


def _load(catalog_path: Path) -> list[dict]:
    con = open_readonly(catalog_path)
    try:
        tables = {r["name"] for r in _rows(con, "SELECT name FROM sqlite_master")}
        if "source_products" not in tables:  # an older catalog: no source stage yet
            return []
        out = []
        for s in _rows(con, "SELECT * FROM sources WHERE removed_at IS NULL ORDER BY name"):
            s["members"] = _rows(con, "SELECT * FROM source_members WHERE source_id = ?"
                                 " ORDER BY mous_id, target", (s["id"],))
            if len(s["members"]) < 2:
                continue
            s["stages"] = _rows(con, "SELECT * FROM source_stages WHERE source_id = ?"
                                " ORDER BY id", (s["id"],))
            s["products"] = [dict(p, metrics=json.loads(p["metrics"] or "{}"))
                             for p in _rows(con, "SELECT * FROM source_products WHERE"
                                            " source_id = ? ORDER BY id", (s["id"],))]
            out.append(s)
        return out
    finally:
        con.close()


def _arrays(p: dict) -> str:
    return " + ".join(p["metrics"].get("arrays") or []) or "?"


def _flux_rows(products: list[dict]) -> list[list[object]]:
    rows = []
    for p in products:
        m = p["metrics"]
        if p["kind"] == "cont_image":
            rows.append([_arrays(p), "continuum", fmt_num(m.get("total_flux_jy")), "Jy",
                         fmt_num(m.get("rms")), _beam(m)])
        elif p["kind"] in ("cube", "feather_cube"):
            rows.append([_arrays(p), f"{m.get('line', '')} cube", fmt_num(
                m.get("total_line_flux_jykms")), "Jy km/s", fmt_num(m.get("rms")), _beam(m)])
    return rows


def _beam(m: dict) -> str:
    b = m.get("beam")
    return f'{b[0]:.2f}" x {b[1]:.2f}"' if isinstance(b, list) and len(b) >= 2 else "-"


def _figures(s: dict, folder: Path) -> str:
    figs = []
    previews = {p["metrics"].get("source"): p for p in s["products"] if p["kind"] == "preview"}
    for p in s["products"]:
        if p["kind"] not in IMAGE_KINDS:
            continue
        png = previews.get(Path(p["path"]).name)
        if png is None or not Path(png["path"]).is_file():
            continue
        dest = folder / f"{safe_name(s['name'])}.{Path(png['path']).name}"
        shutil.copyfile(png["path"], dest)
        what = "continuum" if p["kind"] == "cont_image" else f"{p['metrics'].get('line')} mom0"
        figs.append(figure(dest.name, f"{_arrays(p)}: {what}"))
    return '<div class="figs">' + "".join(figs) + "</div>" if figs else "<p>no images yet</p>"


def source_page(s: dict, folder: Path) -> str:
    members = table(["MOUS", "target", "array", "config", "joined by"],
                    [[m["mous_id"], m["target"], m["array_kind"], m["config"] or "-",
                      m["joined_by"]] for m in s["members"]])
    stages = table(["stage", "status", "reason / error"],
                   [[st["stage"], Raw(badge(st["status"])), st["error"] or st["reason"] or ""]
                    for st in s["stages"]])
    flux = table(["arrays", "product", "recovered flux", "unit", "rms (Jy/beam)", "beam"],
                 _flux_rows(s["products"]))
    body = (f"<h1>Source {esc(s['name'])}</h1>"
            f"<p>{len(s['members'])} members; arrays {esc(', '.join(json.loads(s['arrays'])))}"
            f"; {esc(s['change_reason'] or '')}</p>"
            f"<h2>Members</h2>{members}<h2>Source stages</h2>{stages}"
            f"<h2>Images per array combination</h2>{_figures(s, folder)}"
            f"<h2>Recovered flux per array combination</h2>{flux}")
    return page(f"source {s['name']}", body, "../")


def write_source_pages(catalog_path: Path, reports: Path) -> list[Path]:
    """Write a page per source of several members and ``sources/index.html``."""
    sources = _load(catalog_path)
    folder = reports / SOURCES_DIR
    if not sources:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for s in sources:
        path = folder / f"{safe_name(s['name'])}.html"
        write_atomic(path, source_page(s, folder))
        out.append(path)
    rows = [[Raw(f'<a href="{esc(p.name)}">{esc(s["name"])}</a>'), len(s["members"]),
             ", ".join(json.loads(s["arrays"])),
             " ".join(st["status"] for st in s["stages"])] for s, p in zip(sources, out,
                                                                          strict=True)]
    write_atomic(folder / "index.html", page("sources", "<h1>Sources</h1>" + table(
        ["source", "members", "arrays", "source stages"], rows), "../"))
    return out
