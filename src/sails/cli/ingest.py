"""Archive ingest commands: ``sails ingest query|csv|obscore|datalink|srdp`` and
``sails mous set-spw-remap``. Parsing and printing only; the work is in :mod:`sails.archive`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from sails.cli.app import app, console, state
from sails.errors import UserInputError

ingest_app = typer.Typer(help="Bring ALMA archive metadata and file lists into the catalog.",
                         no_args_is_help=True)
mous_app = typer.Typer(help="Per-MOUS settings.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
app.add_typer(mous_app, name="mous")

_RADIUS = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(deg|d|arcmin|am|'|arcsec|as|\")?"
                     r"\s*$")
_RADIUS_DEG = {"deg": 1.0, "d": 1.0, "arcmin": 1 / 60, "am": 1 / 60, "'": 1 / 60,
               "arcsec": 1 / 3600, "as": 1 / 3600, '"': 1 / 3600, None: 1 / 60}
MAX_ROWS_SHOWN = 40


# ---------------------------------------------------------------------- argument parsing
def parse_angle(text: str, what: str) -> float:
    """Degrees from '204.25', '13h37m00.9s', '13:37:00.9' (RA) or '-29d52m' (Dec)."""
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    from astropy import units as u
    from astropy.coordinates import Angle

    try:
        unit = u.hourangle if what == "RA" and (":" in s or "h" in s.lower()) else u.deg
        return float(Angle(s, unit=unit).deg)
    except Exception:
        raise UserInputError(f"{what} {text!r} is not an angle",
                             hint="give degrees (204.25) or sexagesimal (13h37m00.9s)") from None


def parse_radius(text: str) -> float:
    """Degrees from '1arcmin', '30arcsec', '0.01deg' or a bare number of arcmin."""
    m = _RADIUS.match(text)
    if not m:
        raise UserInputError(f"radius {text!r} is not an angle",
                             hint="e.g. 1arcmin, 30arcsec, 0.02deg (bare numbers are arcmin)")
    return float(m.group(1)) * _RADIUS_DEG[m.group(2)]


def expand_names(values: list[str]) -> list[str]:
    """``--name`` values; ``@FILE`` reads one name per line (blank lines and # comments
    skipped)."""
    out: list[str] = []
    for v in values:
        if v.startswith("@"):
            path = Path(v[1:])
            try:
                lines = path.read_text(encoding="utf-8-sig").splitlines()
            except OSError as exc:
                raise UserInputError(f"cannot read the names file {path}: "
                                     f"{exc.strerror or exc}") from None
            out += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        else:
            out.append(v)
    return out


# ---------------------------------------------------------------------- printing
def _size(n: int | None, n_files: int = 1) -> str:
    from sails.archive.ingest import human_bytes

    if not n_files:
        return "-"
    return "?" if n is None else human_bytes(n)


def _list(ids: list[str], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit
                                     else "")


def print_records(recordset) -> None:
    t = Table(title=f"{len(recordset.records)} target rows from {recordset.source}")
    for col in ("MOUS", "project", "source", "spw", "band", "res [\"]", "GHz"):
        t.add_column(col, overflow="fold")
    for r in recordset.records[:MAX_ROWS_SHOWN]:
        tg = r.target
        lo, hi = tg.get("min_freq_ghz"), tg.get("max_freq_ghz")
        res = tg.get("ang_res_arcsec")
        t.add_row(r.mous["mous_id"], r.project["project_code"], tg["alma_source_name"],
                  "" if tg.get("spw_id") is None else str(tg["spw_id"]),
                  tg.get("band_list") or "", f"{res:.3g}" if res else "",
                  f"{lo:.2f}-{hi:.2f}" if lo and hi else "")
    console.print(t)
    if len(recordset.records) > MAX_ROWS_SHOWN:
        console.print(f"... and {len(recordset.records) - MAX_ROWS_SHOWN} more rows")


def print_summary(summary) -> None:
    verb = "would be" if summary.dry_run else "was"
    t = Table(title="ingest summary" + (" (dry run: nothing written)" if summary.dry_run
                                        else ""))
    t.add_column("")
    for col in ("added", "updated", "unchanged"):
        t.add_column(col, justify="right")
    for label, c in (("projects", summary.projects), ("MOUS", summary.mous),
                     ("targets", summary.targets), ("files", summary.files)):
        t.add_row(label, str(c.added), str(c.updated), str(c.unchanged))
    console.print(t)
    if summary.duplicates:
        console.print(f"{summary.duplicates} duplicate row(s) merged")
    if summary.skipped:
        console.print(Text.assemble((f"{len(summary.skipped)} bad row(s) skipped:", "yellow"),
                                    " " + "; ".join(summary.skipped[:5])
                                    + (" ..." if len(summary.skipped) > 5 else "")))
    if summary.raw_only:
        n = len(summary.raw_only)
        console.print(Text.assemble(
            (f"{n} MOUS {'have' if n != 1 else 'has'} only raw ASDMs", "magenta"),
            " (the restore stage restores their calibration from the delivery; an SRDP "
            f"restore registered with `sails ingest srdp MOUS URL` wins): "
            f"{_list(summary.raw_only)}"))
    if summary.unblocked:
        console.print(f"verify {verb} unblocked for {len(summary.unblocked)} MOUS (SRDP "
                      f"restore known, or restored by the restore stage): "
                      f"{_list(summary.unblocked)}")
    for w in summary.warnings[:20]:
        console.print(Text.assemble(("warning:", "yellow"), f" {w}"))
    if summary.plans:
        p = Table(title="what each MOUS will download")
        p.add_column("MOUS")
        p.add_column("source")
        p.add_column("files", justify="right")
        p.add_column("size", justify="right")
        p.add_column("plan", overflow="fold")
        for plan in summary.plans[:MAX_ROWS_SHOWN]:
            p.add_row(plan.mous_id, plan.source, str(len(plan.files)),
                      _size(plan.total_bytes, len(plan.files)),
                      plan.describe())
        console.print(p)
        if len(summary.plans) > MAX_ROWS_SHOWN:
            console.print(f"... and {len(summary.plans) - MAX_ROWS_SHOWN} more MOUS")


def _finish(project, recordset, *, datalink: bool, datalink_url: str | None, dry_run: bool,
            skip_bad: bool, as_json: bool) -> None:
    from sails.archive import ingest_recordset

    if not skip_bad:
        recordset.raise_if_problems()
    if dry_run and not as_json:
        print_records(recordset)
    if datalink and not dry_run and recordset.records and not as_json:
        n = len({r.mous["mous_id"] for r in recordset.records})
        console.print(f"resolving DataLink files of {n} MOUS ...")
    summary = ingest_recordset(project.catalog, recordset, project.settings.archive,
                               datalink=datalink, datalink_url=datalink_url, dry_run=dry_run,
                               skip_bad=skip_bad)
    changes = []
    if not dry_run:  # new MOUS may join (or re-open) sources
        from sails.cli.sources import regroup

        changes = regroup(project, actor="ingest").changes
    if as_json:
        print(json.dumps(dict(summary.as_dict(), sources=[c.as_dict() for c in changes]),
                         indent=2))
    else:
        print_summary(summary)
        if changes:
            from sails.cli.sources import print_changes

            print_changes(changes, dry_run=False)


_NO_DATALINK = typer.Option(False, "--no-datalink",
                            help="Do not resolve DataLink file lists now.")
_DATALINK_URL = typer.Option(None, "--datalink-url",
                             help="DataLink sync endpoint (default: archive.datalink_url).")
_DRY_RUN = typer.Option(False, "--dry-run",
                        help="Show what would be ingested; write nothing.")
_SKIP_BAD = typer.Option(False, "--skip-bad",
                         help="Ingest the good rows and report the bad ones (default: refuse).")
_JSON = typer.Option(False, "--json", help="Machine-readable summary.")


# ---------------------------------------------------------------------- commands
@ingest_app.command("query")
def ingest_query(
    name: list[str] = typer.Option([], "--name", "-n", help="Source name (substring, any "
                                   "case); repeat for several, or @FILE with one per line."),
    position: tuple[str, str] | None = typer.Option(
        None, "--position", help="RA DEC (degrees or sexagesimal), ICRS.", show_default=False),
    radius: str = typer.Option("1arcmin", "--radius", help="Search radius around --position "
                               "(e.g. 1arcmin, 30arcsec, 0.02deg; bare numbers are arcmin)."),
    project_code: list[str] = typer.Option([], "--project", "--project-code", help="Project "
                                           "code, e.g. 2017.1.00079.S; repeatable."),
    keyword: list[str] = typer.Option([], "--keyword", "-k", help="Science keyword or "
                                      "category (substring); repeatable."),
    band: list[int] = typer.Option([], "--band", "-b", help="ALMA band 1-10; repeatable."),
    public_only: bool = typer.Option(False, "--public-only", help="Only public data."),
    min_resolution: float | None = typer.Option(None, "--min-resolution",
                                                help="Coarsest-first limit: resolution >= this"
                                                " (arcsec)."),
    max_resolution: float | None = typer.Option(None, "--max-resolution",
                                                help="Resolution <= this (arcsec)."),
    tap_url: str | None = typer.Option(None, "--tap-url",
                                       help="TAP service (default: archive.tap_url)."),
    datalink_url: str | None = _DATALINK_URL,
    no_datalink: bool = _NO_DATALINK,
    dry_run: bool = _DRY_RUN,
    show_query: bool = typer.Option(False, "--show-query", help="Print the ADQL sent."),
    as_json: bool = _JSON,
):
    """Query the ALMA archive's ObsCore table and ingest the result."""
    from sails.archive import QueryFilters, build_query, query_archive

    filters = QueryFilters(
        names=expand_names(name),
        position=(parse_angle(position[0], "RA"), parse_angle(position[1], "Dec"))
        if position else None,
        radius_deg=parse_radius(radius),
        projects=list(project_code), keywords=list(keyword), bands=list(band),
        public_only=public_only, min_resolution=min_resolution,
        max_resolution=max_resolution,
    )
    adql = build_query(filters)  # validates before we open anything
    project = state.project()
    if show_query and not as_json:
        console.print(f"ADQL: {adql}", soft_wrap=True)
    _, table = query_archive(adql, project.settings.archive, tap_url)
    recordset = table.records()
    if not as_json:
        console.print(f"{recordset.rows_read} row(s) from {table.source}")
    _finish(project, recordset, datalink=not no_datalink, datalink_url=datalink_url,
            dry_run=dry_run, skip_bad=False, as_json=as_json)


@ingest_app.command("csv")
def ingest_csv(
    file: Path = typer.Argument(..., help="ALminer CSV (its column names, plus ObsCore ones)."),
    datalink_url: str | None = _DATALINK_URL,
    no_datalink: bool = _NO_DATALINK,
    dry_run: bool = _DRY_RUN,
    skip_bad: bool = _SKIP_BAD,
    as_json: bool = _JSON,
):
    """Ingest an ALminer CSV (MOUS_id, ALMA_source_name, RAJ2000, DEJ2000, obs_id, ...)."""
    from sails.archive import read_csv

    recordset = read_csv(file).records()
    _finish(state.project(), recordset, datalink=not no_datalink, datalink_url=datalink_url,
            dry_run=dry_run, skip_bad=skip_bad, as_json=as_json)


@ingest_app.command("obscore")
def ingest_obscore(
    file: Path = typer.Argument(..., help="ObsCore result: VOTable, ECSV, CSV or ASCII table."),
    datalink_url: str | None = _DATALINK_URL,
    no_datalink: bool = _NO_DATALINK,
    dry_run: bool = _DRY_RUN,
    skip_bad: bool = _SKIP_BAD,
    as_json: bool = _JSON,
):
    """Ingest an ObsCore table saved from a TAP query (VOTable or astropy ASCII/ECSV)."""
    from sails.archive import read_obscore_file

    recordset = read_obscore_file(file).records()
    _finish(state.project(), recordset, datalink=not no_datalink, datalink_url=datalink_url,
            dry_run=dry_run, skip_bad=skip_bad, as_json=as_json)


@ingest_app.command("datalink")
def ingest_datalink(
    mous: list[str] = typer.Argument(None, help="MOUS uids (default: every MOUS without "
                                     "files)."),
    datalink_url: str | None = _DATALINK_URL,
    as_json: bool = _JSON,
):
    """Resolve (again) the DataLink file lists of MOUS already in the catalog."""
    from sails.archive import ingest_files, resolve_datalink
    from sails.ids import mous_uri

    project = state.project()
    cat = project.catalog
    if mous:
        ids = [mous_uri(m) for m in mous]
        for m in ids:
            cat.mous(m)
    else:
        ids = [m for m in cat.mous_ids() if not cat.files(m)]
    if not ids:
        console.print("every MOUS already has its files; name MOUS to resolve them again")
        return
    files = resolve_datalink(ids, project.settings.archive, datalink_url)
    summary = ingest_files(cat, files)
    if as_json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print_summary(summary)


@ingest_app.command("srdp")
def ingest_srdp(
    mous: str = typer.Argument(..., help="MOUS uid, either form."),
    url: str = typer.Argument(..., help="URL of the SRDP restore (calibrated MS)."),
):
    """Register an SRDP restore URL; it takes precedence over raw data."""
    from sails.archive import register_srdp

    res = register_srdp(state.project().catalog, mous, url)
    console.print(f"{res.mous_id}: SRDP restore {'registered' if res.changed else 'unchanged'}"
                  f" ({res.url})", soft_wrap=True)
    if res.unblocked:
        console.print("  verify: blocked -> pending")
    if res.download_reset:
        console.print("  download: back to pending, to fetch the restore instead of raw data")
    if res.note:
        console.print(Text.assemble("  ", ("note:", "yellow"), f" {res.note}"))
    console.print(f"  will download: {res.plan.describe()}")


@mous_app.command("set-spw-remap")
def mous_set_spw_remap(
    mous: str = typer.Argument(..., help="MOUS uid, either form."),
    remap: str = typer.Argument(..., help='JSON object archive spw -> new id, e.g. '
                                '\'{"25": 0, "27": 1}\'; {} clears it.'),
):
    """Set how the archive's spw ids map to the ids of the downloaded data."""
    from sails.archive import set_spw_remap

    mapping, unknown = set_spw_remap(state.project().catalog, mous, remap)
    if mapping:
        shown = ", ".join(f"{k}->{v}" for k, v in sorted(mapping.items()))
        console.print(f"spw remap set: {shown}")
    else:
        console.print("spw remap cleared")
    if unknown:
        console.print(Text.assemble(("warning:", "yellow"),
                                    f" spw {', '.join(map(str, unknown))} not among this "
                                    "MOUS's science spws in the catalog"))
