"""restore (per MOUS): calibrated measurement sets from a raw delivery, before verify.

A MOUS whose download brought an SRDP restore (calibrated ``*.ms``), or no raw data, is
``skipped``: the SRDP restore wins over raw data. Otherwise the delivery in
``datasets_raw/<mous>/`` (:mod:`sails.casa.delivery`) is restored one of two ways:

* **CASA wheels** (the default): one CASA job ``importasdm``s each ASDM with the delivery's
  options, restores its flag version and ``applycal``s exactly as ``calapply.txt`` lists
  (:mod:`sails.casa.steps.restore`). Nothing from the delivery is executed; the report
  records that the restore ran another CASA version than the calibration.
* **Pinned CASA** (``[casa] allow_delivery_scripts = true``): the delivery's scriptForPI runs
  in its ``script/`` folder with the ``[casa] installs`` entry matching the README's CASA
  version (the nearest compatible one with a warning; none: blocked, naming what is
  installed).

The job writes into ``datasets/<mous>/restore/`` (staging folder, ``result.json`` last);
each ``<eb>.ms`` then moves to ``datasets/<mous>/<eb>.ms`` where verify finds it, and
``restore/restore-report.json`` records versions, commands, times and bytes. A delivery that
cannot be restored (no README version, a calapply line that is not an applycal call, a
missing caltable, a truncated ASDM) blocks the stage with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from sails.atomic import write_json_atomic
from sails.casa.delivery import Delivery, DeliveryError, eb_of, read_delivery
from sails.catalog import Product
from sails.errors import SailsError
from sails.stages.base import Outcome, StageContext
from sails.stages.verify import severe_note

RESTORE_DIR = "restore"
REPORT_NAME = "restore-report.json"
WHEELS, PINNED = "casa-wheels", "pinned-casa"
# importasdm options of ALMA's restore scripts (hifa_restoredata / scriptForPI)
IMPORT_OPTIONS: dict[str, Any] = {
    "asis": "Antenna Station Receiver Source CalAtmosphere CalWVR",
    "bdfflags": False, "process_caldevice": False, "with_pointing_correction": False,
    "ocorr_mode": "ca"}
# Arguments of an importasdm / hifa_importdata call in the delivery's scripts that the
# wheels path takes over (read as literals with ast, never run).
IMPORT_KEYS = ("asis", "bdfflags", "process_caldevice", "with_pointing_correction",
               "ocorr_mode", "lazy")
TIMEOUT_BASE_S = 900.0
TIMEOUT_PER_GB_S = 600.0


# ----------------------------------------------------------------------------- versions
def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version))


def choose_install(installs: dict[str, list[str]], wanted: str
                   ) -> tuple[str, list[str], str | None]:
    """(version, command, warning): the install for ``wanted`` (``6.5.4`` matches
    ``6.5.4-9``), else the nearest one of the same major version with a warning; raises
    DeliveryError naming what is installed when none is compatible."""
    want = version_tuple(wanted)
    for version, argv in installs.items():
        have = version_tuple(version)
        if have and want[: len(have)] == have:
            return version, argv, None
    same_major = [(v, a) for v, a in installs.items()
                  if version_tuple(v)[:1] == want[:1]]
    if not same_major:
        have = ", ".join(sorted(installs)) or "none"
        raise DeliveryError(f"no CASA installation for version {wanted} (named by the "
                            f"delivery's README); [casa] installs has: {have}")

    def distance(item: tuple[str, list[str]]) -> tuple[int, ...]:
        have = version_tuple(item[0]) + (0,) * 4
        return tuple(abs(a - b) for a, b in zip(have[1:4], (want + (0,) * 4)[1:4],
                                                 strict=True))

    version, argv = min(same_major, key=distance)
    return version, argv, (f"CASA {wanted} is not installed; using the nearest compatible "
                           f"installation, {version}")


# ----------------------------------------------------------------------------- inputs
def import_options(d: Delivery) -> dict[str, Any]:
    """IMPORT_OPTIONS, overridden by literal arguments of an importasdm/hifa_importdata/
    hifa_restoredata call in the delivery's scripts (parsed, not run)."""
    import ast

    out = dict(IMPORT_OPTIONS)
    for script in d.scripts:
        try:
            tree = ast.parse(script.read_text(errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("importasdm", "hifa_importdata", "hifa_restoredata")):
                for kw in node.keywords:
                    if kw.arg in IMPORT_KEYS:
                        with suppress(ValueError, SyntaxError, TypeError):
                            out[kw.arg] = ast.literal_eval(kw.value)
    return out


def wheels_steps(d: Delivery) -> list[dict[str, Any]]:
    opts = import_options(d)
    steps = []
    for asdm in d.asdms:
        eb = eb_of(asdm)
        calls = [c.kwargs for c in d.applycals
                 if Path(c.vis).name.removesuffix(".ms") == eb]
        fv = [str(p) for p in d.flagversions if p.name.startswith(f"{eb}.ms")]
        steps.append({"op": "restore_eb", "name": f"restore-{eb}", "args": {
            "asdm": str(asdm), "eb": eb, "import_options": opts,
            "caltables": [str(p) for p in d.caltables], "applycals": calls,
            "flagversions": fv}})
    return steps


def _casa_wheels_version() -> str:
    try:
        from importlib.metadata import version

        return version("casatasks")
    except Exception:  # noqa: BLE001 - only informative
        return "unknown"


# ----------------------------------------------------------------------------- outputs
def install_ms(staged: Path, mous_dir: Path) -> Path:
    """Move a restored MS (and its flag versions) from the job folder to where verify looks."""
    dest = mous_dir / staged.name
    if dest.exists():
        aside = dest.with_name(f".{dest.name}.replaced")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(dest, aside)
        shutil.rmtree(aside, ignore_errors=True)
    os.replace(staged, dest)
    flags = staged.with_name(f"{staged.name}.flagversions")
    if flags.is_dir():
        fdest = mous_dir / flags.name
        shutil.rmtree(fdest, ignore_errors=True)
        os.replace(flags, fdest)
    return dest


def read_report(mous_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((mous_dir / RESTORE_DIR / REPORT_NAME).read_text())
    except (OSError, ValueError):
        return None


def products_for(report: dict[str, Any], where: Path) -> list[Product]:
    out = [Product("ms", eb["ms"], bytes=Product.measure(eb["ms"]),
                   metrics={"eb": eb["eb"], "method": report["method"],
                            "casa_calibration": report["delivery"]["casa_version"],
                            "casa_restore": report["casa_restore"]})
           for eb in report["ebs"]]
    out.append(Product("restore_report", str(where), bytes=Product.measure(where),
                       metrics={"method": report["method"],
                                "different_casa": report["different_casa"],
                                "seconds": report["seconds"]}))
    return out


def _finished(mous_dir: Path, d: Delivery) -> dict[str, Any] | None:
    """An earlier finished restore of the same ASDMs whose MS are all still in place."""
    report = read_report(mous_dir)
    if not report or sorted(report.get("asdms", [])) != sorted(d.eb_names()):
        return None
    if all((Path(eb["ms"]) / "table.dat").is_file() for eb in report["ebs"]):
        return report
    return None


def _summary(report: dict[str, Any]) -> str:
    text = (f"restored {len(report['ebs'])} EB(s) with {report['method']} "
            f"(CASA {report['casa_restore']}; calibrated with CASA "
            f"{report['delivery']['casa_version']})")
    return text + "".join(f"; {w}" for w in report["warnings"])


# ----------------------------------------------------------------------------- run
def run(ctx: StageContext) -> Outcome:
    cat = ctx.catalog
    kinds = {p["kind"] for p in cat.products(ctx.mous_id, stage="download")}
    if "ms" in kinds:
        return Outcome.skipped("the download brought calibrated measurement sets (an SRDP "
                               "restore wins over raw data)")
    if "raw_asdm" not in kinds:
        return Outcome.skipped("no raw data to restore")
    root = ctx.project.datasets_raw / ctx.mous_fs
    pinned = ctx.settings.casa.allow_delivery_scripts
    try:
        d = read_delivery(root, extra=(ctx.mous_dir / "archive",), need_calapply=not pinned)
    except DeliveryError as exc:
        return Outcome.blocked(f"cannot restore the raw delivery: {exc.one_line()}")
    done = _finished(ctx.mous_dir, d)
    if done is not None:
        where = ctx.mous_dir / RESTORE_DIR / REPORT_NAME
        return Outcome.done(products_for(done, where), reason="already restored: "
                            + _summary(done))
    warnings: list[str] = []
    out_dir = ctx.mous_dir / RESTORE_DIR
    size = sum(Product.measure(a) for a in d.asdms)
    timeout = TIMEOUT_BASE_S + TIMEOUT_PER_GB_S * size / 1e9
    t0 = time.time()
    if pinned:
        try:
            version, argv, warn = choose_install(ctx.settings.casa.installs, d.casa_version)
        except DeliveryError as exc:
            return Outcome.blocked(f"cannot restore the raw delivery: {exc.one_line()}")
        if not d.scripts:
            return Outcome.blocked(f"cannot restore the raw delivery: no script/*scriptForPI.py"
                                   f" in {root}")
        if warn:
            warnings.append(warn)
            cat.log_event(ctx.mous_id, warn, actor="restore", stage="restore")
        script = d.scripts[0]
        steps = [{"op": "run_pinned_casa", "name": "pinned-casa", "args": {
            "command": argv, "script": script.name, "cwd": str(script.parent),
            "timeout_s": ctx.settings.casa.script_timeout_minutes * 60}}]
        casa_restore, method = version, PINNED
        timeout = max(timeout, ctx.settings.casa.script_timeout_minutes * 60 + 60)
    else:
        steps, casa_restore, method = wheels_steps(d), _casa_wheels_version(), WHEELS
    manifest = ctx.run_casa(steps, out_dir, timeout_s=timeout)
    if method == WHEELS:
        ebs = [manifest["steps"][f"restore-{eb_of(a)}"] for a in d.asdms]
        casa_restore = (manifest.get("versions") or {}).get("casatools", casa_restore)
        commands = [c for eb in ebs for c in eb["commands"]]
    else:
        step = manifest["steps"]["pinned-casa"]
        ebs = step["ebs"]
        commands = [{"task": "casa", "command": " ".join(step["command"]), "cwd": step["cwd"],
                     "seconds": step["seconds"]}]
    different = version_tuple(casa_restore)[:3] != version_tuple(d.casa_version)[:3]
    if different:
        warnings.append(f"restored with CASA {casa_restore}, not the CASA "
                        f"{d.casa_version} that calibrated the data")
    installed = []
    for eb in ebs:
        dest = install_ms(out_dir / Path(eb["ms"]).name, ctx.mous_dir)
        installed.append({"eb": eb["eb"], "ms": str(dest), "bytes": Product.measure(dest),
                          "asdm_bytes": eb.get("asdm_bytes"),
                          "flag_version": eb.get("flag_version"),
                          "n_rows": eb.get("n_rows")})
    report = {"mous_id": ctx.mous_id, "method": method, "delivery": d.facts(),
              "asdms": d.eb_names(), "casa_restore": casa_restore,
              "different_casa": different, "warnings": warnings, "commands": commands,
              "ebs": installed, "asdm_bytes": size,
              "ms_bytes": sum(e["bytes"] for e in installed),
              "seconds": round(time.time() - t0, 3), "job_wall_s": manifest.get("wall_s"),
              "finished": time.time()}
    where = out_dir / REPORT_NAME
    write_json_atomic(where, report, indent=1, default=str)
    note = severe_note(manifest)
    return Outcome.done(products_for(report, where),
                        reason=_summary(report) + (f"; {note}" if note else ""))


__all__ = ["run", "choose_install", "SailsError"]
