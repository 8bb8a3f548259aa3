"""Read and write ``cont.dat``: line-free frequency ranges per field and spectral window.

This is the file the ALMA pipeline's ``hif_findcont`` writes and that both the pipeline and
auto-selfcal read, so one file found (or shipped with a delivery) feeds self-calibration,
continuum subtraction and the continuum image. The format::

    Field: HOPS-56

    SpectralWindow: 25
    216.9784~217.0123GHz LSRK
    217.1000~217.9000GHz LSRK

    SpectralWindow: 27
    NONE

Spectral window numbers are the archive's (the original MS's), not a split MS's. Ranges are
LSRK GHz. Standard library only: the CASA job side reads it too.

Caveat recorded from auto-selfcal 2.1 (``auto_selfcal/selfcal_helpers.py``,
``parse_contdotdat``): a field line whose name contains ``ALL`` is skipped (the pipeline's
"all fields" marker), so a target named e.g. ``HALLEY`` would get no ranges from it; sails
warns about such names (:func:`allcaps_warning`).
"""

from __future__ import annotations

import re
from pathlib import Path

CONTDAT_NAME = "cont.dat"
FRAME = "LSRK"
NONE = "NONE"  # a window without line-free channels (the pipeline writes this too)

# field -> archive spw id (str) -> [(lo_ghz, hi_ghz), ...]; an empty list means NONE
ContRanges = dict[str, dict[str, list[tuple[float, float]]]]

_RANGE = re.compile(r"^\s*([0-9.eE+-]+)\s*~\s*([0-9.eE+-]+)\s*GHz\s*(\w+)?\s*$")


class ContDatError(ValueError):
    """A cont.dat that cannot be read (the message says which line)."""


def parse(text: str, source: str = CONTDAT_NAME) -> ContRanges:
    """Every field's ranges; frames other than LSRK are refused (we cannot convert TOPO
    ranges without the observation's time and position)."""
    out: ContRanges = {}
    field: str | None = None
    spw: str | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("Field:"):
            field = line.split(":", 1)[1].strip()
            out.setdefault(field, {})
            spw = None
            continue
        if line.startswith("SpectralWindow:"):
            if field is None:
                raise ContDatError(f"{source}:{n}: SpectralWindow before any Field")
            spw = line.split(":", 1)[1].split()[0].strip()  # "<id> [<name>]"
            out[field].setdefault(spw, [])
            continue
        if spw is None or field is None:
            raise ContDatError(f"{source}:{n}: range {line!r} outside a SpectralWindow")
        if line.upper() in (NONE, "ALL"):
            continue  # NONE: no line-free channel; ALL is not written by the pipeline
        m = _RANGE.match(line)
        if not m:
            raise ContDatError(f"{source}:{n}: cannot read range {line!r} "
                               "(expected e.g. '216.1~216.5GHz LSRK')")
        frame = (m.group(3) or FRAME).upper()
        if frame != FRAME:
            raise ContDatError(f"{source}:{n}: frame {frame} is not supported (LSRK only)")
        lo, hi = sorted((float(m.group(1)), float(m.group(2))))
        out[field][spw].append((lo, hi))
    return out


def read(path: str | Path) -> ContRanges:
    p = Path(path)
    return parse(p.read_text(encoding="utf-8"), str(p))


def format_ranges(ranges: ContRanges, names: dict[str, str] | None = None) -> str:
    """The cont.dat text (fields and spws in a stable order, 6 decimals as the pipeline).

    A spw without line-free ranges is left out: auto-selfcal 2.1 cannot read ``NONE`` (it
    parses every line under a SpectralWindow as a range) and an empty entry breaks its spw
    matching. ``names`` (spw id -> SPECTRAL_WINDOW name) writes the three-token
    ``SpectralWindow: <id> <name>`` form auto-selfcal matches names with.
    """
    out = []
    for field in sorted(ranges):
        out += [f"Field: {field}", ""]
        for spw in sorted(ranges[field], key=_spw_key):
            rr = ranges[field][spw]
            if not rr:
                continue
            name = (names or {}).get(spw)
            out.append(f"SpectralWindow: {spw}" + (f" {name}" if name else ""))
            out += [f"{lo:.6f}~{hi:.6f}GHz {FRAME}" for lo, hi in sorted(rr)]
            out.append("")
    return "\n".join(out)


def for_auto_selfcal(ranges: ContRanges, spw_map: dict[str, tuple[int, str]],
                     aliases: dict[str, str]) -> str:
    """The cont.dat auto-selfcal reads in its working folder: its MSs are the splits, so
    archive spw ids become split ids (``spw_map``: archive id -> (split id, spw name)), and
    fields carry the names auto-selfcal's copies were renamed to (``aliases``)."""
    out: ContRanges = {}
    names: dict[str, str] = {}
    for field, spws in ranges.items():
        mine = out.setdefault(aliases.get(field, field), {})
        for aid, rr in spws.items():
            if aid not in spw_map:
                continue
            sid, name = spw_map[aid]
            mine[str(sid)] = rr
            if name:
                names[str(sid)] = name
    return format_ranges(out, names)


def write(path: str | Path, ranges: ContRanges) -> Path:
    """Write atomically (a reader never sees half a file)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(format_ranges(ranges), encoding="utf-8")
    tmp.replace(p)
    return p


def for_field(ranges: ContRanges | None, field: str) -> dict[str, list[tuple[float, float]]] | None:
    """One field's ranges (None when the file has none for it)."""
    if not ranges:
        return None
    return ranges.get(field)


def allcaps_warning(field: str) -> str | None:
    """auto-selfcal skips cont.dat fields whose name contains 'ALL' (see the module doc)."""
    if "ALL" in field:
        return (f"target {field!r} contains 'ALL': auto-selfcal 2.1 skips that cont.dat "
                "field and will find its own continuum")
    return None


def _spw_key(s: str) -> tuple[int, str]:
    return (int(s), "") if s.isdigit() else (1 << 30, s)
