"""Self-cal solutions onto the full-resolution data (job side, inside the self-cal job).

auto-selfcal solves on a spectrally averaged copy (``*.selfcal.ms``), so its CORRECTED_DATA
cannot make line cubes. It ships ``original_ms_helpers.applycal_to_orig_MSes`` to apply the
final solutions to the unaveraged MSs, but in 2.1 that function first removes CORRECTED_DATA
from every MS of its ``vislist`` -- the ``*.selfcal.ms`` themselves, which the continuum is
imaged from -- so it is not used. Instead the same calls are made here with CASA's
``applycal``: the final gain tables, interpolation, spw map and apply mode auto-selfcal
records per target, band and MS in ``selfcal_library.pickle``, onto the staged copy of the
split ``*_targets.ms`` (flags first restored to auto-selfcal's ``starting_flags``, as its
helper does). The copy keeps DATA (the split, not self-calibrated) and gains
CORRECTED_DATA (self-calibrated) at full spectral resolution.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def final_solutions(library: dict[str, Any]) -> list[dict[str, Any]]:
    """One applycal per (target, band, MS) auto-selfcal kept solutions for."""
    out = []
    for target, bands in library.items():
        for band, lib in bands.items():
            if not isinstance(lib, dict) or not lib.get("SC_success"):
                continue
            vmap = lib.get("original_vislist_map") or {}
            for vis in lib.get("vislist") or []:
                rec = lib.get(vis) or {}
                tables = [str(g) for g in rec.get("gaintable_final") or []]
                if not tables or vis not in vmap:
                    continue
                out.append({
                    "target": str(target), "band": str(band), "selfcal_ms": str(vis),
                    "target_ms": str(vmap[vis]), "gaintable": tables,
                    "interp": [str(i) for i in rec.get("applycal_interpolate_final") or []],
                    "spwmap": [[int(x) for x in m] for m in rec.get("spwmap_final") or []],
                    "applymode": str(rec.get("applycal_mode_final") or "calonly"),
                    "spw": str(rec.get("spws_orig") or ""),
                })
    return out


def apply_full_res(workdir: Path, library: dict[str, Any]) -> dict[str, Any]:
    """Apply every final solution to the staged full-resolution ``*_targets.ms``.

    Returns ``{"applied": [solution records], "ms": [MS names], "applycal_s": seconds}``;
    a record says which target's field of which MS now holds self-calibrated CORRECTED_DATA.
    """
    from casatasks import applycal, flagmanager

    sols = final_solutions(library)
    t0 = time.time()
    restored: set[str] = set()
    for s in sols:
        ms = workdir / s["target_ms"]
        if not ms.is_dir():
            s["error"] = f"{s['target_ms']} is not in the working folder"
            continue
        if s["target_ms"] not in restored:  # flags as before self-cal, once per MS
            restored.add(s["target_ms"])
            if (workdir / f"{s['target_ms']}.flagversions" / "flags.starting_flags").exists():
                flagmanager(vis=str(ms), mode="restore", versionname="starting_flags")
        applycal(vis=str(ms), field=s["target"], spw=s["spw"],
                 gaintable=[str(workdir / g) for g in s["gaintable"]], interp=s["interp"],
                 spwmap=s["spwmap"], applymode=s["applymode"], calwt=False, flagbackup=False)
        s["applied"] = True
    return {"applied": sols, "ms": sorted({s["target_ms"] for s in sols if s.get("applied")}),
            "applycal_s": round(time.time() - t0, 3)}

