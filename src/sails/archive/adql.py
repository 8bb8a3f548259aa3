"""ADQL for the ALMA ObsCore table, built from validated values only.

Every user value reaches the query either as a number we formatted ourselves from a
finite float, or as a string literal in which single quotes are doubled (ADQL/SQL rule),
so a source name such as ``O'Neil'); DROP`` stays one literal and cannot change the query.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sails.errors import UserInputError

OBSCORE_TABLE = "ivoa.obscore"
ORDER_BY = ("member_ous_uid", "target_name", "obs_id")

# 2017.1.00079.S, 2019.A.00034.S (DDT), 2023.1.01234.L, 2016.1.00001.CSV ...
_PROJECT = re.compile(r"^\d{4}\.[0-9A-Z]\.\d{5}\.[A-Z]{1,4}$")


def adql_string(value: str, what: str = "value") -> str:
    """A quoted ADQL string literal; quotes doubled, control characters refused."""
    if not isinstance(value, str):
        raise UserInputError(f"{what} must be text, got {value!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UserInputError(f"{what} {value!r} contains control characters")
    return "'" + value.replace("'", "''") + "'"


def adql_number(value: float | int | str, what: str = "value") -> str:
    """A finite number rendered by Python (never user text)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise UserInputError(f"{what} must be finite, got {value!r}")
    return repr(x)


def like_pattern(text: str) -> str:
    """Substring pattern for LIKE: ``%text%`` (case folded by the caller)."""
    return f"%{text}%"


@dataclass
class QueryFilters:
    """ALminer-like filters. Values inside one filter are ORed; filters are ANDed."""

    names: list[str] = field(default_factory=list)
    position: tuple[float, float] | None = None  # ICRS degrees
    radius_deg: float = 1.0 / 60.0
    projects: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    bands: list[int] = field(default_factory=list)
    public_only: bool = False
    min_resolution: float | None = None  # arcsec
    max_resolution: float | None = None  # arcsec

    def is_empty(self) -> bool:
        return not (self.names or self.position or self.projects or self.keywords
                    or self.bands or self.min_resolution is not None
                    or self.max_resolution is not None)


def _name_clause(names: Iterable[str]) -> str:
    parts = []
    for n in names:
        n = n.strip()
        if not n:
            raise UserInputError("empty source name")
        parts.append(f"LOWER(target_name) LIKE {adql_string(like_pattern(n.lower()), 'name')}")
    return "(" + " OR ".join(parts) + ")"


def _band_clause(bands: Iterable[int]) -> str:
    parts = []
    for b in bands:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 10:
            raise UserInputError(f"ALMA band must be an integer 1..10, got {b!r}")
        s = str(b)
        # band_list is a space-separated list ("3" or "3 6"): match whole items only.
        parts.append(
            f"(band_list = {adql_string(s)} OR band_list LIKE {adql_string(s + ' %')}"
            f" OR band_list LIKE {adql_string('% ' + s)}"
            f" OR band_list LIKE {adql_string('% ' + s + ' %')})"
        )
    return "(" + " OR ".join(parts) + ")"


def where_clauses(f: QueryFilters) -> list[str]:
    """The ANDed conditions for ``f``, each a parenthesized ADQL expression."""
    out: list[str] = []
    if f.names:
        out.append(_name_clause(f.names))
    if f.position is not None:
        ra, dec = f.position
        if not 0.0 <= float(ra) < 360.0 or not -90.0 <= float(dec) <= 90.0:
            raise UserInputError(f"position out of range: RA {ra}, Dec {dec} (degrees)")
        if not 0.0 < float(f.radius_deg) <= 10.0:
            raise UserInputError(f"search radius must be in (0, 10] deg, got {f.radius_deg}")
        out.append(
            f"(1 = INTERSECTS(CIRCLE('ICRS', {adql_number(ra, 'RA')}, {adql_number(dec, 'Dec')},"
            f" {adql_number(f.radius_deg, 'radius')}), s_region))"
        )
    if f.projects:
        parts = []
        for p in f.projects:
            p = p.strip()
            if not _PROJECT.match(p):
                raise UserInputError(f"malformed project code {p!r}",
                                     hint="expected a form like 2017.1.00079.S")
            parts.append(f"proposal_id = {adql_string(p, 'project code')}")
        out.append("(" + " OR ".join(parts) + ")")
    if f.keywords:
        parts = []
        for k in f.keywords:
            k = k.strip()
            if not k:
                raise UserInputError("empty keyword")
            pat = adql_string(like_pattern(k.lower()), "keyword")
            parts.append(f"LOWER(science_keyword) LIKE {pat}")
            parts.append(f"LOWER(scientific_category) LIKE {pat}")
        out.append("(" + " OR ".join(parts) + ")")
    if f.bands:
        out.append(_band_clause(f.bands))
    if f.public_only:
        out.append("(data_rights = 'Public')")
    if f.min_resolution is not None:
        out.append(f"(spatial_resolution >= {adql_number(f.min_resolution, 'min resolution')})")
    if f.max_resolution is not None:
        out.append(f"(spatial_resolution <= {adql_number(f.max_resolution, 'max resolution')})")
    if (f.min_resolution is not None and f.max_resolution is not None
            and f.min_resolution > f.max_resolution):
        raise UserInputError(
            f"--min-resolution {f.min_resolution} is larger than --max-resolution "
            f"{f.max_resolution}")
    return out


def build_query(f: QueryFilters) -> str:
    """The full ObsCore query; refuses to select the whole archive."""
    if f.is_empty():
        raise UserInputError(
            "no search filter given",
            hint="use --name, --position, --project, --keyword, --band or a resolution limit",
        )
    where = " AND ".join(where_clauses(f))
    return (f"SELECT * FROM {OBSCORE_TABLE} WHERE {where} "
            f"ORDER BY {', '.join(ORDER_BY)}")
