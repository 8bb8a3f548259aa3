"""Restore a raw delivery's calibration with the installed CASA wheels, or run its scriptForPI
with a pinned monolithic CASA.

``restore_eb`` (the wheels path): ``importasdm`` the ASDM with the delivery's options, put the
delivered flag version back (``flagmanager restore``), extract the calibration tables and
``applycal`` exactly as ``calapply.txt`` lists (its calls arrive already parsed, as literal
keyword arguments, from :mod:`sails.casa.delivery`). Nothing from the delivery is executed.
The MS is written inside the job's staging folder, so a killed job leaves none in place.

``run_pinned_casa`` (the pinned path): ``<casa> --pipeline -c <scriptForPI>`` in the
delivery's ``script/`` folder, as ALMA's instructions say; the measurement sets it writes to
``../calibrated/`` are moved into the staging folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from sails.casa.contract import BadInput
from sails.casa.tools import opened

CALTABLES_DIR = "caltables"
FLAG_VERSION_LIST = "FLAG_VERSION_LIST"
PREFERRED_FLAG_VERSIONS = ("Pipeline_Final", "Original")


def _extract(tgz: str, dest: Path) -> list[str]:
    """Extract a delivered tarball under ``dest`` (no links, no paths outside)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tgz) as tf:
        for m in tf.getmembers():
            if m.issym() or m.islnk() or m.name.startswith("/") or ".." in m.name.split("/"):
                raise BadInput(f"{Path(tgz).name}: unsafe member {m.name!r}")
        tf.extractall(dest, filter="data")
        return sorted({Path(n).parts[0] for n in tf.getnames()})


def _du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*")) if path.exists() else 0


def _flag_versions(folder: Path) -> list[str]:
    listing = folder / FLAG_VERSION_LIST
    if not listing.is_file():
        return []
    return [ln.split(":", 1)[0].strip() for ln in listing.read_text().splitlines()
            if ln.strip()]


def _command(task: str, kwargs: dict[str, Any]) -> str:
    return f"{task}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def restore_eb(ctx, asdm: str, eb: str, import_options: dict[str, Any],
               caltables: list[str], applycals: list[dict[str, Any]],
               flagversions: list[str] | None = None,
               flag_version: str | None = None) -> dict[str, Any]:
    """importasdm + flag restore + applycal of one EB -> ``ctx.out/<eb>.ms``."""
    from casatasks import applycal, flagmanager, importasdm

    commands: list[dict[str, Any]] = []

    def run(task, name: str, **kwargs: Any) -> None:
        t0 = time.time()
        task(**kwargs)
        commands.append({"task": name, "command": _command(name, kwargs),
                         "seconds": round(time.time() - t0, 3)})

    vis = ctx.out / f"{eb}.ms"
    if vis.exists():  # only possible inside this job's own staging folder
        shutil.rmtree(vis)
    run(importasdm, "importasdm", asdm=asdm, vis=str(vis), **import_options)
    if not (vis / "table.dat").is_file():
        raise BadInput(f"importasdm wrote no measurement set from {Path(asdm).name}")
    restored_flags = None
    for tgz in flagversions or []:
        for top in _extract(tgz, ctx.out):
            if top != f"{eb}.ms.flagversions":
                shutil.rmtree(ctx.out / top, ignore_errors=True)
    fv = ctx.out / f"{eb}.ms.flagversions"
    versions = _flag_versions(fv)
    if versions:
        restored_flags = flag_version or next(
            (v for v in PREFERRED_FLAG_VERSIONS if v in versions), versions[-1])
        if restored_flags not in versions:
            raise BadInput(f"flag version {restored_flags!r} is not among the delivered ones "
                           f"({', '.join(versions)})")
        run(flagmanager, "flagmanager", vis=str(vis), mode="restore",
            versionname=restored_flags)
    tables_dir = ctx.out / CALTABLES_DIR
    for tgz in caltables:
        _extract(tgz, tables_dir)
    for call in applycals:
        kwargs = dict(call)
        kwargs["vis"] = str(vis)
        tables = kwargs.get("gaintable") or []
        tables = [tables] if isinstance(tables, str) else list(tables)
        found = []
        for t in tables:
            path = tables_dir / Path(t).name
            if not path.is_dir():
                raise BadInput(f"caltable {Path(t).name} named by calapply.txt is not in the "
                               "delivered caltables")
            found.append(str(path))
        kwargs["gaintable"] = found
        kwargs.setdefault("flagbackup", False)
        run(applycal, "applycal", **kwargs)
    with opened("table", str(vis)) as tb:
        cols = list(tb.colnames())
        nrows = int(tb.nrows())
    if "CORRECTED_DATA" not in cols:
        raise BadInput(f"{eb}: applycal wrote no CORRECTED_DATA column")
    return {"eb": eb, "asdm": asdm, "ms": ctx.final_path(vis), "n_rows": nrows,
            "flag_version": restored_flags, "flag_versions": versions,
            "commands": commands, "bytes": _du(vis), "asdm_bytes": _du(Path(asdm))}


def run_pinned_casa(ctx, command: list[str], script: str, cwd: str,
                    timeout_s: float = 43200.0) -> dict[str, Any]:
    """``command --pipeline -c script`` in ``cwd`` (the delivery's script/ folder); the
    measurement sets it leaves in ``../calibrated/`` move into ``ctx.out``."""
    argv = [*command, "--pipeline", "-c", script]
    log = ctx.out / "casa-script.log"
    t0 = time.time()
    with log.open("w") as fh:
        try:
            proc = subprocess.run(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=timeout_s, check=False, env=dict(os.environ))
        except FileNotFoundError as exc:
            raise BadInput(f"cannot start {command[0]!r}: {exc.strerror}") from None
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode} in {cwd}: "
                           + " | ".join(tail))
    calibrated = Path(cwd).parent / "calibrated"
    mss = sorted(p for p in calibrated.glob("*.ms") if (p / "table.dat").is_file()) \
        if calibrated.is_dir() else []
    if not mss:
        raise BadInput(f"the script wrote no measurement set into {calibrated}")
    out = []
    for ms in mss:
        dest = ctx.out / ms.name
        shutil.move(str(ms), dest)
        out.append({"eb": ms.name[:-3], "ms": ctx.final_path(dest), "bytes": _du(dest)})
    return {"command": argv, "cwd": cwd, "seconds": round(time.time() - t0, 3),
            "log": ctx.final_path(log), "ebs": out}


STEPS = {"restore_eb": restore_eb, "run_pinned_casa": run_pinned_casa}
