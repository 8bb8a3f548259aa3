"""A read-only snapshot of the catalog, loaded in a handful of bulk queries.

The report must never change the catalog, so it opens the SQLite file with ``mode=ro``
(no migration, no WAL checkpoint by us) instead of going through :class:`Catalog`. Bulk
queries keep a 2,000-MOUS survey fast; every column is read with ``.get`` so an older
schema still renders.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sails.errors import CatalogError

# Worst first: the state that best describes a target whose stages disagree.
OVERALL_ORDER = ("failed", "blocked", "running", "pending", "done", "skipped")


@dataclass
class Unit:
    """One report page: a target of a MOUS (or the MOUS itself when it has no targets yet)."""

    mous_id: str
    target: str
    key: str  # stable file-name stem (see page_stem)
    rows: list[dict] = field(default_factory=list)  # catalog target rows for this source
    stages: list[dict] = field(default_factory=list)  # per-target stage rows
    products: list[dict] = field(default_factory=list)  # per-target products

    @property
    def band(self) -> str:
        bands = sorted({str(r.get("band_list") or "").strip() for r in self.rows} - {""})
        return " ".join(bands)

    @property
    def position(self) -> tuple[float, float] | None:
        for r in self.rows:
            if r.get("ra") is not None and r.get("dec") is not None:
                return float(r["ra"]), float(r["dec"])
        return None


@dataclass
class Mous:
    mous_id: str
    meta: dict
    project: dict
    stages: list[dict]  # MOUS-level stage rows (target '')
    products: list[dict]  # MOUS-level products (target '')
    units: list[Unit]
    events: list[dict] = field(default_factory=list)  # newest last
    files: dict = field(default_factory=dict)  # archive files: n, bytes, done

    @property
    def fs(self) -> str:
        from sails.ids import parse_uid

        return parse_uid(self.mous_id, "MOUS uid").fs


@dataclass
class Snapshot:
    taken_at: float
    mous: list[Mous]
    schema_version: int

    def units(self) -> list[tuple[Mous, Unit]]:
        return [(m, u) for m in self.mous for u in m.units]


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open the catalog so that no statement can write to it."""
    if not path.is_file():
        raise CatalogError(f"no catalog at {path}", hint="run `sails init` first")
    uri = "file:" + quote(str(path.resolve())) + "?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=30.0)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA query_only = ON")
        con.execute("PRAGMA busy_timeout = 30000")
        con.execute("PRAGMA user_version").fetchone()
    except sqlite3.DatabaseError as exc:
        raise CatalogError(
            f"cannot read the catalog {path} ({exc})",
            hint="check the file is a sails catalog and readable",
        ) from None
    return con


def _rows(con: sqlite3.Connection, sql: str) -> list[dict]:
    try:
        return [dict(r) for r in con.execute(sql)]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise CatalogError(f"cannot read the catalog: {exc}") from None


def _file_counts(con: sqlite3.Connection) -> dict[str, dict]:
    """Archive files per MOUS: how many, their size, how many finished downloading."""
    try:
        rows = con.execute(
            "SELECT mous_id, COUNT(*) n, SUM(size) bytes, SUM(done_at IS NOT NULL) done"
            " FROM files GROUP BY mous_id").fetchall()
    except sqlite3.OperationalError:  # v1 catalog (no done_at) or no files table
        rows = [dict(r, done=None) for r in _rows(
            con, "SELECT mous_id, COUNT(*) n, SUM(size) bytes FROM files GROUP BY mous_id")]
    return {r["mous_id"]: dict(r) for r in rows}


def page_stem(mous_fs: str, target: str) -> str:
    """A file-name stem safe for any source name (spaces, quotes, '+', unicode)."""
    from sails.names import short_hash

    if not target:
        return f"{mous_fs}/_mous"
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in target)[:60].strip("._")
    digest = short_hash(target)
    return f"{mous_fs}/{slug or 'target'}-{digest}"


def load_snapshot(catalog_path: Path) -> Snapshot:
    """Everything the report shows, in one read transaction."""
    con = open_readonly(catalog_path)
    try:
        con.execute("BEGIN")  # one consistent view across the queries below
        mous_rows = _rows(con, "SELECT * FROM mous ORDER BY project_code, mous_id")
        projects = {r["project_code"]: r for r in _rows(con, "SELECT * FROM projects")}
        targets = _rows(con, "SELECT * FROM targets ORDER BY mous_id, alma_source_name, spw_id,"
                             " obs_id")
        stages = _rows(con, "SELECT * FROM stages ORDER BY mous_id, target, id")
        products = _rows(con, "SELECT * FROM products ORDER BY mous_id, target, id")
        events = _rows(con, "SELECT * FROM events ORDER BY id")
        files = _file_counts(con)
        version = con.execute("PRAGMA user_version").fetchone()[0]
        con.execute("COMMIT")
    finally:
        con.close()

    for p in products:
        raw = p.get("metrics")
        try:
            p["metrics"] = json.loads(raw) if raw else {}
        except (TypeError, ValueError):
            p["metrics"] = {}
        if not isinstance(p["metrics"], dict):
            p["metrics"] = {"value": p["metrics"]}

    t_by: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for t in targets:
        t_by[t["mous_id"]][t["alma_source_name"]].append(t)
    s_by: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for s in stages:
        s_by[s["mous_id"]][s.get("target") or ""].append(s)
    p_by: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for p in products:
        p_by[p["mous_id"]][p.get("target") or ""].append(p)
    e_by: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        e_by[e["mous_id"]].append(e)

    out = []
    from sails.ids import parse_uid

    for m in mous_rows:
        mid = m["mous_id"]
        fs = parse_uid(mid, "MOUS uid").fs
        names = set(t_by[mid]) | (set(s_by[mid]) - {""}) | (set(p_by[mid]) - {""})
        units = [
            Unit(mous_id=mid, target=n, key=page_stem(fs, n), rows=t_by[mid].get(n, []),
                 stages=s_by[mid].get(n, []), products=p_by[mid].get(n, []))
            for n in sorted(names)
        ]
        if not units:
            units = [Unit(mous_id=mid, target="", key=page_stem(fs, ""))]
        out.append(Mous(
            mous_id=mid, meta=m, project=projects.get(m.get("project_code"), {}),
            stages=s_by[mid].get("", []), products=p_by[mid].get("", []), units=units,
            events=e_by.get(mid, []), files=files.get(mid, {}),
        ))
    return Snapshot(taken_at=time.time(), mous=out, schema_version=version)


def overall_state(stage_rows: list[dict]) -> str:
    """One word for a list of stage rows: the worst state, 'done' when all finished."""
    states = {s["status"] for s in stage_rows}
    if not states:
        return "pending"
    for st in ("failed", "blocked", "running", "pending"):
        if st in states:
            return st
    return "done" if "done" in states else "skipped"


def stage_duration(s: dict, now: float) -> float | None:
    if s.get("duration_s") is not None:
        return float(s["duration_s"])
    if s.get("status") == "running" and s.get("started_at"):
        return max(0.0, now - float(s["started_at"]))
    if s.get("started_at") and s.get("finished_at"):
        return max(0.0, float(s["finished_at"]) - float(s["started_at"]))
    return None


def by_kind(products: list[dict], kind: str) -> list[dict]:
    return [p for p in products if p.get("kind") == kind]


def first_kind(products: list[dict], kind: str) -> dict | None:
    found = by_kind(products, kind)
    return found[-1] if found else None


def metric(p: dict | None, name: str, default: Any = None) -> Any:
    if not p:
        return default
    return (p.get("metrics") or {}).get(name, default)


LINE_RE = re.compile(r"\.([^./]+)\.(?:cube|mom0|mom1|mom8)(?:\.|$)")


def line_name(p: dict) -> str:
    """The line a cube or moment map is of: its ``line`` metric, else from the file name."""
    name = metric(p, "line")
    if name:
        return str(name)
    m = LINE_RE.search(Path(p["path"]).name)
    return m.group(1) if m else "line"
