"""``sails sources``: regroup the catalog's targets into sources and list them.

Parsing and printing only: the grouping is :mod:`sails.sources`, storing it
:mod:`sails.catalog.sources`.
"""

from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from sails.cli.app import app, console, state


def regroup(project, *, dry_run: bool = False, actor: str = "sails"):
    """Regroup with the project's ``[sources]`` rules (a :class:`Regrouped`)."""
    return project.catalog.regroup_sources(project.settings.sources.rules(), dry_run=dry_run,
                                           actor=actor)


def print_changes(changes, dry_run: bool) -> None:
    verb = "would change" if dry_run else "changed"
    if not changes:
        console.print("sources: no change" + (" (dry run)" if dry_run else ""))
        return
    console.print(f"sources: {len(changes)} {verb}")
    for c in changes:
        console.print(f"  {c.name}: {c.reason}")


@app.command()
def sources(
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the grouping rules and what "
                                 "they would change; write nothing."),
    show_all: bool = typer.Option(False, "--all", help="Also list sources of one member."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Group targets of different MOUS observing the same sky; list each source's members,
    arrays and spectral set-ups."""
    project = state.project()
    rules = project.settings.sources.rules()
    result = regroup(project, dry_run=dry_run, actor="user")
    changes = result.changes
    stored = {s["name"]: s for s in project.catalog.sources()}
    listed = [(n, g) for n, g in result.sources if show_all or len(g.members) > 1]
    if as_json:
        print(json.dumps({
            "dry_run": dry_run, "rules": rules.describe(),
            "changes": [c.as_dict() for c in changes],
            "sources": [_as_dict(n, g, stored) for n, g in listed]}, indent=2))
        return
    if dry_run:
        console.print(Text("grouping rules ([sources] in sails.toml)", style="bold"))
        for line in rules.describe():
            console.print(f"  {line}")
    t = Table(title=f"{len(listed)} source(s)" + ("" if show_all else
                                                 " of more than one member (--all: every one)"))
    for col in ("source", "members", "arrays", "set-ups", "why"):
        t.add_column(col, overflow="fold")
    for name, g in listed:
        members = "\n".join(f"{j.member.mous_id} {j.member.target} [{j.label}, {j.joined_by}]"
                            for j in g.members)
        setups = "\n".join(s.label + (f" ({'+'.join(s.arrays)})" if s.common else
                                      f" ({s.arrays[0]} only)") for s in g.setups)
        why = (stored.get(name) or {}).get("change_reason") or ""
        if dry_run:
            why = next((c.reason for c in changes if c.name == name), why)
        t.add_row(name, members, " + ".join(g.arrays), setups or "-", why)
    console.print(t)
    print_changes(changes, dry_run)


def _as_dict(name: str, g, stored: dict) -> dict:
    row = stored.get(name) or {}
    ra, dec = g.position
    return {"name": name, "ra": ra, "dec": dec, "arrays": list(g.arrays),
            "members_fp": g.fingerprint, "change_reason": row.get("change_reason"),
            "members": [{"mous_id": j.member.mous_id, "target": j.member.target,
                         "array": j.array, "config": j.config, "joined_by": j.joined_by,
                         "group_ous": j.member.group_ous, "is_mosaic": j.member.is_mosaic}
                        for j in g.members],
            "setups": [s.as_dict() for s in g.setups]}
