"""The page of one target: catalog metadata, stage states, verify summary, self-cal table
and image pair, continuum preview, moment maps and spectra per line, products and logs.

Every section shows what exists; a missing product or file gives a short note, never an
error and never a broken link.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sails.report import images
from sails.report.data import Mous, Unit, by_kind, line_name, overall_state
from sails.report.html import (
    Raw,
    badge,
    esc,
    figure,
    fmt_bytes,
    fmt_duration,
    fmt_flux,
    fmt_num,
    fmt_time,
    href,
    kv_table,
    page,
    state_cell,
    table,
)
from sails.report.logs import mentions_target

MOUS_META = ("project_code", "obs_title", "group_ous_uid", "num_asdms", "antenna_arrays",
             "obs_release_date", "qa2_passed", "pwv", "science_keyword", "scientific_category",
             "preferred_datacolumn", "spw_remap", "data_rights", "srdp_url")
TARGET_COLS = (("obs_id", "obs_id"), ("spw_id", "spw"), ("band_list", "band"),
               ("central_freq_ghz", "freq (GHz)"), ("bandwidth_ghz", "bw (GHz)"),
               ("ang_res_arcsec", "res (\u2033)"), ("las_arcsec", "LAS (\u2033)"),
               ("fov_arcsec", "FoV (\u2033)"), ("t_exptime", "t_exp (s)"),
               ("cont_sens_bandwidth", "cont sens"), ("line_sens_native", "line sens"),
               ("is_mosaic", "mosaic"), ("pwv", "pwv"))


def signature(paths: list[Path]) -> str:
    """Size and mtime of each input: a preview is redrawn only when one changes."""
    parts = []
    for p in paths:
        try:
            st = p.stat()
            parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{p}:missing")
    return "|".join(parts)


@dataclass
class ImageCache:
    """Remembers which PNG came from which inputs (kept in reports/.state.json)."""

    old: dict[str, dict]
    force: bool = False
    new: dict[str, dict] = field(default_factory=dict)
    drawn: int = 0

    def make(self, out: Path, key: str, sources: list[Path],
             draw: Callable[[], dict | None]) -> dict:
        sig = signature(sources)
        prev = self.old.get(key)
        if (not self.force and prev and prev.get("sig") == sig
                and (prev.get("error") or out.exists())):
            self.new[key] = prev
            return prev
        try:
            info = draw() or {}
            entry: dict[str, Any] = {"sig": sig, "error": None, "info": info}
            self.drawn += 1
        except images.PreviewError as exc:
            entry = {"sig": sig, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one odd file must not stop the report
            entry = {"sig": sig, "error": f"preview failed ({type(exc).__name__}: {exc})"}
        if entry["error"]:
            out.unlink(missing_ok=True)
        self.new[key] = json.loads(json.dumps(entry, default=str))
        return self.new[key]


def resolve(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40] or "x"


def cube_selfcal_table(m: dict[str, Any]) -> str:
    """Which data a cube was made from, how its continuum was removed, and the line peak
    before and after self-cal (dirty cubes of the same data, Jy/beam)."""
    if "selfcal_applied" not in m:
        return ""  # a cube from before these metrics existed
    data = ("self-calibrated (full resolution)" if m.get("selfcal_applied")
            else f"not self-calibrated: {m.get('selfcal_why_not') or 'self-cal skipped'}")
    gain = m.get("line_peak_gain")
    return kv_table([
        ("cube data", data),
        ("continuum subtraction", m.get("contsub_method")),
        ("line peak before self-cal", fmt_flux(m.get("line_peak_nosc"))),
        ("line peak after self-cal", fmt_flux(m.get("line_peak_sc"))),
        ("after / before", "-" if gain is None else f"{gain:.2f}"),
        ("peak velocity (km/s)", fmt_num(m.get("peak_velocity_kms"))),
    ])


@dataclass
class TargetPage:
    root: Path  # project root
    reports: Path
    logs_dir: Path  # logs/<mous_fs>
    mous: Mous
    unit: Unit
    cache: ImageCache
    now: float
    qa: Any = None  # sails.qa.survey.QaRow of this target
    qa_settings: Any = None

    @property
    def path(self) -> Path:
        return self.reports / "targets" / f"{self.unit.key}.html"

    @property
    def page_dir(self) -> Path:
        return self.path.parent

    def png(self, suffix: str) -> tuple[Path, str]:
        name = f"{Path(self.unit.key).name}.{suffix}.png"
        return self.page_dir / name, f"targets/{Path(self.unit.key).parent}/{name}"

    def file(self, p: dict) -> Path:
        return resolve(self.root, p["path"])

    # ------------------------------------------------------------------ sections
    def render(self) -> str:
        u, m = self.unit, self.mous
        title = u.target or "(no targets yet)"
        state = overall_state(m.stages + u.stages)
        head = (f"<h1>{esc(title)} {badge(state)}</h1>"
                f'<p class="sub">MOUS <b>{esc(m.mous_id)}</b> &middot; project '
                f"{esc(m.meta.get('project_code') or '-')} &middot; band "
                f"{esc(u.band or '-')} &middot; "
                f'<a href="../../index.html">back to the overview</a></p>')
        # Images first: that is what an astronomer opens the page for.
        sections = [head, self.qa_html(), self.stages_html(), self.continuum_html(),
                    self.spectra_html(), self.selfcal_html(), self.lines_html(),
                    self.size_limits_html(),
                    self.verify_html(), self.metadata_html(), self.products_html(),
                    self.logs_html(), self.events_html()]
        return page(f"{title} - {m.mous_id}", "".join(sections), root="../../")

    def qa_html(self) -> str:
        from sails.qa.scores import score_target
        from sails.report.qa import qa_html, sub_scores_html

        html = qa_html(self.qa, self.mous.events, self.unit.target)
        score = (score_target(self.unit.products, self.qa_settings)
                 if self.qa_settings is not None else None)
        if score is not None:
            html += sub_scores_html(self.qa, [(s.name, s.score, s.reason) for s in score.subs])
        return html

    def stages_html(self) -> str:
        rows = []
        for s in self.mous.stages + self.unit.stages:
            why = s.get("error") or s.get("reason") or ""
            cls = "reason" + (" skip" if s["status"] in ("skipped", "pending") else "")
            dur = fmt_duration(s.get("duration_s"))
            if s["status"] == "running" and s.get("started_at"):
                dur = f"running since {fmt_time(s['started_at'])}"
            rows.append(
                f"<tr><td>{esc(s['stage'])}</td><td>{'target' if s.get('target') else 'MOUS'}"
                f"</td>{state_cell(s, self.now, compact=False)}<td class=num>"
                f"{esc(s.get('attempts') or 0)}</td><td>{esc(fmt_time(s.get('started_at')))}</td>"
                f"<td>{esc(fmt_time(s.get('finished_at')))}</td><td>{esc(dur)}</td>"
                f'<td class="{cls}">{esc(why)}</td></tr>')
        if not rows:
            return "<h2>Stages</h2><p class=note>no stage rows yet</p>"
        return ("<h2>Stages</h2><table><thead><tr><th>stage</th><th>level</th><th>state</th>"
                "<th>attempts</th><th>started</th><th>finished</th><th>wall time</th>"
                "<th>error / reason</th></tr></thead><tbody>" + "".join(rows)
                + "</tbody></table>")

    def metadata_html(self) -> str:
        m = self.mous
        meta = [(k, m.meta.get(k)) for k in MOUS_META]
        files = m.files or {}
        if files.get("n"):
            done = files.get("done")
            meta.append(("archive files", f"{files['n']} ({fmt_bytes(files.get('bytes'))})"
                         + (f", {done} downloaded" if done is not None else "")))
        out = ["<h2>Catalog metadata</h2><div class=grid><div><h3>MOUS</h3>",
               kv_table(meta), "</div>"]
        pr = m.project or {}
        if pr:
            out.append("<div><h3>Project</h3>")
            out.append(kv_table([(k, pr.get(k)) for k in (
                "project_code", "proposal_id", "pi_name", "scientific_category",
                "pub_title", "first_author", "publication_year", "bib_reference")]))
            if pr.get("proposal_abstract"):
                out.append(f"<details><summary>abstract</summary><p>"
                           f"{esc(pr['proposal_abstract'])}</p></details>")
            out.append("</div>")
        out.append("</div>")
        rows = self.unit.rows
        if rows:
            first = rows[0]
            pos = ""
            if first.get("ra") is not None and first.get("dec") is not None:
                pos = _sexagesimal(float(first["ra"]), float(first["dec"]))
            out.append(f"<h3>Target rows ({len(rows)})</h3>")
            if pos:
                out.append(f"<p>position (ICRS) <b>{esc(pos)}</b> &middot; RA "
                           f"{fmt_num(first['ra'], 7)} deg, Dec {fmt_num(first['dec'], 7)} deg</p>")
            out.append(table([h for _, h in TARGET_COLS],
                             [[fmt_num(r.get(k), 4) for k, _ in TARGET_COLS] for r in rows]))
        return "".join(out)

    def verify_html(self) -> str:
        summaries = by_kind(self.mous.products, "ms_summary")
        if not summaries:
            note = "no measurement-set summary recorded yet (the verify stage writes it)"
            return f"<h2>Verification summary</h2><p class=note>{note}</p>"
        out = ["<h2>Verification summary</h2>"]
        verify = [p for p in summaries if p.get("stage") != "split"]
        split = [p for p in summaries if p.get("stage") == "split"]
        for label, group in (("execution blocks (verify)", verify),
                             ("split target measurement sets", split)):
            if not group:
                continue
            views = [ms_summary_view(p, self.file(p)) for p in group]
            out.append(f"<h3>{len(group)} {esc(label)}</h3>")
            cols = ["EB / MS", "fields", "scans", "spws", "antennas", "flagged", "datacolumn",
                    "time range"]
            out.append(table(cols, [[v["eb"], fmt_num(v["n_fields"]), fmt_num(v["n_scans"]),
                                     fmt_num(v["n_spws"]), fmt_num(v["n_antennas"]),
                                     _pct(v["flagged_fraction"]), v["datacolumn"] or "",
                                     v["time_range"]] for v in views]))
            for v in views[:1]:
                if v["fields"]:
                    out.append("<h3>Fields</h3>")
                    out.append(table(["field", "intents"], v["fields"][:60]))
                if v["spws"]:
                    cols2 = v["spw_cols"]
                    out.append("<h3>Spectral windows</h3>")
                    out.append(table(cols2, [[fmt_num(s.get(c), 6) for c in cols2]
                                             for s in v["spws"][:80]]))
                if v["error"]:
                    out.append(f"<p class=note>{esc(v['error'])}</p>")
        return "".join(out)

    def selfcal_html(self) -> str:
        sums = by_kind(self.unit.products, "selfcal_summary")
        initial = by_kind(self.unit.products, "selfcal_image_initial")
        final = by_kind(self.unit.products, "selfcal_image_final")
        if not (sums or initial or final):
            return "<h2>Self-calibration</h2><p class=note>no self-calibration results yet</p>"
        out = ["<h2>Self-calibration</h2>"]
        for p in sums:
            out.append(selfcal_table(p.get("metrics") or {}))
        if initial or final:
            a = self.file(initial[-1]) if initial else None
            b = self.file(final[-1]) if final else None
            out_png, key = self.png("selfcal")
            srcs = [x for x in (a, b) if x is not None]
            entry = self.cache.make(out_png, key, srcs,
                                    lambda: images.pair_png(a, b, out_png) or {})
            out.append(self._figure(entry, out_png, "before and after self-calibration, on one "
                                    "colour scale (beam lower left)"))
        return "".join(out)

    def size_limits_html(self) -> str:
        """What the ``[storage]`` size limits cut from the imaging plan, in the order done."""
        from sails.sizes import MITIGATION_KEY

        cuts = next((m[MITIGATION_KEY] for p in self.unit.products
                     if (m := p.get("metrics") or {}).get(MITIGATION_KEY)), None)
        if not cuts:
            return ""
        rows = "".join(f"<tr><td class=num>{i}</td><td>{esc(c.get('step', ''))}</td>"
                       f"<td>{esc(c.get('why', ''))}</td></tr>" for i, c in enumerate(cuts, 1))
        return ("<h2>Size limits</h2><p class=note>The planned images exceeded the configured "
                "size limits (<code>[storage] max_cube_gb</code> / <code>max_products_gb</code>)"
                "; the plan was cut down in this order:</p><table><thead><tr><th>#</th>"
                "<th>step</th><th>what was done</th></tr></thead><tbody>" + rows
                + "</tbody></table>")

    def continuum_html(self) -> str:
        conts = by_kind(self.unit.products, "cont_image")
        if not conts:
            return "<h2>Continuum</h2><p class=note>no continuum image yet</p>"
        out = ["<h2>Continuum</h2>"]
        for i, p in enumerate(conts):
            f = self.file(p)
            out_png, key = self.png(f"cont{i}")
            title = "continuum" + (f", spw {p['spw']}" if p.get("spw") else "")
            entry = self.cache.make(out_png, key, [f],
                                    lambda f=f, o=out_png, t=title: images.continuum_png(f, o, t))
            mets = p.get("metrics") or {}
            cap = f"{esc(f.name)} &middot; beam lower left, scale bar lower right"
            out.append('<div class="grid"><div>')
            out.append(self._figure(entry, out_png, cap))
            out.append("</div><div>")
            out.append(image_metrics_table(mets, p.get("spw")))
            out.append("</div></div>")
        return "".join(out)

    def spectra_html(self) -> str:
        """Per-spw spectra with the continuum ranges shaded; the systemic velocity."""
        from sails.report import spectra

        found = by_kind(self.unit.products, "findcont")
        cont = by_kind(self.unit.products, "cont_image")
        vsys = spectra.vsys_text(cont[-1].get("metrics") if cont else None)
        if not found and not vsys:
            return ""
        out = ["<h2>Spectral windows</h2>"] + ([f"<p>{vsys}</p>"] if vsys else [])
        if found:
            p = found[-1]
            f = self.file(p)
            m = p.get("metrics") or {}
            out_png, key = self.png("spws")
            entry = self.cache.make(out_png, key, [f], lambda f=f, o=out_png: spectra.spectra_png(
                f, o, f"{self.unit.target}: dirty-cube peak spectra"))
            src = {"findcont": "found from the data", "delivery": "shipped with the data"}
            cap = (f"continuum ranges {esc(src.get(m.get('source'), m.get('source')))}"
                   " (cont.dat); red: catalogue lines found")
            out.append(self._figure(entry, out_png, cap))
            out.append(spectra.ranges_table(m))
        return "".join(out)

    def lines_html(self) -> str:
        prods = self.unit.products
        cubes = by_kind(prods, "cube")
        moms = [p for p in prods if p.get("kind") in ("mom0", "mom1", "mom8")]
        if not (cubes or moms):
            return "<h2>Lines</h2><p class=note>no line cubes or moment maps yet</p>"
        lines: dict[str, dict[str, list[dict]]] = {}
        for p in cubes + moms:
            lines.setdefault(line_name(p), {}).setdefault(p["kind"], []).append(p)
        peak_src = next((self.file(p) for p in by_kind(prods, "cont_image")
                         if self.file(p).is_file()), None)
        out = ["<h2>Lines</h2>"]
        for j, (line, kinds) in enumerate(sorted(lines.items())):
            out.append(f"<h3>{esc(line)}</h3>")
            mom_paths = {k: self.file(v[-1]) for k, v in kinds.items() if k.startswith("mom")}
            if mom_paths:
                out_png, key = self.png(f"mom{j}-{_slug(line)}")
                srcs = [mom_paths[k] for k in sorted(mom_paths)]
                entry = self.cache.make(
                    out_png, key, srcs,
                    lambda mp=mom_paths, o=out_png, ln=line: images.moments_png(mp, o, ln) or {})
                out.append(self._figure(entry, out_png, "moment 0, 1 and 8 maps"))
            for i, c in enumerate(kinds.get("cube", [])):
                f = self.file(c)
                out_png, key = self.png(f"spec{j}-{i}-{_slug(line)}")
                srcs = [f] + ([peak_src] if peak_src else [])

                def draw(f=f, o=out_png, ln=line) -> dict:
                    try:
                        at = images.peak_world(peak_src) if peak_src else None
                    except images.PreviewError:
                        at = None  # an unreadable continuum: use the cube's brightest pixel
                    return images.spectrum_png(f, o, at, ln)

                entry = self.cache.make(out_png, key, srcs, draw)
                where = (entry.get("info") or {}).get("where", "")
                out.append('<div class="grid"><div>')
                out.append(self._figure(entry, out_png, f"{esc(f.name)}: spectrum at the "
                                        f"{esc(where or 'continuum peak')}"))
                out.append("</div><div>")
                out.append(image_metrics_table(c.get("metrics") or {}, c.get("spw")))
                out.append(cube_selfcal_table(c.get("metrics") or {}))
                out.append("</div></div>")
        return "".join(out)

    def _figure(self, entry: dict, out_png: Path, caption: str) -> str:
        if entry.get("error") or not out_png.exists():
            return f'<p class="note warn">preview unavailable: {esc(entry.get("error"))}</p>'
        return figure(href(out_png, self.page_dir), caption)

    def products_html(self) -> str:
        prods = self.mous.products + self.unit.products
        if not prods:
            return "<h2>Products</h2><p class=note>no products recorded yet</p>"
        rows = []
        for p in prods:
            f = self.file(p)
            link: object = Raw(f'<a href="{esc(href(f, self.page_dir))}">{esc(f.name)}</a>'
                               if f.exists() else
                               f'{esc(f.name)} <span class="warn">(missing on disk)</span>')
            rows.append([p.get("stage", ""), p["kind"], "target" if p.get("target") else "MOUS",
                         p.get("spw") or "", fmt_bytes(p.get("bytes")), link])
        return (f"<h2>Products ({len(prods)})</h2>"
                + table(["stage", "kind", "level", "spw", "size", "file"], rows))

    def logs_html(self) -> str:
        d = self.logs_dir
        try:
            names = sorted(e.name for e in d.iterdir() if e.is_file())
        except OSError:
            names = []
        if not names:
            return (f"<h2>Logs</h2><p class=note>no logs yet in "
                    f"{esc(d.relative_to(self.root) if d.is_relative_to(self.root) else d)}"
                    f"/</p>")
        mine, others = [], 0
        for n in names:
            stage = re.split(r"[-.]", n, maxsplit=1)[0]
            if (stage in ("download", "verify", "split") or not self.unit.target
                    or mentions_target(n, self.unit.target)):
                mine.append(n)
            else:
                others += 1
        items = "".join(f'<li><a href="{esc(href(d / n, self.page_dir))}">{esc(n)}</a></li>'
                        for n in mine)
        more = (f'<p class=muted>{others} more log(s) of other targets in '
                f'<a href="{esc(href(d, self.page_dir))}/">{esc(d.name)}/</a></p>'
                if others else "")
        return f"<h2>Logs</h2><ul>{items}</ul>{more}"

    def events_html(self) -> str:
        evs = [e for e in self.mous.events if (e.get("target") or "") in ("", self.unit.target)]
        if not evs:
            return ""
        rows = [[fmt_time(e["at"]), e.get("stage") or "", e.get("target") or "",
                 e.get("from_status") or "", e.get("to_status") or "", e.get("actor") or "",
                 e.get("reason") or ""] for e in evs[-40:]]
        return (f"<h2>Events (last {len(rows)} of {len(evs)})</h2>"
                + table(["when", "stage", "target", "from", "to", "who", "why"], rows))


# ---------------------------------------------------------------------- product views
def _pct(v: object) -> str:
    return f"{100 * v:.1f} %" if isinstance(v, int | float) and not isinstance(v, bool) else ""


def _sexagesimal(ra: float, dec: float) -> str:
    h = (ra % 360.0) / 15.0
    hh, mm = int(h), int((h - int(h)) * 60)
    ss = (h - hh - mm / 60) * 3600
    sign = "-" if dec < 0 else "+"
    d = abs(dec)
    dd, dm = int(d), int((d - int(d)) * 60)
    ds = (d - dd - dm / 60) * 3600
    return f"{hh:02d}:{mm:02d}:{ss:05.2f} {sign}{dd:02d}:{dm:02d}:{ds:04.1f}"


def _count(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, list | dict):
        return len(v)
    return None


def ms_summary_view(p: dict, path: Path) -> dict:
    """Numbers from the ms_summary metrics, details from its JSON file when readable.

    Reads (all optional) JSON keys: ``fields`` (list of names or of {name, intents}, or a
    dict name -> intents), ``scans``, ``spws`` (list of dicts or dict id -> dict),
    ``antennas``, ``time_range``/``start``/``end``.
    """
    mets = p.get("metrics") or {}
    data: dict = {}
    error = ""
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            data = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError) as exc:
            error = f"{path.name}: unreadable JSON ({exc})"
    elif path.suffix == ".json":
        error = f"{path.name} is missing on disk"
    fields: list[list[str]] = []
    raw_fields = data.get("fields")
    if isinstance(raw_fields, dict):
        raw_fields = [{"name": k, **(v if isinstance(v, dict) else {"intents": v})}
                      for k, v in raw_fields.items()]
    if isinstance(raw_fields, list):
        for f in raw_fields:
            if isinstance(f, dict):
                intents = f.get("intents") or f.get("intent") or ""
                if isinstance(intents, list):
                    intents = ", ".join(map(str, intents))
                fields.append([str(f.get("name", f.get("id", ""))), str(intents)])
            else:
                fields.append([str(f), ""])
    raw_spws = data.get("spws") or data.get("spectral_windows")
    if isinstance(raw_spws, dict):
        raw_spws = [{"id": k, **v} if isinstance(v, dict) else {"id": k, "value": v}
                    for k, v in raw_spws.items()]
    spws = [s for s in raw_spws if isinstance(s, dict)] if isinstance(raw_spws, list) else []
    spw_cols: list[str] = []
    for s in spws:
        for k, v in s.items():
            if k not in spw_cols and not isinstance(v, dict | list):
                spw_cols.append(k)
    spw_cols = spw_cols[:9]
    tr = data.get("time_range")
    if isinstance(tr, list | tuple) and len(tr) == 2:
        tr = f"{tr[0]} \u2013 {tr[1]}"
    elif data.get("start") and data.get("end"):
        tr = f"{data['start']} \u2013 {data['end']}"
    name = data.get("ms") or data.get("name") or data.get("eb") or path.name
    name = Path(str(name)).name.removesuffix(".json")

    def pick(metric_key: str, data_key: str) -> Any:
        v = mets.get(metric_key)
        return v if v is not None else _count(data.get(data_key))

    return {
        "eb": name,
        "n_fields": pick("n_fields", "fields"),
        "n_scans": pick("n_scans", "scans"),
        "n_spws": pick("n_spws", "spws"),
        "n_antennas": pick("n_antennas", "antennas"),
        "flagged_fraction": mets.get("flagged_fraction", data.get("flagged_fraction")),
        "datacolumn": mets.get("datacolumn", data.get("datacolumn")),
        "time_range": str(tr or ""),
        "fields": fields,
        "spws": spws,
        "spw_cols": spw_cols,
        "error": error,
    }


def _ratio(a: Any, b: Any) -> str:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return ""
    return f"\u00d7{b / a:.2f}" if a else ""


def _beam_text(b: Any) -> str:
    if isinstance(b, list | tuple) and len(b) >= 2:
        try:
            txt = f"{float(b[0]):.3g}\u2033 \u00d7 {float(b[1]):.3g}\u2033"
            if len(b) > 2 and b[2] is not None:
                txt += f", {float(b[2]):.0f}\u00b0"
            return txt
        except (TypeError, ValueError):
            return str(b)
    return "" if b is None else str(b)


def _beam_change(a: Any, b: Any) -> str:
    try:
        area_a = float(a[0]) * float(a[1])
        area_b = float(b[0]) * float(b[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return ""
    return f"area {100 * (area_b / area_a - 1):+.1f} %" if area_a else ""


def selfcal_table(m: dict) -> str:
    """The selfcal_summary metrics as a before/after table."""
    ok = m.get("success")
    head = [("band", m.get("band")),
            ("result", Raw(badge("done") + " self-cal applied") if ok is True else
             Raw(badge("skipped") + " not applied") if ok is False else None),
            ("reason", m.get("reason")), ("final mode", m.get("final_mode")),
            ("solints attempted", fmt_num(m.get("solints_attempted"))),
            ("solints accepted", fmt_num(m.get("solints_accepted")))]
    rows = []
    for label, a, b, fmt in (
        ("peak S/N", "snr_initial", "snr_final", fmt_num),
        ("rms", "rms_initial", "rms_final", fmt_flux),
        ("near-field S/N", "snr_nf_initial", "snr_nf_final", fmt_num),
        ("near-field rms", "rms_nf_initial", "rms_nf_final", fmt_flux),
    ):
        if m.get(a) is None and m.get(b) is None:
            continue
        rows.append([label, fmt(m.get(a)), fmt(m.get(b)), _ratio(m.get(a), m.get(b))])
    if m.get("beam_initial") is not None or m.get("beam_final") is not None:
        rows.append(["beam", _beam_text(m.get("beam_initial")), _beam_text(m.get("beam_final")),
                     _beam_change(m.get("beam_initial"), m.get("beam_final"))])
    out = '<div class="grid"><div>' + kv_table(head) + "</div>"
    if rows:
        out += "<div>" + table(["", "before", "after", "change"], rows) + "</div>"
    return out + "</div>"


def image_metrics_table(m: dict, spw: str | None) -> str:
    beam = m.get("beam")
    pairs = [
        ("spw", spw), ("line", m.get("line")),
        ("rms", fmt_flux(m.get("rms"))), ("theoretical rms", fmt_flux(m.get("theoretical_rms"))),
        ("rms / theoretical", fmt_num(m.get("rms_ratio"))), ("peak", fmt_flux(m.get("peak"))),
        ("dynamic range", fmt_num(m.get("dynamic_range"))),
        ("beam", _beam_text(beam) if beam is not None else None),
        ("integrated flux (imfit)", fmt_flux(m.get("flux_imfit"))),
    ]
    known = {"line", "rms", "theoretical_rms", "rms_ratio", "peak", "dynamic_range", "beam",
             "flux_imfit"}
    for k, v in m.items():
        if k not in known and not isinstance(v, dict):
            pairs.append((k, fmt_num(v)))
    return kv_table(pairs)
