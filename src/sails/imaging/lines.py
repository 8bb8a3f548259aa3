"""The line catalogue: which spectral lines get a cube, and where they land in the sky frequency.

The shipped table (``sails/data/lines.csv``) holds accretion-streamer tracers in bands 3, 6
and 7; projects add lines in ``sails.toml``. Standard library only: the CASA job side uses the
same helpers (velocities use the radio convention, as ALMA does).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from sails.constants import C_KMS
from sails.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]*$")


@dataclass(frozen=True)
class Line:
    name: str  # file-name safe, used in product names
    species: str
    transition: str
    rest_ghz: float

    def sky_ghz(self, v_kms: float) -> float:
        """Observed (LSRK) frequency at radio velocity ``v_kms``."""
        return self.rest_ghz * (1.0 - v_kms / C_KMS)

    def window_ghz(self, v_center_kms: float, half_width_kms: float) -> tuple[float, float]:
        """LSRK frequency range covering ``v_center +- half_width`` (low, high)."""
        a = self.sky_ghz(v_center_kms - half_width_kms)
        b = self.sky_ghz(v_center_kms + half_width_kms)
        return (min(a, b), max(a, b))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(line: Line, source: str) -> Line:
    if not _NAME.match(line.name):
        raise ConfigError(f"line name {line.name!r} in {source} is not file-name safe",
                          hint="use letters, digits, '_', '+', '-' only, e.g. 'C18O_2-1'")
    if not line.rest_ghz > 0:
        raise ConfigError(f"line {line.name!r} in {source} has rest frequency {line.rest_ghz}")
    return line


def parse_catalogue(text: str, source: str = "line catalogue") -> list[Line]:
    rows = [r for r in text.splitlines() if r.strip() and not r.lstrip().startswith("#")]
    out = []
    for rec in csv.DictReader(io.StringIO("\n".join(rows))):
        try:
            line = Line(rec["name"].strip(), rec["species"].strip(), rec["transition"].strip(),
                        float(rec["rest_ghz"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"bad row in {source}: {rec} ({exc})") from None
        out.append(_check(line, source))
    return out


def shipped_lines() -> list[Line]:
    text = resources.files("sails.data").joinpath("lines.csv").read_text(encoding="utf-8")
    return parse_catalogue(text, "sails/data/lines.csv")


def catalogue(extra: list[Any] | None = None) -> list[Line]:
    """Shipped lines plus user lines (``settings.imaging.lines``); a user line of the same
    name replaces the shipped one."""
    lines = {ln.name: ln for ln in shipped_lines()}
    for item in extra or []:
        d = item.model_dump() if hasattr(item, "model_dump") else dict(item)
        ln = _check(Line(d["name"], d["species"], d["transition"], float(d["rest_ghz"])),
                    "sails.toml [[imaging.lines]]")
        lines[ln.name] = ln
    return sorted(lines.values(), key=lambda ln: ln.rest_ghz)


def lines_in_range(lines: list[Line], f_lo_ghz: float, f_hi_ghz: float,
                   v_center_kms: float) -> list[Line]:
    """Lines whose systemic-velocity sky frequency lies inside [f_lo, f_hi] (LSRK GHz)."""
    return [ln for ln in lines if f_lo_ghz <= ln.sky_ghz(v_center_kms) <= f_hi_ghz]


# Where a target's systemic velocity came from (``vsys_origin`` in plans, metrics, report),
# in the order they are tried (:func:`sails.casa.imaging_plan.systemic_velocity`).
VSYS_ORIGINS: dict[str, str] = {
    "config": "given in sails.toml (imaging.systemic_velocity_kms / target_velocities_kms)",
    "data": "from the data: the strongest catalogue line the continuum finder found",
    "setup": "from the spectral set-up: the centre of the narrowest line window",
    "default": "nothing known: 0 km/s assumed",
}
