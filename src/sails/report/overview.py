"""The overview page (every MOUS and target, coloured stage cells, filters, counts) and the
survey page (survey-wide plots)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sails.pipeline import PIPELINE, Scope
from sails.report.assets import FILTER_JS
from sails.report.data import Snapshot, overall_state, stage_duration
from sails.report.html import (
    STATE_ORDER,
    badge,
    esc,
    figure,
    fmt_duration,
    fmt_num,
    fmt_time,
    page,
    state_cell,
)
from sails.report.qa import score_cell


def _stage_columns(snap: Snapshot) -> list[str]:
    seen = set()
    for m in snap.mous:
        seen.update(s["stage"] for s in m.stages)
        for u in m.units:
            seen.update(s["stage"] for s in u.stages)
    cols = [s for s in PIPELINE.names if s in seen]  # the stage table's order
    return cols or [s.name for s in PIPELINE.at_scope(Scope.MOUS)]


def _why(stage_rows: list[dict]) -> tuple[str, str]:
    """The first error (failed/blocked) or skip reason, prefixed with its stage."""
    for wanted in (("failed",), ("blocked",), ("skipped",)):
        for s in stage_rows:
            if s["status"] in wanted and (s.get("error") or s.get("reason")):
                text = s.get("error") or s.get("reason")
                return f"{s['stage']}: {text}", s["status"]
    return "", ""


def overview_html(snap: Snapshot, project_name: str, root_label: str,
                  qa_rows: dict | None = None) -> str:
    now = snap.taken_at
    cols = _stage_columns(snap)
    counts: dict[str, Counter] = {c: Counter() for c in cols}
    totals: Counter = Counter()
    bands: set[str] = set()
    projects: set[str] = set()
    rows = []
    qa_rows = qa_rows or {}
    verdicts: set[str] = set()
    look: list = []
    n_targets = 0
    overall_counts: Counter = Counter()
    for m in snap.mous:
        mstages = {s["stage"]: s for s in m.stages}
        for s in m.stages:
            counts.setdefault(s["stage"], Counter())[s["status"]] += 1
            totals[s["status"]] += 1
        proj = m.meta.get("project_code") or ""
        projects.add(proj)
        for u in m.units:
            n_targets += bool(u.target)
            for s in u.stages:
                counts.setdefault(s["stage"], Counter())[s["status"]] += 1
                totals[s["status"]] += 1
            ustages = {s["stage"]: s for s in u.stages}
            all_rows = m.stages + u.stages
            states = sorted({s["status"] for s in all_rows})
            band = u.band
            bands.update(band.split())
            cells = "".join(state_cell(mstages.get(c) or ustages.get(c), now) for c in cols)
            wall = sum(d for d in (stage_duration(s, now) for s in all_rows) if d is not None)
            why, kind = _why(all_rows)
            short = why if len(why) <= 160 else why[:157] + "..."
            overall = overall_state(all_rows)
            overall_counts[overall] += 1
            search = " ".join([m.mous_id, u.target, proj, band]).lower()
            name = (f'<a href="targets/{esc(u.key)}.html">{esc(u.target)}</a>' if u.target else
                    f'<a href="targets/{esc(u.key)}.html" class=muted>(no targets yet)</a>')
            q = qa_rows.get((m.mous_id, u.target))
            verdict = (q.verdict if q else "") or "none"
            verdicts.add(verdict)
            if q is not None and q.needs_look:
                look.append((q, u.key))
            problem = f"{q.main_problem}: {q.main_reason}" if q and q.main_problem else ""
            note = q.note if q else ""
            rows.append(
                f'<tr data-states="{esc(" ".join(states))}" data-band="{esc(band)}" '
                f'data-project="{esc(proj)}" data-search="{esc(search)}" '
                f'data-overall="{esc(overall)}" data-verdict="{esc(verdict)}" '
                f'data-look="{"yes" if q is not None and q.needs_look else "no"}">'
                f"<td>{esc(proj)}</td><td class=mono>{esc(m.mous_id)}</td><td>{name}</td>"
                f"<td>{esc(band)}</td>{cells}{score_cell(q)}"
                f'<td class=reason title="{esc(problem)}">{esc(problem[:120])}</td>'
                f'<td title="{esc(note)}">{esc("" if verdict == "none" else verdict)}'
                f'{(" - " + esc(note[:80])) if note else ""}</td>'
                f'<td class=num data-sort="{wall:.1f}">{esc(fmt_duration(wall) if wall else "")}'
                f'</td><td class="reason{" skip" if kind == "skipped" else ""}" '
                f'title="{esc(why)}">{esc(short)}</td></tr>')

    by_overall = " &middot; ".join(
        f"{badge(st)} {overall_counts[st]}" for st in STATE_ORDER if overall_counts[st])
    chips = '<span class="muted">stage rows:</span>' + "".join(
        f'<button class="chip st-{st}" data-state="{st}" type="button">{st}<b>{totals[st]}</b>'
        f"</button>" for st in STATE_ORDER)
    matrix = ("<table class=counts><thead><tr><th>stage</th>"
              + "".join(f"<th class=num>{st}</th>" for st in STATE_ORDER)
              + "</tr></thead><tbody>"
              + "".join(f"<tr><td>{c}</td>" + "".join(
                  f'<td class="num{" st-" + st if counts[c][st] else ""}">'
                  f'{counts[c][st] or ""}</td>' for st in STATE_ORDER) + "</tr>"
                  for c in cols)
              + "</tbody></table>")

    def options(values: set[str], label: str) -> str:
        opts = "".join(f'<option value="{esc(v)}">{esc(v)}</option>'
                       for v in sorted(values - {""}))
        return f'<option value="">any {label}</option>{opts}'

    state_opts = "".join(f'<option value="{st}">{st}</option>' for st in STATE_ORDER)
    filters = (
        '<div class="filters">'
        f'<label>State <select id="f-state"><option value="">any state</option>{state_opts}'
        "</select></label>"
        f'<label>Band <select id="f-band">{options(bands, "band")}</select></label>'
        f'<label>Project <select id="f-project">{options(projects, "project")}</select></label>'
        f'<label>Verdict <select id="f-verdict">{options(verdicts, "verdict")}</select></label>'
        '<label>Needs a look <select id="f-look"><option value="">any</option>'
        '<option value="yes">yes</option><option value="no">no</option></select></label>'
        '<label>Search <input id="f-text" type="search" placeholder="MOUS, target..."></label>'
        f'<span><b id="shown">{len(rows)}</b> of {len(rows)} rows shown</span></div>')
    head = ("<tr><th>project</th><th>MOUS</th><th>target</th><th>band</th>"
            + "".join(f"<th>{c}</th>" for c in cols)
            + "<th class=num>score</th><th>main problem</th><th>verdict</th>"
            + "<th class=num>wall time</th><th>error / skip reason</th></tr>")
    look.sort(key=lambda qk: -qk[0].priority)
    look_html = ("<h2>Needs a look</h2><ol class=look>" + "".join(
        f'<li><a href="targets/{esc(k)}.html">{esc(q.target)}</a> '
        f'<span class=mono>{esc(q.mous_id)}</span>: {esc(q.why_look)}'
        + (f" &middot; {esc(q.main_reason)}" if q.main_reason else "") + "</li>"
        for q, k in look[:50]) + "</ol>"
        + (f"<p class=note>{len(look) - 50} more: filter 'needs a look'</p>"
           if len(look) > 50 else "")) if look else ""
    body = (
        f"<h1>{esc(project_name)}</h1>"
        f'<p class="sub">{len(snap.mous)} MOUS &middot; {n_targets} targets &middot; '
        f"catalog {esc(root_label)} &middot; snapshot {esc(fmt_time(now))}</p>"
        + (f'<p class="sub">targets by overall state: {by_overall}</p>' if by_overall else "")
        + f'<div class="chips">{chips}</div>{matrix}{look_html}'
        '<p class=sub>survey state as CSV: <a href="survey.csv">survey.csv</a></p>'
        f'{filters}'
        f'<table id="overview" class="sortable"><thead>{head}</thead><tbody>'
        + "".join(rows) + "</tbody></table>"
        + ("" if rows else "<p class=note>the catalog holds no MOUS yet: add some with "
           "`sails ingest`</p>"))
    return page(f"{project_name}: survey overview", body, root="", active="index",
                extra_js=FILTER_JS)


def survey_html(snap: Snapshot, project_name: str, plots: dict[str, Path | None],
                facts: list[tuple[str, str]]) -> str:
    captions = {
        "snr_gain": ("Self-calibration S/N gain", "no self-calibration results yet"),
        "rms": ("Image rms against theoretical sensitivity", "no image metrics yet"),
        "walltime": ("Stage wall times", "no finished stages yet"),
        "sky": ("Sky map of targets, coloured by state", "no target positions yet"),
    }
    parts = [f"<h1>{esc(project_name)}: survey plots</h1>",
             f'<p class="sub">snapshot {esc(fmt_time(snap.taken_at))}</p>']
    if facts:
        parts.append("<table class=kv>" + "".join(
            f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts) + "</table>")
    parts.append('<div class="grid">')
    for key, (title, empty) in captions.items():
        p = plots.get(key)
        parts.append(f"<div><h3>{esc(title)}</h3>")
        parts.append(figure(f"plots/{p.name}", alt=title) if p else
                     f"<p class=note>{esc(empty)}</p>")
        parts.append("</div>")
    parts.append("</div>")
    return page(f"{project_name}: survey plots", "".join(parts), root="", active="survey")


def fmt_median(values: list[float], digits: int = 3) -> str:
    if not values:
        return ""
    v = sorted(values)
    mid = len(v) // 2
    med = v[mid] if len(v) % 2 else 0.5 * (v[mid - 1] + v[mid])
    return fmt_num(float(med), digits)
