"""Self-calibration with the ``auto-selfcal`` package, run inside a CASA job.

auto-selfcal works on the ``*_targets.ms`` in its working directory and writes everything
next to them (averaged ``.selfcal.ms``, images, gain tables, ``weblog/``, pickles). The job's
staging folder is that directory: the split MSs are *copied* in (auto-selfcal writes flag
versions, and with ``apply_to_target_ms`` a CORRECTED_DATA column, into them, so links would
alter the originals), auto-selfcal runs, and its decisions are read back from its
``selfcal_library.pickle`` / ``selfcal_plan.pickle`` into plain JSON. Nothing downstream reads
the pickles.

Plots made with ``plotms`` need an X display. When ``Xvfb`` is installed the step starts one
for the duration of the run; without it those plots fail (auto-selfcal logs that and goes
on) and the summary says ``display: none``.
"""

from __future__ import annotations

import contextlib
import html
import inspect
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Re-exported: the fingerprint is part of the job contract, older callers import it here.
from sails.casa.contract import input_fingerprint
from sails.casa.tools import opened

SUMMARY_DIR = "sails"
LIBRARY_PICKLE = "selfcal_library.pickle"
PLAN_PICKLE = "selfcal_plan.pickle"
# Options the stage may never pass: they would make the run look somewhere else or break the
# folder contract.
_FORBIDDEN = {"vislist", "parallel"}
NOT_MEASURED = -99.0


# --------------------------------------------------------------------------- inputs


def target_ms_name(path: Path) -> str:
    """auto-selfcal only picks up ``*_target.ms`` / ``*_targets.ms``: keep or add the suffix."""
    name = path.name
    if name.endswith(("_targets.ms", "_target.ms")):
        return name
    stem = name[:-3] if name.endswith(".ms") else name
    return f"{stem}_targets.ms"


def stage_inputs(out: Path, inputs: list[str]) -> list[str]:
    """Copy each split MS (folder) into the working folder; return the names used."""
    names = []
    for src in inputs:
        sp = Path(src)
        if not sp.is_dir():
            raise FileNotFoundError(f"input measurement set not found: {sp}")
        name = target_ms_name(sp)
        if name in names:
            raise ValueError(f"two inputs map to the same name {name!r}")
        shutil.copytree(sp, out / name, symlinks=True)
        names.append(name)
    return names


# --------------------------------------------------------------------------- field names

_SAFE_FIELD = re.compile(r"[^A-Za-z0-9_.+-]")


def field_aliases(names: list[str]) -> dict[str, str]:
    """``{original: alias}`` for names auto-selfcal cannot handle safely.

    auto-selfcal selects fields by name in CASA (a quote or a comma breaks the selection) and
    builds file names and ``os.system`` commands from them with only some characters
    replaced; archive names are data. Such fields are renamed in the job's own copies for the
    run, and every result is mapped back to the archive name.
    """
    taken = set(names)
    out: dict[str, str] = {}
    for name in names:
        alias = _SAFE_FIELD.sub("_", name) or "field"
        if alias.isdigit():  # CASA would read a bare number as a field id
            alias = f"field_{alias}"
        if alias == name:
            continue
        base, i = alias, 1
        while alias in taken:
            i += 1
            alias = f"{base}_{i}"
        taken.add(alias)
        out[name] = alias
    return out


def rename_fields(ms: Path, mapping: dict[str, str]) -> None:
    """Rename FIELD (and SOURCE) names of one MS in place; a no-op without a match."""
    for sub in ("FIELD", "SOURCE"):
        path = ms / sub
        if not path.is_dir():
            continue
        with opened("table", str(path), nomodify=False) as tb:
            if tb.nrows() == 0:
                continue
            names = list(tb.getcol("NAME"))
            new = [mapping.get(n, n) for n in names]
            if new != names:
                tb.putcol("NAME", new)


def ms_field_names(ms: Path) -> list[str]:
    with opened("table", str(ms / "FIELD")) as tb:
        return [str(n) for n in tb.getcol("NAME")]


# --------------------------------------------------------------------------- display


def _die_with_job() -> None:
    """Xvfb side, before exec: terminate when the job process dies (Linux), even by SIGKILL."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def virtual_display(enabled: bool, warn) -> Iterator[str]:
    """Yield how plots will be drawn: ``existing`` DISPLAY, ``xvfb:N`` or ``none``."""
    if os.environ.get("DISPLAY"):
        yield "existing"
        return
    xvfb = shutil.which("Xvfb") if enabled else None
    if not xvfb:
        if enabled:
            warn("no X display and Xvfb is not installed: auto-selfcal's plotms weblog plots "
                 "will be missing (apt-get install xvfb to get them)")
        yield "none"
        return
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
        [xvfb, "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0", "1600x1200x24"],
        pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_job,
    )
    os.close(write_fd)
    number = b""
    try:
        with os.fdopen(read_fd, "rb") as fh:
            deadline = time.time() + 20
            while not number.endswith(b"\n") and time.time() < deadline:
                chunk = fh.read(1)
                if not chunk:
                    break
                number += chunk
        display = number.strip().decode()
        if not display.isdigit():
            warn("Xvfb did not start: plotms weblog plots will be missing")
            proc.kill()
            proc.wait()
            yield "none"
            return
        os.environ["DISPLAY"] = f":{display}"
        try:
            yield f"xvfb:{display}"
        finally:
            os.environ.pop("DISPLAY", None)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------- read back


def _num(value: Any) -> float | None:
    """A finite float, or None (auto-selfcal writes -99.0 for "not measured")."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out != NOT_MEASURED else None


def _plain(value: Any) -> Any:
    """numpy scalars/arrays and tuples -> JSON types (no numpy import needed here)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    return str(value)


def sanitize(target: str) -> str:
    """auto-selfcal's file-name form of a target name (its ``sanitize_string``)."""
    out = target
    for ch in "- +*,;:[]{}":
        out = out.replace(ch, "_")
    return "Target_" + out


def _beam(lib: dict[str, Any], suffix: str) -> list[float] | None:
    vals = [_num(lib.get(f"Beam_{k}_{suffix}")) for k in ("major", "minor", "PA")]
    return None if any(v is None for v in vals) else vals


def _existing(workdir: Path, names: list[str]) -> list[str]:
    return [n for n in names if (workdir / n).exists()]


def band_summary(workdir: Path, target: str, band: str, lib: dict[str, Any],
                 plan: dict[str, Any]) -> dict[str, Any]:
    """What auto-selfcal decided for one target and band, in the shared vocabulary."""
    vislist = list(lib.get("vislist") or [])
    planned = [str(s) for s in plan.get("solints", [])]
    attempted, accepted, per_solint = [], [], {}
    for solint in planned:
        rows = [lib[v][solint] for v in vislist if isinstance(lib.get(v), dict)
                and isinstance(lib[v].get(solint), dict)]
        if not rows:
            continue
        attempted.append(solint)
        first = rows[0]
        passed = first.get("Pass")
        if passed is True:
            accepted.append(solint)
        per_solint[solint] = {
            "pass": passed if isinstance(passed, bool) else None,
            "fail_reason": None if str(first.get("Fail_Reason")) == "None"
            else first.get("Fail_Reason"),
            "solmode": first.get("solmode"),
            "final_mode": first.get("final_mode"),
            "snr_pre": _num(first.get("SNR_pre")), "snr_post": _num(first.get("SNR_post")),
            "rms_pre": _num(first.get("RMS_pre")), "rms_post": _num(first.get("RMS_post")),
            "snr_nf_pre": _num(first.get("SNR_NF_pre")),
            "snr_nf_post": _num(first.get("SNR_NF_post")),
            "estimated_snr": _num((plan.get("solint_snr") or {}).get(solint)),
        }
    success = bool(lib.get("SC_success"))
    final_solint = str(lib.get("final_solint", "None"))
    final_mode = None
    if success and final_solint in per_solint:
        final_mode = per_solint[final_solint]["final_mode"]
    stop = lib.get("Stop_Reason")
    stop = None if stop is None or str(stop) == "None" else str(stop).strip()
    if success:
        reason = f"kept solutions up to {final_solint}" + (f"; stopped: {stop}" if stop else "")
    elif stop is None:
        reason = "estimated self-cal S/N too low for any solution interval"
    elif stop.startswith("Estimated_SNR_too_low_for_solint"):
        reason = f"too faint: estimated S/N too low for solint {stop.split(' ', 1)[-1]}"
    elif stop.startswith("Empty model"):
        reason = f"no emission found to self-calibrate on ({stop.lower()})"
    else:
        reason = f"not beneficial: {stop}" if attempted else stop
    sani = sanitize(target)
    gaintables: list[str] = []
    if success:
        for v in vislist:
            gaintables += [str(g) for g in (lib.get(v) or {}).get("gaintable_final", [])]
    images = {
        kind: _existing(workdir, [f"{sani}_{band}_{kind}.image.tt0"])
        for kind in ("initial", "final")
    }
    return {
        "target": target,
        "band": band,
        "success": success,
        "reason": reason,
        "stop_reason": stop,
        "snr_initial": _num(lib.get("SNR_orig")),
        "snr_final": _num(lib.get("SNR_final")),
        "rms_initial": _num(lib.get("RMS_orig")),
        "rms_final": _num(lib.get("RMS_final")),
        "snr_nf_initial": _num(lib.get("SNR_NF_orig")),
        "snr_nf_final": _num(lib.get("SNR_NF_final")),
        "rms_nf_initial": _num(lib.get("RMS_NF_orig")),
        "rms_nf_final": _num(lib.get("RMS_NF_final")),
        "beam_initial": _beam(lib, "orig"),
        "beam_final": _beam(lib, "final"),
        "solints_planned": planned,
        "solints_attempted": attempted,
        "solints_accepted": accepted,
        "final_solint": None if final_solint == "None" else final_solint,
        "final_solint_mode": lib.get("final_solint_mode") if success else None,
        "final_mode": final_mode,
        "obstype": lib.get("obstype"),
        "theoretical_rms": _num(lib.get("theoretical_sensitivity")),
        "solints": per_solint,
        "files": {
            "selfcal_ms": _existing(workdir, vislist),
            "target_ms": _existing(workdir, [str((lib.get("original_vislist_map") or {})
                                                 .get(v, "")) for v in vislist]),
            "gaintables": _existing(workdir, gaintables),
            "image_initial": images["initial"],
            "image_final": images["final"],
        },
    }


def read_results(workdir: Path, aliases: dict[str, str] | None = None
                 ) -> dict[str, dict[str, dict[str, Any]]]:
    """``{target: {band: summary}}`` from auto-selfcal's pickles in ``workdir``.

    ``aliases`` (``{alias: archive name}``) maps renamed fields back to their names.
    """
    aliases = aliases or {}
    with open(workdir / LIBRARY_PICKLE, "rb") as fh:
        library = pickle.load(fh)  # noqa: S301 - our own job's output, read job-side only
    plan_all: dict[str, Any] = {}
    if (workdir / PLAN_PICKLE).exists():
        with open(workdir / PLAN_PICKLE, "rb") as fh:
            plan_all = pickle.load(fh)  # noqa: S301
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for target, bands in library.items():
        name = aliases.get(str(target), str(target))
        out[name] = {}
        for band, lib in bands.items():
            plan = (plan_all.get(target) or {}).get(band) or {}
            summ = band_summary(workdir, str(target), str(band), lib, plan)
            summ["target"] = name
            summ["field_alias"] = str(target) if name != str(target) else None
            out[name][str(band)] = _plain(summ)
    return out


# --------------------------------------------------------------------------- products


def export_fits(workdir: Path, image: str) -> str | None:
    from casatasks import exportfits

    fits = image.replace(".image.tt0", ".image.fits")
    exportfits(imagename=str(workdir / image), fitsimage=str(workdir / fits), overwrite=True)
    return fits if (workdir / fits).exists() else None


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def write_target_page(workdir: Path, summary: dict[str, Any]) -> str:
    """A small per-target weblog page (auto-selfcal's index.html is shared by all targets)."""
    target, band = summary["target"], summary["band"]
    field = summary.get("field_alias") or target  # the name auto-selfcal used
    name = f"weblog/sails_{sanitize(field)}_{band}.html"
    rows = [
        ("self-cal succeeded", str(summary["success"])),
        ("reason", summary["reason"]),
        ("peak S/N initial -> final",
         f"{_fmt(summary['snr_initial'])} -> {_fmt(summary['snr_final'])}"),
        ("rms initial -> final (Jy/beam)",
         f"{_fmt(summary['rms_initial'])} -> {_fmt(summary['rms_final'])}"),
        ("near-field S/N initial -> final",
         f"{_fmt(summary['snr_nf_initial'])} -> {_fmt(summary['snr_nf_final'])}"),
        ("solints attempted", ", ".join(summary["solints_attempted"]) or "-"),
        ("solints accepted", ", ".join(summary["solints_accepted"]) or "-"),
        ("final solint / mode", f"{summary['final_solint']} / {summary['final_mode']}"),
    ]
    links = "".join(
        f'<li><a href="{html.escape(p.name)}">{html.escape(p.stem)}</a></li>'
        for p in sorted((workdir / "weblog").glob(f"{glob_escape(field)}_{band}_*.html"))
    )
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    anchor = html.escape(field, quote=True)
    page = (f"<html><head><meta charset='utf-8'><title>{html.escape(target)} {band}</title>"
            f"</head><body><h1>{html.escape(target)} ({band})</h1><table>{body}</table>"
            f'<p><a href="index.html#{anchor}">auto-selfcal weblog entry</a></p>'
            f"<ul>{links}</ul></body></html>\n")
    path = workdir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return name


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


# --------------------------------------------------------------------------- the step


def fullres_names(applied: list[dict[str, Any]], field: str, band: str) -> list[str]:
    """Full-resolution MSs holding ``field``'s self-calibrated data (the name auto-selfcal
    used: the alias of a renamed field)."""
    return sorted({s["target_ms"] for s in applied
                   if s.get("applied") and s["target"] == field and s["band"] == band})


def check_options(options: dict[str, Any]) -> None:
    """Refuse option names auto_selfcal does not declare (its ``**kwargs`` would hide typos)."""
    from auto_selfcal import auto_selfcal

    params = inspect.signature(auto_selfcal).parameters
    known = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    bad = sorted((set(options) - known) | (set(options) & _FORBIDDEN))
    if bad:
        raise ValueError(f"auto_selfcal does not accept option(s) {bad} here")


def auto_selfcal_version() -> str:
    """auto-selfcal's version, or "unknown": a platform job runs it vendored as source,
    without package metadata (a CASA-only image), and must not fail at its very end."""
    import importlib.metadata

    try:
        return importlib.metadata.version("auto-selfcal")
    except importlib.metadata.PackageNotFoundError:  # the run imported it already
        module = sys.modules.get("auto_selfcal")
        return str(getattr(module, "__version__", None) or "unknown")


def averaged_to_one_channel(ms: Path, spectral_average: bool) -> set[int]:
    """Spw ids auto-selfcal averages down to a single channel (bandwidth below 1.5 x its
    desired width): its cont.dat reader (``LSRKfreq_to_chan``) then fails with an
    IndexError on the averaged MS, so such windows are not put in its cont.dat."""
    if not spectral_average:
        return set()
    from auto_selfcal.selfcal_helpers import get_desired_width

    with opened("table", str(ms / "SPECTRAL_WINDOW")) as tb:
        bws = [abs(float(b)) for b in tb.getcol("TOTAL_BANDWIDTH")]
        refs = [float(f) for f in tb.getcol("REF_FREQUENCY")]
    return {i for i, (bw, f) in enumerate(zip(bws, refs, strict=True))
            if bw / get_desired_width(f) < 1.5}


def place_contdat(workdir: Path, contdat_arg: dict[str, Any] | None,
                  renames: dict[str, str], narrow: set[int] | None = None) -> bool:
    """Write the findcont ranges as auto-selfcal's ``cont.dat`` (split spw ids, aliased field
    names); auto-selfcal then flags the lines before averaging instead of guessing.
    ``narrow``: split spw ids left out (see :func:`averaged_to_one_channel`)."""
    if not contdat_arg:
        return False
    from sails.imaging import contdat

    ranges = {f: {a: [tuple(r) for r in rr] for a, rr in spws.items()}
              for f, spws in (contdat_arg.get("ranges") or {}).items()}
    spw_map = {a: (int(v[0]), str(v[1] or "")) for a, v in contdat_arg["spw_map"].items()
               if int(v[0]) not in (narrow or set())}
    text = contdat.for_auto_selfcal(ranges, spw_map, renames)
    if "SpectralWindow" not in text:
        return False
    (workdir / contdat.CONTDAT_NAME).write_text(text)
    return True


def prepare_workdir(workdir: Path, inputs: list[str], options: dict[str, Any],
                    contdat: dict[str, Any] | None
                    ) -> tuple[list[str], dict[str, str], bool]:
    """What has to be in auto-selfcal's folder before it runs (also what a user does by
    hand, for the throughput benchmark): the split MSs copied in, field names it cannot
    handle aliased, the findcont ranges as its ``cont.dat``. Returns the MS names, the
    renames and whether a ``cont.dat`` was written."""
    names = stage_inputs(workdir, inputs)
    fields = sorted({f for n in names for f in ms_field_names(workdir / n)})
    renames = field_aliases(fields)
    for n in names if renames else []:
        rename_fields(workdir / n, renames)
    narrow = (averaged_to_one_channel(workdir / names[0], options.get("spectral_average",
                                                                       True))
              if contdat else set())
    return names, renames, place_contdat(workdir, contdat, renames, narrow)


def run_auto_selfcal(ctx, inputs: list[str], options: dict[str, Any] | None = None,
                     use_xvfb: bool = False, fits: bool = True,
                     keep_input_copies: bool = False,
                     apply_full_res: bool = False,
                     contdat: dict[str, Any] | None = None) -> dict[str, Any]:
    """Copy the split MSs in, run auto_selfcal on all their targets, summarise per target.

    ``apply_full_res``: apply the final solutions to the full-resolution copies
    (:mod:`sails.casa.steps.fullres`), which are kept for the line cubes."""
    options = dict(options or {})
    check_options(options)
    workdir = Path(ctx.out)
    t0 = time.time()
    fingerprints = [input_fingerprint(p) for p in inputs]
    names, renames, contdat_used = prepare_workdir(workdir, inputs, options, contdat)
    if renames:
        ctx.warn(f"fields renamed for auto-selfcal (names restored afterwards): {renames}")
    copy_s = time.time() - t0

    from auto_selfcal import auto_selfcal

    t1 = time.time()
    with virtual_display(use_xvfb, ctx.warn) as display:
        auto_selfcal(**options)
    selfcal_s = time.time() - t1
    if not (workdir / LIBRARY_PICKLE).exists():
        raise RuntimeError("auto_selfcal finished without writing selfcal_library.pickle")

    full: dict[str, Any] = {"applied": [], "ms": [], "applycal_s": 0.0}
    if apply_full_res:
        from sails.casa.steps import fullres

        with open(workdir / LIBRARY_PICKLE, "rb") as fh:
            full = fullres.apply_full_res(workdir, pickle.load(fh))  # noqa: S301 - our own
        for s in full["applied"]:
            if s.get("error"):
                ctx.warn(f"self-cal not applied to the full-resolution data: {s['error']}")
    t2 = time.time()
    applied = bool(options.get("apply_to_target_ms") or options.get("uvcontsub_target_ms"))
    if not keep_input_copies and not applied:
        for n in [n for n in names if n not in full["ms"]]:
            # unchanged copies of the split: not worth their disk space
            shutil.rmtree(workdir / n, ignore_errors=True)
            shutil.rmtree(workdir / f"{n}.flagversions", ignore_errors=True)

    aliases = {alias: name for name, alias in renames.items()}
    if renames:  # products carry the archive names again
        for ms in [p for p in workdir.glob("*.ms") if (p / "FIELD").is_dir()]:
            rename_fields(ms, aliases)
    results = read_results(workdir, aliases)
    (workdir / SUMMARY_DIR).mkdir(exist_ok=True)
    for target, bands in results.items():
        for band, summ in bands.items():
            files = summ["files"]
            summ["target_ms_applied"] = bool(options.get("apply_to_target_ms")
                                             and summ["success"] and files["target_ms"])
            files["fullres_ms"] = fullres_names(full["applied"],
                                                summ.get("field_alias") or target, band)
            summ["fullres_applied"] = bool(files["fullres_ms"])
            if fits:
                for key in ("image_initial", "image_final"):
                    files[key + "_fits"] = [f for f in (export_fits(workdir, im)
                                                        for im in files[key]) if f]
            files["weblog_page"] = (write_target_page(workdir, summ)
                                    if (workdir / "weblog").is_dir() else None)
            field = summ.get("field_alias") or target
            name = f"{SUMMARY_DIR}/{sanitize(field)}_{band}.summary.json"
            files["summary"] = name
            (workdir / name).write_text(json.dumps(summ, indent=2))

    contsub = [n.replace(".ms", ".contsub.ms") for n in names
               if (workdir / n.replace(".ms", ".contsub.ms")).exists()]
    return {
        "auto_selfcal_version": auto_selfcal_version(),
        "options": options,
        "inputs": fingerprints,
        "input_names": names,
        "field_aliases": renames,
        "contdat_used": contdat_used,
        "contdat_ranges": (contdat or {}).get("ranges"),
        "target_ms_kept": [n for n in names if (workdir / n).exists()],
        "contsub_ms": contsub,
        "display": display,
        "weblog": "weblog/index.html" if (workdir / "weblog" / "index.html").exists() else None,
        "apply_full_res": bool(apply_full_res),
        "fullres_ms": full["ms"],
        "fullres_applycal": full["applied"],
        "applycal_full_res_s": full["applycal_s"],
        "copy_s": round(copy_s, 3),
        "auto_selfcal_s": round(selfcal_s, 3),
        "readback_s": round(time.time() - t2, 3),
        "targets": results,
    }


STEPS = {"auto_selfcal": run_auto_selfcal}
