"""Sources: the targets of *different* MOUS that observe the same sky, grouped.

ALMA observes one field with several arrays in sibling MOUS of one group OUS: the 12-m
array (often in two configurations, TM1 extended and TM2 compact), the 7-m array (ACA) and
total power (TP). Combining them is what recovers extended emission, so the pipeline needs
to know which targets belong together. This module decides that from the catalog's ObsCore
metadata alone (pure functions, no I/O): the catalog stores the result
(:mod:`sails.catalog.sources`), ``sails sources`` shows it.

Two members (one target name inside one MOUS each) join when

* ``group``: they share the group OUS and their (normalised) name, and their fields
  overlap (sibling MOUS of one mosaic may centre it differently), or
* ``name``: they share their name and lie within ``tolerance_arcsec`` (any group, any
  project: a later proposal re-observing the field), or
* ``position``: they lie within the tolerance whatever their names.

``within`` says how far the rules go (``group`` < ``name`` < ``position``); joins are
transitive. Users know cases the metadata gets wrong, so names can be aliased onto one
source name and members (a MOUS, a MOUS's target, or a target name) excluded: an excluded
member always stands alone.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

WITHIN = ("group", "name", "position")  # how far the join rules go, narrowest first
MATCH_NAMES = ("normalised", "exact")
DEFAULT_TOLERANCE_ARCSEC = 20.0

# Antenna name prefixes (ObsCore antenna_arrays lists "pad:antenna" pairs).
ARRAY_OF_ANTENNA = {"DA": "12m", "DV": "12m", "PM": "TP", "CM": "7m"}
ARRAY_ORDER = ("12m", "7m", "TP", "unknown")
# Two 12-m members are different configurations when their resolutions differ this much.
CONFIG_RATIO = 1.3

_NAME_JUNK = re.compile(r"[\s_\-.]+")
_EXCLUDE_MOUS = re.compile(r"^(uid://[^:\s]+)(?::(.+))?$", re.IGNORECASE)


@dataclass(frozen=True)
class Window:
    """One spectral window a member brings (frequencies in GHz)."""

    spw: int | None
    band: str | None
    min_ghz: float
    max_ghz: float

    def overlap(self, other: Window) -> float:
        """Overlap as a share of the narrower window (0 = disjoint, 1 = one inside the
        other)."""
        lo, hi = max(self.min_ghz, other.min_ghz), min(self.max_ghz, other.max_ghz)
        narrow = min(self.max_ghz - self.min_ghz, other.max_ghz - other.min_ghz)
        if hi <= lo:
            return 0.0
        return 1.0 if narrow <= 0 else (hi - lo) / narrow


@dataclass(frozen=True)
class Member:
    """One target of one MOUS, as the catalog's ObsCore metadata describes it."""

    mous_id: str
    target: str
    ra: float | None = None  # degrees
    dec: float | None = None
    group_ous: str | None = None
    antenna_arrays: str | None = None
    ang_res_arcsec: float | None = None
    fov_arcsec: float | None = None  # field (mosaic) diameter
    is_mosaic: bool = False
    project: str | None = None
    windows: tuple[Window, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.mous_id, self.target)

    @property
    def array(self) -> str:
        return array_of(self.antenna_arrays)


@dataclass(frozen=True)
class Rules:
    """The grouping rules (``[sources]`` in sails.toml builds one)."""

    tolerance_arcsec: float = DEFAULT_TOLERANCE_ARCSEC
    within: str = "name"
    match_names: str = "normalised"
    aliases: Mapping[str, str] = field(default_factory=dict)  # target name -> source name
    exclude: tuple[str, ...] = ()  # "uid://..", "uid://..:NAME" or a target name

    def __post_init__(self) -> None:
        if self.within not in WITHIN:
            raise ValueError(f"within must be one of {', '.join(WITHIN)}")
        if self.match_names not in MATCH_NAMES:
            raise ValueError(f"match_names must be one of {', '.join(MATCH_NAMES)}")

    def norm(self, name: str) -> str:
        """The name members are compared by: aliased, and (unless ``exact``) case-, space-,
        underscore-, dash- and dot-insensitive."""
        canon = self._canon(name)
        for alias, target in self.aliases.items():
            if self._canon(alias) == canon:
                return self._canon(target)
        return canon

    def _canon(self, name: str) -> str:
        name = name.strip()
        return name if self.match_names == "exact" else _NAME_JUNK.sub("", name).casefold()

    def alias_of(self, name: str) -> str | None:
        """The source name an alias maps ``name`` onto, if one does."""
        canon = self._canon(name)
        for alias, target in self.aliases.items():
            if self._canon(alias) == canon:
                return target
        return None

    def excluded(self, m: Member) -> bool:
        for entry in self.exclude:
            match = _EXCLUDE_MOUS.match(entry.strip())
            if match:
                if match.group(1).lower() == m.mous_id.lower() and (
                        match.group(2) is None or self._canon(match.group(2))
                        == self._canon(m.target)):
                    return True
            elif self._canon(entry) == self._canon(m.target):
                return True
        return False

    def describe(self) -> list[str]:
        """The rules in words (``sails sources --dry-run`` prints them)."""
        joins = {"group": "same group OUS and same name",
                 "name": f"same group OUS and same name; or same name within "
                         f"{self.tolerance_arcsec:g} arcsec",
                 "position": f"same group OUS and same name; or any names within "
                             f"{self.tolerance_arcsec:g} arcsec"}
        out = [f"within = {self.within!r}: members join on {joins[self.within]}",
               f"match_names = {self.match_names!r}: names compared "
               + ("exactly" if self.match_names == "exact" else
                  "ignoring case, spaces, '_', '-' and '.'")]
        out += [f"alias: {a!r} -> {t!r}" for a, t in self.aliases.items()]
        out += [f"exclude: {e!r} (stands alone)" for e in self.exclude]
        return out


@lru_cache(maxsize=4096)  # one antenna list is shared by every target of a MOUS
def array_of(antenna_arrays: str | None) -> str:
    """``12m``, ``7m``, ``TP`` from ObsCore ``antenna_arrays`` ("A001:DA44 A002:DV12 ..."),
    by the most common antenna kind; ``unknown`` when there is nothing to tell."""
    kinds: Counter[str] = Counter()
    for token in (antenna_arrays or "").split():
        name = token.rsplit(":", 1)[-1].upper()
        kind = ARRAY_OF_ANTENNA.get(name[:2])
        if kind:
            kinds[kind] += 1
    if not kinds:
        return "unknown"
    return max(kinds, key=lambda k: (kinds[k], -ARRAY_ORDER.index(k)))


def separation_arcsec(a: Member, b: Member) -> float | None:
    """Great-circle distance (haversine), None when a position is missing."""
    if None in (a.ra, a.dec, b.ra, b.dec):
        return None
    ra1, de1, ra2, de2 = (math.radians(x) for x in (a.ra, a.dec, b.ra, b.dec))  # type: ignore[arg-type]
    h = (math.sin((de2 - de1) / 2) ** 2
         + math.cos(de1) * math.cos(de2) * math.sin((ra2 - ra1) / 2) ** 2)
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h)))) * 3600


def fields_overlap(a: Member, b: Member, tol: float) -> bool:
    """Whether two siblings observe one field: centres within the larger of ``tol`` and
    their mean field radius (positions unknown: trust the group OUS)."""
    sep = separation_arcsec(a, b)
    if sep is None:
        return True
    radius = ((a.fov_arcsec or 0.0) + (b.fov_arcsec or 0.0)) / 4
    return sep <= max(tol, radius)


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class Joined:
    """A member inside its source: its array, its 12-m configuration (TM1 the most
    extended, when the source has more than one) and the rule that joined it."""

    member: Member
    array: str
    config: str | None
    joined_by: str

    @property
    def label(self) -> str:
        return f"{self.array}-{self.config}" if self.config else self.array


@dataclass(frozen=True)
class Setup:
    """Spectral windows of the members that overlap in frequency: one spectral set-up."""

    band: str | None
    min_ghz: float
    max_ghz: float
    members: tuple[tuple[str, str, int | None], ...]  # (mous, target, spw)
    arrays: tuple[str, ...]

    @property
    def common(self) -> bool:
        """More than one array observed it (it can be imaged jointly)."""
        return len(self.arrays) > 1

    @property
    def label(self) -> str:
        band = f"B{self.band} " if self.band else ""
        return f"{band}{self.min_ghz:.3f}-{self.max_ghz:.3f} GHz"

    def as_dict(self) -> dict:
        return {"band": self.band, "min_ghz": self.min_ghz, "max_ghz": self.max_ghz,
                "arrays": list(self.arrays), "common": self.common,
                "members": [list(m) for m in self.members]}


@dataclass(frozen=True)
class Source:
    name: str
    members: tuple[Joined, ...]
    setups: tuple[Setup, ...]

    @property
    def keys(self) -> frozenset[tuple[str, str]]:
        return frozenset(j.member.key for j in self.members)

    @property
    def arrays(self) -> tuple[str, ...]:
        labels = {j.label for j in self.members}
        return tuple(sorted(labels, key=lambda x: (ARRAY_ORDER.index(x.split("-")[0]), x)))

    @property
    def position(self) -> tuple[float | None, float | None]:
        """The members' mean position (unit-vector mean: safe across RA = 0)."""
        pts = [(j.member.ra, j.member.dec) for j in self.members
               if j.member.ra is not None and j.member.dec is not None]
        if not pts:
            return None, None
        x = sum(math.cos(math.radians(d)) * math.cos(math.radians(r)) for r, d in pts)
        y = sum(math.cos(math.radians(d)) * math.sin(math.radians(r)) for r, d in pts)
        z = sum(math.sin(math.radians(d)) for _r, d in pts)
        ra = math.degrees(math.atan2(y, x)) % 360
        dec = math.degrees(math.atan2(z, math.hypot(x, y)))
        return ra, dec

    @property
    def fingerprint(self) -> str:
        return members_fingerprint(self.keys)


def members_fingerprint(keys: Iterable[tuple[str, str]]) -> str:
    """Changes exactly when the membership does (stage rows of a source key on it)."""
    text = "\n".join(f"{m}\t{t}" for m, t in sorted(keys))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- grouping
class _Union:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group(members: Iterable[Member], rules: Rules | None = None) -> list[Source]:
    """Group ``members`` into sources (sorted by name), each member in exactly one."""
    rules = rules or Rules()
    ms = sorted(set(members), key=lambda m: m.key)
    uf = _Union(len(ms))
    free = [i for i, m in enumerate(ms) if not rules.excluded(m)]
    names = {i: rules.norm(ms[i].target) for i in free}
    by_group: dict[tuple[str, str], list[int]] = {}
    for i in free:
        if ms[i].group_ous:
            by_group.setdefault((ms[i].group_ous, names[i]), []).append(i)
    for idx in by_group.values():
        for a_pos, a in enumerate(idx):
            for b in idx[a_pos + 1:]:
                if fields_overlap(ms[a], ms[b], rules.tolerance_arcsec):
                    uf.join(a, b)
    if rules.within != "group":
        tol = rules.tolerance_arcsec
        by_name: dict[str, list[int]] = {}
        for i in free:
            by_name.setdefault(names[i], []).append(i)
        pools = list(by_name.values()) if rules.within == "name" else [free]
        for pool in pools:
            _join_near(ms, pool, tol, uf)
    clusters: dict[int, list[int]] = {}
    for i in range(len(ms)):
        clusters.setdefault(uf.find(i), []).append(i)
    out = [_source([ms[i] for i in idx], rules) for idx in clusters.values()]
    return sorted(out, key=lambda s: (s.name.casefold(), sorted(s.keys)))


def _join_near(ms: list[Member], pool: list[int], tol: float, uf: _Union) -> None:
    """Join members of ``pool`` within ``tol`` arcsec (a sweep in declination)."""
    placed = sorted((i for i in pool if ms[i].dec is not None), key=lambda i: ms[i].dec)
    for a_pos, a in enumerate(placed):
        for b in placed[a_pos + 1:]:
            if (ms[b].dec - ms[a].dec) * 3600 > tol:  # type: ignore[operator]
                break
            sep = separation_arcsec(ms[a], ms[b])
            if sep is not None and sep <= tol:
                uf.join(a, b)


def _source(members: list[Member], rules: Rules) -> Source:
    joined = tuple(Joined(m, m.array, _config(m, members), _joined_by(m, members, rules))
                   for m in members)
    return Source(_name(members, rules), joined, _setups(joined))


def _name(members: list[Member], rules: Rules) -> str:
    """An alias's source name, else the most common target name (then the first)."""
    for m in members:
        alias = rules.alias_of(m.target)
        if alias:
            return alias
    counts = Counter(m.target for m in members)
    return sorted(counts, key=lambda n: (-counts[n], n))[0]


def _config(m: Member, members: list[Member]) -> str | None:
    """TM1, TM2 ... for 12-m members when the source holds more than one 12-m
    configuration (told apart by angular resolution; TM1 is the finest)."""
    if m.array != "12m" or m.ang_res_arcsec is None:
        return None
    levels: list[float] = []
    for res in sorted(x.ang_res_arcsec for x in members
                      if x.array == "12m" and x.ang_res_arcsec):
        if not levels or res > levels[-1] * CONFIG_RATIO:
            levels.append(res)
    if len(levels) < 2:
        return None
    level = max(i for i, lv in enumerate(levels) if m.ang_res_arcsec >= lv)
    return f"TM{level + 1}"


def _joined_by(m: Member, members: list[Member], rules: Rules) -> str:
    others = [o for o in members if o.key != m.key]
    if not others:
        return "excluded" if rules.excluded(m) else "alone"
    name = rules.norm(m.target)
    if m.group_ous and any(o.group_ous == m.group_ous and rules.norm(o.target) == name
                           and fields_overlap(m, o, rules.tolerance_arcsec) for o in others):
        return "group"
    seps = [separation_arcsec(m, o) for o in others if rules.norm(o.target) == name]
    if any(s is not None and s <= rules.tolerance_arcsec for s in seps):
        return "name"
    return "position"


def _setups(joined: tuple[Joined, ...]) -> tuple[Setup, ...]:
    """Cluster the members' windows by frequency overlap (half the narrower window)."""
    items = sorted(((w, j) for j in joined for w in j.member.windows),
                   key=lambda x: (x[0].min_ghz, x[0].max_ghz))
    clusters: list[list[tuple[Window, Joined]]] = []
    for w, j in items:
        for c in clusters:
            if any(w.overlap(cw) >= 0.5 for cw, _ in c):
                c.append((w, j))
                break
        else:
            clusters.append([(w, j)])
    out = []
    for c in clusters:
        bands = sorted({w.band for w, _ in c if w.band})
        keys = sorted({(j.member.mous_id, j.member.target, w.spw) for w, j in c},
                      key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2]))
        labels = sorted({j.label for _, j in c},
                        key=lambda x: (ARRAY_ORDER.index(x.split("-")[0]), x))
        out.append(Setup(",".join(bands) or None, min(w.min_ghz for w, _ in c),
                         max(w.max_ghz for w, _ in c), tuple(keys), tuple(labels)))
    return tuple(sorted(out, key=lambda s: s.min_ghz))
