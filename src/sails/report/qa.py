"""QA in the report: a score/verdict section per target page, the overview's score,
main-problem and verdict columns, the "needs a look" list and ``survey.csv``."""

from __future__ import annotations

from sails.catalog.qa import VERDICT_KIND, verdict_of
from sails.qa.scores import TITLES
from sails.qa.settings import QaSettings
from sails.qa.survey import QaRow, qa_row
from sails.report.data import Snapshot
from sails.report.html import esc, fmt_time

CSV_NAME = "survey.csv"


def verdict_history(events: list[dict], target: str) -> list[dict]:
    return [verdict_of(e) for e in events if e.get("kind") == VERDICT_KIND
            and (e.get("target") or "") in ("", target)]


def snapshot_rows(snap: Snapshot, qa: QaSettings) -> dict[tuple[str, str], QaRow]:
    out = {}
    for m in snap.mous:
        for u in m.units:
            if not u.target:
                continue
            hist = verdict_history(m.events, u.target)
            own = [v for v in hist if v["target"] == u.target]
            v = (own or hist or [None])[-1]
            out[(m.mous_id, u.target)] = qa_row(m.mous_id, u.target, m.stages + u.stages,
                                                u.products, v, qa)
    return out


def score_cell(r: QaRow | None) -> str:
    if r is None or r.score is None:
        return '<td class=num data-sort="-1">-</td>'
    cls = "good" if r.score >= 0.8 else ("warn" if r.score >= 0.5 else "bad")
    return f'<td class="num qa-{cls}" data-sort="{r.score:.3f}">{r.score:.2f}</td>'


def qa_html(r: QaRow | None, events: list[dict], target: str) -> str:
    """The target page's section: score, sub-scores with reasons, verdicts and notes."""
    if r is None:
        return ""
    out = ["<h2>Science readiness</h2>"]
    if r.score is None:
        out.append("<p class=note>not scored yet (no image products)</p>")
    else:
        main = (f" &middot; main problem: <b>{esc(TITLES.get(r.main_problem, r.main_problem))}"
                f"</b> ({esc(r.main_reason)})" if r.main_problem else "")
        out.append(f"<p>score <b>{r.score:.2f}</b>{main}</p>")
    if r.needs_look:
        out.append(f"<p class=note>needs a look: {esc(r.why_look)}</p>")
    hist = verdict_history(events, target)
    if hist:
        out.append("<table><thead><tr><th>when</th><th>who</th><th>verdict</th><th>stage</th>"
                   "<th>note</th></tr></thead><tbody>" + "".join(
                       f"<tr><td>{esc(fmt_time(v['at']))}</td><td>{esc(v['actor'])}</td>"
                       f"<td>{esc(v['verdict'])}</td><td>{esc(v['stage'] or '')}</td>"
                       f"<td>{esc(v['note'])}</td></tr>" for v in hist) + "</tbody></table>")
    else:
        out.append("<p class=note>no verdict yet: <code>sails qa TARGET --pass|--fail|--redo "
                   "STAGE --note ...</code></p>")
    return "".join(out)


def sub_scores_html(r: QaRow | None, reasons: list[tuple[str, float, str]]) -> str:
    if not reasons:
        return ""
    return ("<table><thead><tr><th>sub-score</th><th class=num>score</th><th>why</th></tr>"
            "</thead><tbody>" + "".join(
                f"<tr><td>{esc(TITLES.get(n, n))}</td><td class=num>{s:.2f}</td>"
                f"<td>{esc(why)}</td></tr>" for n, s, why in reasons) + "</tbody></table>")
