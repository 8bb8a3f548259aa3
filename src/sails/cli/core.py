"""Project-space and catalog commands: init, config, status, show, retry, reset."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from sails.catalog import check_stage
from sails.cli.app import app, console, state

config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

NEEDS_LOOK_SHOWN = 20  # rows of the "needs a look" list that `sails status` prints
STATUS_STYLE = {
    "pending": "dim",
    "running": "bold cyan",
    "done": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "blocked": "magenta",
}


def fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def styled(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


@app.command()
def init(directory: Path = typer.Argument(Path("."), help="Folder to create or complete.")):
    """Create (or complete) a project space: layout, commented sails.toml, catalog."""
    from sails.project import init_project

    project = init_project(directory)
    console.print(Text.assemble("project space ready at ", (str(project.root), "bold")))
    for d in project.layout_dirs():
        console.print(f"  {d.relative_to(project.root) if d.is_relative_to(project.root) else d}/")
    console.print(f"  catalog: {project.catalog_path}")


@config_app.command("show")
def config_show(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Print the effective configuration (sails.toml + SAILS_* overrides)."""
    project = state.project()
    data = project.settings.model_dump(mode="json")
    if as_json:
        print(json.dumps({"project": str(project.root), **data}, indent=2))
        return
    console.print(Text.assemble(("project space", "bold"), f" {project.root}"))
    for section, values in data.items():
        if isinstance(values, dict):
            console.print(Text(f"\n[{section}]", style="bold"))
            for k, v in values.items():
                console.print(f"  {k} = {json.dumps(v)}")
        else:
            console.print(f"{section} = {json.dumps(values)}")


def status_data(project) -> dict:
    cat = project.catalog
    per_mous = []
    for mous_id in cat.mous_ids():
        stages = cat.stages(mous_id)
        row: dict = {"mous_id": mous_id, "stages": {}}
        for s in stages:
            key = s.stage if not s.target else f"{s.stage}:{s.target}"
            row["stages"][key] = {
                "status": s.status, "reason": s.reason, "error": s.error,
                "attempts": s.attempts, "duration_s": s.duration_s,
            }
        per_mous.append(row)
    from dataclasses import asdict

    from sails.qa.survey import catalog_rows, needs_look

    rows = catalog_rows(cat, project.settings.qa)
    return {"project": str(project.root), "counts": cat.counts(), "mous": per_mous,
            "qa": [asdict(r) for r in rows],
            "needs_look": [f"{r.mous_id} {r.target}" for r in needs_look(rows)]}


def summarize_target_stages(stages, stage: str) -> Text:
    """One cell for a per-target stage: e.g. 'done 2, failed 1'."""
    states: dict[str, int] = {}
    for s in stages:
        if s.stage == stage:
            states[s.status] = states.get(s.status, 0) + 1
    return Text(", ").join(Text.assemble(styled(k), f" {v}") if len(states) > 1 or v > 1
                           else styled(k) for k, v in sorted(states.items())) or Text("-")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Counts per stage and state, then one row per MOUS."""
    from sails.catalog import STATUSES

    project = state.project()
    if as_json:
        print(json.dumps(status_data(project), indent=2, default=str))
        return
    cat = project.catalog
    counts = cat.counts()
    t = Table(title=f"stages in {project.root}")
    t.add_column("stage")
    for st in STATUSES:
        t.add_column(st, justify="right", style=STATUS_STYLE[st])
    for stage, row in counts.items():  # table order
        t.add_row(stage, *(str(row[st] or "") for st in STATUSES))
    console.print(t)
    m = Table(title="MOUS")
    m.add_column("MOUS")
    m.add_column("targets", justify="right")
    present = list(counts)
    for stage in present:
        m.add_column(stage)
    m.add_column("why", overflow="fold")
    for mous_id in cat.mous_ids():
        stages = cat.stages(mous_id)
        cells = []
        for stage in present:
            cells.append(summarize_target_stages(stages, stage))
        why = next((s.error or s.reason for s in stages
                    if s.status in ("failed", "blocked", "skipped") and (s.error or s.reason)), "")
        m.add_row(mous_id, str(len(cat.target_names(mous_id))), *cells, why or "")
    console.print(m)
    from sails.cli.qa import print_rows
    from sails.qa.survey import catalog_rows, needs_look

    look = needs_look(catalog_rows(cat, project.settings.qa))
    if look:
        print_rows(look[:NEEDS_LOOK_SHOWN], f"needs a look ({len(look)}; all: sails qa "
                   "--needs-look)")


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


@app.command()
def show(
    mous: str = typer.Argument(..., help="MOUS uid, either form."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Metadata, stage states with times and errors, results, events and products of a MOUS."""
    from sails.report.summary import target_results

    project = state.project()
    cat = project.catalog
    meta = cat.mous(mous)
    stages = cat.stages(mous)
    events = cat.events(mous)
    products = cat.products(mous)
    targets = cat.targets(mous)
    if as_json:
        print(json.dumps({
            "mous": meta, "targets": targets, "files": cat.files(mous),
            "stages": [s.__dict__ for s in stages], "events": events, "products": products,
            "sources": cat.sources_of(mous),
        }, indent=2, default=str))
        return
    console.print(Text.assemble((meta["mous_id"], "bold"),
                                f"  project {meta.get('project_code') or '-'}"))
    for k in ("obs_title", "num_asdms", "band_list", "preferred_datacolumn", "spw_remap",
              "srdp_url", "data_rights"):
        if meta.get(k) not in (None, ""):
            console.print(f"  {k}: {meta[k]}")
    names = sorted({t["alma_source_name"] for t in targets})
    console.print(f"  targets: {', '.join(names) or '-'}")
    for src in cat.sources_of(mous):
        if src["members"] > 1:  # a target alone is its own source: nothing to say
            console.print(f"  source of {src['target']}: {src['source']} "
                          f"({' + '.join(src['arrays'])}, {src['members']} members)")
    t = Table(title="stages")
    for col in ("stage", "target", "status", "attempts", "started", "finished",
                "MB predicted", "MB measured", "why"):
        t.add_column(col, overflow="fold")
    for s in stages:
        t.add_row(s.stage, s.target, styled(s.status), str(s.attempts), fmt_time(s.started_at),
                  fmt_time(s.finished_at), _mb(s.predicted_bytes), _mb(s.measured_bytes),
                  s.error or s.reason or "")
    console.print(t)
    results = target_results(products)
    if results:
        r = Table(title="results per target")
        for col in ("target", "self-cal", "continuum", "lines", "products"):
            r.add_column(col, overflow="fold")
        for row in results:
            r.add_row(row["target"], row["selfcal"] or "-", row["continuum"] or "-",
                      ", ".join(row["lines"]) or "-", str(row["products"]))
        console.print(r)
    if products:
        p = Table(title="products")
        for col in ("stage", "target", "kind", "path", "MB"):
            p.add_column(col, overflow="fold")
        for r in products:
            mb = _mb(r["bytes"]) + (" (removed)" if r.get("removed_at") else "")
            path = r["path"]
            if Path(path).is_relative_to(project.root):
                path = str(Path(path).relative_to(project.root))
            p.add_row(r["stage"], r["target"], r["kind"], path, mb)
        console.print(p)
    e = Table(title="events")
    for col in ("when", "stage", "target", "from", "to", "who", "why"):
        e.add_column(col, overflow="fold")
    for ev in events[-40:]:
        e.add_row(fmt_time(ev["at"]), ev["stage"] or "", ev["target"], ev["from_status"] or "",
                  ev["to_status"] or "", ev["actor"], ev["reason"] or "")
    console.print(e)


@app.command()
def retry(
    mous: str = typer.Argument(..., help="MOUS uid, either form."),
    stage: str | None = typer.Option(None, "--stage", "-s", help="Only this stage."),
):
    """Put failed/blocked stages (and skipped ones, with --stage) of a MOUS back to pending."""
    if stage:
        check_stage(stage)
    rows = state.project().catalog.retry(mous, stage)
    if not rows:
        console.print("nothing to retry")
    for r in rows:
        console.print(f"{r.label}: pending")


@app.command()
def reset(
    mous: str = typer.Argument(..., help="MOUS uid, either form."),
    stage: str = typer.Option(..., "--stage", "-s", help="Stage to redo (downstream follows)."),
    force: bool = typer.Option(False, "--force", help="Also reset a running stage."),
):
    """Send a stage and every stage that depends on it (of a MOUS) back to pending.

    To redo self-calibration itself, reset auto_selfcal (selfcal only re-reads its result).
    """
    check_stage(stage)
    rows = state.project().catalog.reset(mous, stage, force=force)
    if not rows:
        console.print("nothing to reset")
    for r in rows:
        console.print(f"{r.label}: pending")
