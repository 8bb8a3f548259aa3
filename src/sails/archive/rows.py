"""ObsCore / ALminer rows -> catalog records (projects, MOUS, targets).

A target record is one (MOUS, source, spectral window): the archive's ``obs_id`` names the
spw as ``...source.NAME.spw.25``. Columns are matched by name, case-insensitively; ALminer's
own names (``MOUS_id``, ``ALMA_source_name``, ``RAJ2000`` ...) are accepted beside the
ObsCore ones. Only columns present in the input are written, so a poorer table (an ALminer
CSV) never blanks out what a richer one (a TAP result) stored. Units follow ALminer:
frequencies in GHz, resolution in kHz and km/s, sensitivities in uJy/beam, angles in arcsec.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sails.archive.fsupport import matching_window, parse_frequency_support
from sails.constants import C_KMS, C_M_S
from sails.errors import IngestError
from sails.ids import parse_uid

# canonical name -> accepted column names (first match wins, case-insensitive)
REQUIRED: dict[str, tuple[str, ...]] = {
    "member_ous_uid": ("member_ous_uid", "MOUS_id"),
    "target_name": ("target_name", "ALMA_source_name"),
    "s_ra": ("s_ra", "RAJ2000"),
    "s_dec": ("s_dec", "DEJ2000"),
    "proposal_id": ("proposal_id", "project_code"),
    "obs_id": ("obs_id",),
}
ALMINER: dict[str, str] = {
    "las": "LAS_arcsec",
    "fov": "FoV_arcsec",
    "ang_res": "ang_res_arcsec",
    "min_freq": "min_freq_GHz",
    "max_freq": "max_freq_GHz",
    "central_freq": "central_freq_GHz",
    "bandwidth_ghz": "bandwidth_GHz",
    "freq_res": "freq_res_kHz",
    "vel_res": "vel_res_kms",
    "cont_sens": "cont_sens_bandwidth",
    "line_sens_10": "line_sens_10kms",
    "line_sens_native": "line_sens_native",
}
OPTIONAL = (
    "obs_publisher_did", "obs_collection", "facility_name", "instrument_name",
    "dataproduct_type", "calib_level", "s_fov", "s_region", "s_resolution", "t_min", "t_max",
    "t_exptime", "t_resolution", "em_min", "em_max", "em_res_power", "pol_states",
    "access_url", "access_format", "data_rights", "gal_longitude", "gal_latitude",
    "band_list", "bandwidth", "antenna_arrays", "is_mosaic", "obs_release_date",
    "spatial_resolution", "frequency_support", "frequency", "velocity_resolution",
    "obs_creator_name", "pub_title", "first_author", "authors", "pub_abstract",
    "publication_year", "proposal_abstract", "proposal_authors", "sensitivity_10kms",
    "cont_sensitivity_bandwidth", "pwv", "group_ous_uid", "asdm_uid", "obs_title", "type",
    "scan_intent", "spatial_scale_max", "qa2_passed", "bib_reference", "science_keyword",
    "scientific_category", "lastModified",
)

_SPW = re.compile(r"\.spw\.(\d+)$")
_BYTES_REPR = re.compile(r"""^b(['"])(.*)\1$""", re.DOTALL)
_NULLS = frozenset({"", "nan", "--", "none", "null", "masked", "<na>"})


class RowProblem(ValueError):
    """One bad value in one row."""


# ---------------------------------------------------------------------- value cleaning
def text(v: Any) -> str | None:
    """A clean string or None (masked, NaN, empty; b'...' reprs unwrapped)."""
    if v is None:
        return None
    if v.__class__ is not str:
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, float) and math.isnan(v):
            return None
        v = str(v)
    s = v.strip()
    if not s:
        return None
    if s[0] == "b" and len(s) > 2 and s[1] in "'\"":
        m = _BYTES_REPR.match(s)
        if m:
            s = m.group(2).strip()
    return None if len(s) <= 8 and s.lower() in _NULLS else s


def number(v: Any, col: str) -> float | None:
    """A finite float or None for empty/NaN/masked; anything else is a :class:`RowProblem`."""
    if v is None:
        return None
    cls = v.__class__
    if cls is float or cls is int:
        try:
            x = float(v)
        except OverflowError:  # an int beyond any float
            raise RowProblem(f"{col} {str(v)[:20]}... is not finite") from None
        return x if math.isfinite(x) else None
    if isinstance(v, bool):
        raise RowProblem(f"{col} {v!r} is not a number")
    if not isinstance(v, str):
        if isinstance(v, (int, float)):
            x = float(v)
            return x if math.isfinite(x) else None
        v = text(v)
        if v is None:
            return None
    try:
        x = float(v)
    except ValueError:
        s = text(v)
        if s is None:
            return None
        raise RowProblem(f"{col} {s!r} is not a number") from None
    if math.isnan(x):
        return None
    if not math.isfinite(x):
        raise RowProblem(f"{col} {v.strip()!r} is not finite")
    return x


def integer(v: Any, col: str) -> int | None:
    x = number(v, col)
    if x is None:
        return None
    if x != int(x):
        raise RowProblem(f"{col} {v!r} is not an integer")
    return int(x)


def flag(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    s = text(v)
    if s is None:
        return None
    s = s.lower()
    if s in ("t", "true", "1", "y", "yes"):
        return 1
    if s in ("f", "false", "0", "n", "no"):
        return 0
    return None


def band_text(v: Any) -> str | None:
    """'3', '3 6'; a float 3.0 (pandas) becomes '3'."""
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return str(int(v))
    s = text(v)
    if s is None:
        return None
    items = []
    for item in s.replace(",", " ").split():
        try:
            f = float(item)
        except ValueError:
            items.append(item)
            continue
        if not math.isfinite(f):
            raise RowProblem(f"band {item[:20]!r} is not a band number")
        items.append(str(int(f)) if f == int(f) else item)
    return " ".join(items)


def spw_from_obs_id(obs_id: str | None) -> int | None:
    """``uid://A001/X1465/X2f66.source.HOPS_56.spw.33`` -> 33; None without a spw part."""
    if not obs_id:
        return None
    m = _SPW.search(obs_id)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------- records
@dataclass
class Record:
    """One input row, mapped to the catalog's three tables."""

    line: int
    project: dict[str, Any]
    mous: dict[str, Any]
    target: dict[str, Any]
    last_modified: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.mous["mous_id"], self.target["alma_source_name"], self.target["obs_id"])


@dataclass
class RecordSet:
    """Validated records of one input, plus what was wrong with the rest."""

    source: str
    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    duplicates: int = 0
    rows_read: int = 0

    def raise_if_problems(self, limit: int = 5) -> None:
        if not self.problems:
            return
        n = len(self.problems)
        shown = "; ".join(self.problems[:limit])
        more = f"; ... and {n - limit} more" if n > limit else ""
        raise IngestError(
            f"{n} bad row{'s' if n != 1 else ''} in {self.source}: {shown}{more}",
            hint="fix the rows named (nothing was ingested), or pass --skip-bad to ingest "
                 "the others",
        )


class RowMapper:
    """Maps rows of one table (fixed columns) to :class:`Record` objects."""

    def __init__(self, columns: Iterable[str], source: str):
        self.source = source
        by_lower: dict[str, str] = {}
        for c in columns:
            if c is not None:
                by_lower.setdefault(str(c).strip().lower(), c)
        self.col: dict[str, str] = {}
        self._has: dict[tuple[str, ...], bool] = {}
        missing = []
        for canon, names in REQUIRED.items():
            found = next((by_lower[n.lower()] for n in names if n.lower() in by_lower), None)
            if found is None:
                missing.append(" or ".join(names))
            else:
                self.col[canon] = found
        if missing:
            raise IngestError(
                f"{source} lacks required column{'s' if len(missing) > 1 else ''}: "
                + ", ".join(missing),
                hint="give an ALminer CSV or an ObsCore table (unknown extra columns are "
                     "ignored)",
            )
        for name in OPTIONAL:
            if name.lower() in by_lower:
                self.col[name] = by_lower[name.lower()]
        for key, name in ALMINER.items():
            if name.lower() in by_lower:
                self.col["alminer:" + key] = by_lower[name.lower()]

    def has(self, *names: str) -> bool:
        found = self._has.get(names)
        if found is None:
            found = self._has[names] = any(n in self.col for n in names)
        return found

    def map(self, row: Mapping[str, Any], line: int) -> Record:
        col = self.col

        def raw(name: str) -> Any:
            c = col.get(name)
            return row.get(c) if c is not None else None

        def num(name: str) -> float | None:
            return number(raw(name), col.get(name, name))

        mous_text = text(raw("member_ous_uid"))
        if mous_text is None:
            raise RowProblem(f"{col['member_ous_uid']} is empty")
        try:
            mous_id = parse_uid(mous_text, "MOUS uid").uri
        except Exception:
            raise RowProblem(f"malformed MOUS uid {mous_text!r}") from None
        name = text(raw("target_name"))
        if name is None:
            raise RowProblem(f"{col['target_name']} is empty")
        project_code = text(raw("proposal_id"))
        if project_code is None:
            raise RowProblem(f"{col['proposal_id']} is empty")
        obs_id = text(raw("obs_id"))
        if obs_id is None:
            raise RowProblem("obs_id is empty")
        for what, value in ((col["target_name"], name), (col["proposal_id"], project_code),
                            ("obs_id", obs_id)):
            if _CONTROL.search(value):  # names reach file names, terminals and the report
                raise RowProblem(f"{what} {value!r} contains a control character")
        ra, dec = num("s_ra"), num("s_dec")
        if ra is None or dec is None:
            raise RowProblem(f"{col['s_ra']}/{col['s_dec']} missing")
        if not (0.0 <= ra <= 360.0 and -90.0 <= dec <= 90.0):
            raise RowProblem(f"coordinates out of range: RA {ra}, Dec {dec}")

        project: dict[str, Any] = {"project_code": project_code, "proposal_id": project_code}
        for key, src in (("proposal_abstract", "proposal_abstract"),
                         ("proposal_authors", "proposal_authors"),
                         ("pi_name", "obs_creator_name"),
                         ("scientific_category", "scientific_category"),
                         ("bib_reference", "bib_reference"), ("pub_title", "pub_title"),
                         ("first_author", "first_author"), ("authors", "authors"),
                         ("pub_abstract", "pub_abstract")):
            if src in col:
                project[key] = text(raw(src))
        if "publication_year" in col:
            project["publication_year"] = integer(raw("publication_year"), "publication_year")

        mous: dict[str, Any] = {"mous_id": mous_id, "project_code": project_code}
        if "group_ous_uid" in col:
            g = text(raw("group_ous_uid"))
            if g is not None:
                try:
                    g = parse_uid(g, "group OUS uid").uri
                except Exception:
                    raise RowProblem(f"malformed group_ous_uid {g!r}") from None
            mous["group_ous_uid"] = g
        for key, src in (("obs_collection", "obs_collection"),
                         ("obs_publisher_did", "obs_publisher_did"),
                         ("facility_name", "facility_name"),
                         ("instrument_name", "instrument_name"),
                         ("antenna_arrays", "antenna_arrays"),
                         ("dataproduct_type", "dataproduct_type"),
                         ("access_url", "access_url"), ("access_format", "access_format"),
                         ("data_rights", "data_rights"), ("obs_title", "obs_title"),
                         ("scan_intent", "scan_intent"), ("obs_type", "type"),
                         ("obs_creator_name", "obs_creator_name"),
                         ("obs_release_date", "obs_release_date"),
                         ("qa2_passed", "qa2_passed"),
                         ("scientific_category", "scientific_category"),
                         ("science_keyword", "science_keyword")):
            if src in col:
                mous[key] = text(raw(src))
        if "calib_level" in col:
            mous["calib_level"] = integer(raw("calib_level"), "calib_level")
        if "pwv" in col:
            mous["pwv"] = num("pwv")

        target = self._target(row, raw, num, mous_id, name, obs_id, ra, dec)
        return Record(line, project, mous, target, text(raw("lastModified")) or "")

    def _target(self, row, raw, num, mous_id, name, obs_id, ra, dec) -> dict[str, Any]:
        col = self.col
        t: dict[str, Any] = {"mous_id": mous_id, "alma_source_name": name, "obs_id": obs_id,
                             "ra": ra, "dec": dec, "spw_id": spw_from_obs_id(obs_id)}
        for key in ("gal_longitude", "gal_latitude", "em_min", "em_max", "em_res_power", "pwv",
                    "t_min", "t_max", "t_exptime", "t_resolution", "spatial_scale_max",
                    "s_fov", "s_resolution"):
            if key in col:
                t[key] = num(key)
        for key in ("s_region", "frequency_support", "pol_states", "scan_intent", "asdm_uid"):
            if key in col:
                t[key] = text(raw(key))
        if "is_mosaic" in col:
            t["is_mosaic"] = flag(raw("is_mosaic"))
        if "band_list" in col:
            t["band_list"] = band_text(raw("band_list"))

        def alm(key: str) -> float | None:
            c = col.get("alminer:" + key)
            return number(row.get(c), c) if c else None

        def pick(value: float | None, key: str) -> float | None:
            """``value``, else ALminer's column ``key`` (read only when needed)."""
            return value if value is not None else alm(key)

        # Angular quantities (arcsec).
        if self.has("spatial_resolution", "s_resolution", "alminer:ang_res"):
            t["ang_res_arcsec"] = pick(_first(num("spatial_resolution"), num("s_resolution")),
                                       "ang_res")
        if self.has("spatial_scale_max", "alminer:las"):
            t["las_arcsec"] = pick(num("spatial_scale_max"), "las")
        if self.has("s_fov", "alminer:fov"):
            fov = num("s_fov")
            t["fov_arcsec"] = pick(fov * 3600.0 if fov is not None else None, "fov")

        # Spectral quantities: this row's window is the em_min..em_max range; the matching
        # entry of frequency_support gives its channel width and sensitivities exactly.
        em_min, em_max, power = num("em_min"), num("em_max"), num("em_res_power")
        lo = C_M_S / em_max / 1e9 if em_max else None
        hi = C_M_S / em_min / 1e9 if em_min else None
        windows = parse_frequency_support(t.get("frequency_support"))
        w = matching_window(windows, lo, hi)
        if lo is None and w is not None:
            lo, hi = w.min_ghz, w.max_ghz
        spectral = self.has("em_min", "em_max", "frequency_support", "alminer:min_freq",
                            "alminer:max_freq")
        if spectral:
            lo = pick(lo, "min_freq")
            hi = pick(hi, "max_freq")
            t["min_freq_ghz"] = lo
            t["max_freq_ghz"] = hi
            both = lo is not None and hi is not None
            t["central_freq_ghz"] = pick(0.5 * (lo + hi) if both else None, "central_freq")
            bw = num("bandwidth")
            t["bandwidth_ghz"] = pick(_first(hi - lo if both else None,
                                             bw / 1e9 if bw else None), "bandwidth_ghz")
        if spectral or self.has("em_res_power", "alminer:freq_res"):
            res = w.res_khz if w is not None else None
            if res is None and power and hi:
                res = hi * 1e6 / power
            t["freq_res_khz"] = pick(res, "freq_res")
        if self.has("em_res_power", "alminer:vel_res", "frequency_support"):
            vel = C_KMS / power if power else None
            if vel is None and t.get("freq_res_khz") and t.get("central_freq_ghz"):
                vel = t["freq_res_khz"] * 1e-6 / t["central_freq_ghz"] * C_KMS
            t["vel_res_kms"] = pick(vel, "vel_res")
        if self.has("cont_sensitivity_bandwidth", "alminer:cont_sens"):
            c = num("cont_sensitivity_bandwidth")
            t["cont_sens_bandwidth"] = pick(c * 1000.0 if c is not None else None, "cont_sens")
        if self.has("sensitivity_10kms", "frequency_support", "alminer:line_sens_10"):
            s10 = num("sensitivity_10kms")
            t["line_sens_10kms"] = pick(_first(s10 * 1000.0 if s10 is not None else None,
                                               w.sens_10kms_ujy if w else None), "line_sens_10")
        if self.has("frequency_support", "alminer:line_sens_native"):
            t["line_sens_native"] = pick(w.sens_native_ujy if w else None, "line_sens_native")
        return t


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def map_rows(columns: Iterable[str], rows: Iterable[Mapping[str, Any]], source: str,
             first_line: int = 1, line_word: str = "row") -> RecordSet:
    """Validate and map every row; duplicates (same MOUS, source, obs_id) are merged.

    Identical duplicates are counted and dropped; differing ones keep the row with the newer
    ``lastModified``, and with equal dates they are reported as a problem.
    """
    mapper = RowMapper(columns, source)
    out = RecordSet(source)
    seen: dict[tuple[str, str, str], int] = {}
    for i, row in enumerate(rows):
        line = first_line + i
        out.rows_read += 1
        try:
            rec = mapper.map(row, line)
        except (RowProblem, OverflowError) as exc:  # overflow: a number beyond any float
            out.problems.append(f"{line_word} {line}: {exc}")
            continue
        prev_i = seen.get(rec.key)
        if prev_i is None:
            seen[rec.key] = len(out.records)
            out.records.append(rec)
            continue
        prev = out.records[prev_i]
        out.duplicates += 1
        if (prev.project, prev.mous, prev.target) == (rec.project, rec.mous, rec.target):
            continue
        if rec.last_modified > prev.last_modified:
            out.records[prev_i] = rec
        elif rec.last_modified == prev.last_modified:
            out.problems.append(
                f"{line_word} {line}: conflicts with {line_word} {prev.line} (same MOUS "
                f"{rec.key[0]}, source {rec.key[1]!r}, obs_id {rec.key[2]!r}, different values)")
    return out
