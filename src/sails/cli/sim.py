"""``sails sim``: write simulated ALMA MOUS (SRDP restore layout) with a known truth.

``sails sim [OPTIONS] OUTDIR`` generates; other subcommands (``sails sim serve``) register
on ``sim_app`` from their own modules. A first argument that is not a subcommand name runs
``generate``, so both forms work.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import typer
from rich.table import Table
from typer.core import TyperGroup

from sails.cli.app import app, console


class _GenerateByDefault(TyperGroup):
    """``sails sim OUTDIR`` means ``sails sim generate OUTDIR``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["generate", *args]
        return super().parse_args(ctx, args)


sim_app = typer.Typer(
    cls=_GenerateByDefault,
    help="Simulated ALMA datasets with a known truth (demo, tests, benchmarks).",
    no_args_is_help=True,
)
app.add_typer(sim_app, name="sim")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@sim_app.command("generate")
def generate(
    outdir: Path = typer.Argument(..., help="Folder to write the MOUS folders into."),
    preset: str = typer.Option(
        "demo", "--preset", "-P",
        help="tiny | raw | selfcal | demo | group | group-tiny (group: a 12-m mosaic, "
             "7-m and TP group OUS)."),
    seed: int = typer.Option(1, "--seed", help="Same seed, same visibilities (byte for byte)."),
    n_mous: int | None = typer.Option(None, "--n-mous", help="Number of MOUS."),
    targets: int | None = typer.Option(None, "--targets", help="Science targets per MOUS (1-3)."),
    ebs: int | None = typer.Option(None, "--ebs", help="Execution blocks per MOUS (1-3)."),
    band: int | None = typer.Option(None, "--band", help="ALMA band: 3, 6 or 7."),
    phase_rms: float | None = typer.Option(
        None, "--phase-rms", help="Residual antenna phase errors, rms in degrees."),
    antennas: int | None = typer.Option(None, "--antennas", help="Number of 12-m antennas."),
    names: list[str] | None = typer.Option(
        None, "--name", help="Target name (repeat; assigned in order). Spaces, quotes and +"
        " are fine; / and control characters are not."),
    datacolumn: str | None = typer.Option(
        None, "--datacolumn", help="corrected (raw DATA + calibrated CORRECTED_DATA) or data."),
    force: bool = typer.Option(False, "--force", help="Replace existing MOUS folders."),
) -> None:
    """Generate simulated MOUS under OUTDIR (one folder per MOUS, named by its uid)."""
    from sails.sim import customize, simulate_project
    from sails.sim import preset as get_preset
    from sails.sim.presets import RAW_PRESETS

    specs = customize(get_preset(preset), n_mous=n_mous, n_targets=targets, n_ebs=ebs,
                      band=band, phase_rms_deg=phase_rms, n_antennas=antennas,
                      names=names or None, datacolumn=datacolumn)
    for s in specs:
        s.validate()
    t0 = time.time()
    with console.status(f"simulating {len(specs)} MOUS with CASA..."):
        paths = simulate_project(outdir, specs, seed=seed, overwrite=force,
                                 raw=preset in RAW_PRESETS)
    from sails.sim import load_truth

    table = Table(title=f"simulated MOUS in {Path(outdir).resolve()}")
    for col in ("MOUS", "array", "label", "EBs", "targets", "phase rms", "size", "time"):
        table.add_column(col)
    for p in paths:
        truth = load_truth(p)
        table.add_row(truth["mous_uid"], truth.get("array", "12m"), truth["label"],
                      str(len(truth["ebs"])),
                      ", ".join(t["name"] for t in truth["targets"]),
                      f"{truth['phase_errors']['rms_deg']:g} deg",
                      f"{_size(p) / 1e6:.0f} MB", f"{truth['generation_s']:.1f} s")
    console.print(table)
    console.print(f"done in {time.time() - t0:.1f} s; archive view: "
                  f"{Path(outdir) / 'obscore.xml'}, {Path(outdir) / 'alminer.csv'}")
