"""Report and log commands: ``sails report``, ``sails logs``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.text import Text

from sails.cli.app import app, console, state


@app.command()
def report(
    open_browser: bool = typer.Option(False, "--open", help="Open the report in a browser."),
    force: bool = typer.Option(False, "--force", help="Rewrite every page and redraw every"
                               " preview, even unchanged ones."),
):
    """Write the static HTML survey report into reports/ (opens from disk, works offline)."""
    from sails.cli.progress import progress_bar
    from sails.report import generate

    project = state.project()
    with progress_bar("report pages") as update:
        result = generate(project, force=force, progress=update)
    console.print(
        Text.assemble("report written: ", (str(result.index), "bold"),
                      f" ({result.pages_written} page(s) written,"
                      f" {result.pages_unchanged} unchanged,"
                      f" {result.images_drawn} preview(s) drawn,"
                      f" {result.seconds:.1f} s)"), soft_wrap=True)
    if open_browser:
        import webbrowser

        url = result.index.resolve().as_uri()
        if not webbrowser.open(url):
            console.print(f"no browser found here; open {url} on a machine that has one")


def _style(line: str) -> str:
    if "SEVERE" in line or "Traceback" in line or line.startswith("ERROR"):
        return "red"
    if "WARN" in line:
        return "yellow"
    return ""


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        console.print(Text(line, style=_style(line)), soft_wrap=True, highlight=False)


@app.command()
def logs(
    mous: str = typer.Argument(..., help="MOUS uid, either form."),
    stage: str | None = typer.Option(None, "--stage", "-s", help="Only this stage's logs."),
    target: str | None = typer.Option(None, "--target", "-t", help="Only this target's logs."),
    every: bool = typer.Option(False, "--all", "-a", help="Every run, not just the newest."),
    lines: int = typer.Option(200, "--lines", "-n", help="Last N lines of each file (0: all)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines as the"
                                " logs grow (Ctrl-C to stop)."),
    only_list: bool = typer.Option(False, "--list", "-l", help="Only list the files."),
):
    """Print the stage and CASA logs of a MOUS from logs/<mous>/ (newest run per stage)."""
    from sails.report.logs import find_logs, log_dir, tail_lines
    from sails.report.logs import follow as follow_logs

    project = state.project()
    found = find_logs(project, mous, stage=stage, target=target, latest=not every)
    root = project.root
    if not found and not follow:
        what = " ".join(x for x in (f"stage {stage}" if stage else "",
                                    f"target {target}" if target else "") if x)
        console.print(f"no logs{' for ' + what if what else ''} in {log_dir(project, mous)}")
        return
    shown: dict[Path, int] = {}
    for f in found:
        rel = f.path.relative_to(root) if f.path.is_relative_to(root) else f.path
        if only_list:
            shown[f.path] = f.path.stat().st_size
            console.print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(f.mtime))}  "
                          f"{rel}", highlight=False, soft_wrap=True)
            continue
        console.rule(Text(str(rel), style="bold"), align="left")
        text, skipped, shown[f.path] = tail_lines(f.path, lines or None)
        if skipped:
            console.print(Text(f"... {skipped} earlier line(s); --lines 0 shows all",
                               style="dim"))
        _print_lines(text)
    if not follow:
        return
    d = log_dir(project, mous)

    def current() -> list[Path]:
        try:
            return [f.path for f in find_logs(project, mous, stage=stage, target=target,
                                              latest=False)]
        except Exception:  # noqa: BLE001 - the folder may appear later
            return []

    console.print(Text(f"following {d} (Ctrl-C to stop)", style="dim"))
    last: Path | None = None
    try:
        # Older runs (not printed) continue from their end; new files from their start.
        start = {p: p.stat().st_size for p in current()} | shown
        for path, chunk in follow_logs(current, offsets=start):
            if path != last:
                console.rule(Text(path.name, style="bold"), align="left")
                last = path
            _print_lines(chunk.splitlines())
            sys.stdout.flush()
    except KeyboardInterrupt:
        console.print(Text("stopped following", style="dim"))
