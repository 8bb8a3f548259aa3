"""``sails qa``: scores, human verdicts (pass / fail / redo a stage) and the survey CSV."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path

import typer
from rich.table import Table

from sails.cli.app import app, console, state
from sails.errors import UserInputError

QA_USER_ENV = "SAILS_QA_USER"  # who gives the verdict (default: the login name)


def _who() -> str:
    return os.environ.get(QA_USER_ENV) or getpass.getuser()


def _resolve(cat, what: str, mous: str | None) -> tuple[str, str]:
    """(mous_id, target) for a MOUS uid or a target name (``--mous`` when ambiguous)."""
    from sails.ids import mous_uri

    if what.startswith("uid:") or what.startswith("uid___"):
        return cat.mous(what)["mous_id"], ""
    hits = [m for m in cat.mous_ids() if what in cat.target_names(m)]
    if mous:
        m = mous_uri(mous)
        if m not in hits:
            raise UserInputError(f"target {what!r} is not in MOUS {m}")
        return m, what
    if not hits:
        raise UserInputError(f"no target or MOUS named {what!r} in the catalog",
                             hint="see `sails qa` for the targets")
    if len(hits) > 1:
        raise UserInputError(f"target {what!r} is in {len(hits)} MOUS ({', '.join(hits)})",
                             hint="name one with --mous")
    return hits[0], what


def print_rows(rows, title: str) -> None:
    t = Table(title=title)
    for col in ("MOUS", "target", "state", "score", "main problem", "verdict", "note / why"):
        t.add_column(col, overflow="fold")
    for r in rows:
        score = "-" if r.score is None else f"{r.score:.2f}"
        problem = f"{r.main_problem}: {r.main_reason}" if r.main_problem else ""
        verdict = f"{r.verdict} ({r.verdict_by})" if r.verdict else ""
        t.add_row(r.mous_id, r.target, r.state, score, problem, verdict,
                  r.note or r.why_look or r.error)
    console.print(t)


@app.command()
def qa(
    what: str | None = typer.Argument(None, help="A target name or a MOUS uid; none: every "
                                      "target."),
    mous: str | None = typer.Option(None, "--mous", "-m", help="The MOUS, when the target "
                                    "name is in several."),
    passed: bool = typer.Option(False, "--pass", help="Record: science-ready."),
    failed: bool = typer.Option(False, "--fail", help="Record: not usable."),
    redo: str | None = typer.Option(None, "--redo", help="Record and reset this stage (the "
                                    "note is the reason)."),
    note: str = typer.Option("", "--note", "-n", help="Why (kept with the verdict)."),
    verdict: str | None = typer.Option(None, "--verdict", help="List only: pass, fail, "
                                       "redo or none."),
    below: float | None = typer.Option(None, "--below", help="List only scores below this."),
    look: bool = typer.Option(False, "--needs-look", help="List only what needs a look."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Write the survey's state as "
                                         "CSV here."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Show science-readiness scores, or record a verdict: sails qa TARGET --pass --note ..."""
    from sails.catalog import check_stage
    from sails.qa.survey import catalog_rows, filter_rows, needs_look, write_csv

    project = state.project()
    cat = project.catalog
    chosen = [k for k, v in (("pass", passed), ("fail", failed), ("redo", redo)) if v]
    if len(chosen) > 1:
        raise UserInputError("give one verdict: --pass, --fail or --redo STAGE")
    if chosen:
        if what is None:
            raise UserInputError("a verdict needs a target or MOUS", hint="sails qa TARGET "
                                 "--pass --note '...'")
        mous_id, target = _resolve(cat, what, mous)
        stage = check_stage(redo) if redo else None
        cat.record_verdict(mous_id, target, chosen[0], note, _who(), stage=stage)
        label = f"{mous_id} {target}".strip()
        console.print(f"{label}: verdict {chosen[0]}" + (f" ({note})" if note else ""),
                      soft_wrap=True)
        if stage:
            rows = cat.reset(mous_id, stage, actor=_who(), target=target or None,
                             reason=f"QA redo: {note}" if note else "QA redo requested")
            for r in rows:
                console.print(f"{r.label}: pending")
        return
    rows = catalog_rows(cat, project.settings.qa)
    if what is not None:
        mous_id, target = _resolve(cat, what, mous)
        rows = [r for r in rows if r.mous_id == mous_id and (not target or r.target == target)]
    rows = filter_rows(rows, verdict=verdict, below=below)
    if look:
        rows = needs_look(rows)
    if csv_path is not None:
        write_csv(rows, csv_path)
        console.print(f"wrote {len(rows)} row(s) to {csv_path}")
        return
    if as_json:
        from dataclasses import asdict

        print(json.dumps([asdict(r) for r in rows], indent=2, default=str))
        return
    print_rows(rows, "science readiness")
