"""Records and DataLink files -> the catalog, in one transaction per ingest.

Idempotent: the catalog's upserts report added / updated / unchanged, and re-ingesting the
same rows changes nothing. Metadata updates never touch stage states; the only state this
module changes is the raw-only policy below.

Raw-only policy: a MOUS whose DataLink lists raw ASDMs but no SRDP restore keeps ``download``
pending (the raw delivery will be fetched) and is listed as ``raw_only``: its ``restore``
stage restores the calibration from the delivery before ``verify`` runs. A ``verify`` that
an older version blocked with :attr:`Block.NEEDS_RESTORE` is unblocked. Registering an SRDP
URL (:func:`register_srdp`) makes the download fetch the SRDP restore instead (SRDP data take
precedence over raw data) and ``restore`` is then skipped.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

from sails.archive.datalink import FileLink, filename_of
from sails.archive.rows import Record, RecordSet
from sails.catalog import Block, Catalog
from sails.errors import IllegalTransitionError, UserInputError
from sails.ids import mous_uri

ACTOR = "ingest"


@dataclass
class Counts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, result: str) -> None:
        setattr(self, result, getattr(self, result) + 1)

    @property
    def total(self) -> int:
        return self.added + self.updated + self.unchanged

    def as_dict(self) -> dict[str, int]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged}


def human_bytes(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


@dataclass
class DownloadPlan:
    """What the download stage of one MOUS will fetch, by the precedence rule."""

    mous_id: str
    source: Literal["srdp", "raw", "products", "none"]
    files: list[dict[str, Any]]
    total_bytes: int | None  # None when some size is unknown
    needs_restore: bool

    def describe(self) -> str:
        n = len(self.files)
        size = human_bytes(self.total_bytes) if self.total_bytes is not None \
            else "size unknown"
        if self.source == "srdp":
            return f"SRDP restore (calibrated MS): {n} file{'s' if n != 1 else ''}, {size}"
        if self.source == "raw":
            n_raw = sum(1 for f in self.files if f["kind"] == "raw")
            extra = [k for k in ("auxiliary", "readme") if any(f["kind"] == k
                                                              for f in self.files)]
            plus = f" + {'/'.join(extra)}" if extra else ""
            return (f"raw: {n_raw} ASDM{'s' if n_raw != 1 else ''}{plus}, {size};"
                    " needs calibration restore")
        if self.source == "products":
            return f"no raw or SRDP data listed; only archive products ({n} files)"
        return "nothing resolved yet (no DataLink files; run `sails ingest datalink`)"

    def as_dict(self) -> dict[str, Any]:
        return {"mous_id": self.mous_id, "source": self.source, "n_files": len(self.files),
                "total_bytes": self.total_bytes, "needs_restore": self.needs_restore,
                "urls": [f["url"] for f in self.files]}


def download_plan(catalog: Catalog, mous_id: str) -> DownloadPlan:
    """SRDP (with the README) if registered; else raw ASDMs + auxiliary + README."""
    mous_id = mous_uri(mous_id)
    meta = catalog.mous(mous_id)
    # DataLink service rows describe listings, not files to fetch.
    files = [f for f in catalog.files(mous_id) if f["url"]
             and "content=datalink" not in (f.get("content_type") or "")]
    srdp = [f for f in files if f["kind"] == "srdp"]
    if meta.get("srdp_url") and not any(f["url"] == meta["srdp_url"] for f in srdp):
        srdp.append({"url": meta["srdp_url"], "kind": "srdp", "size": None,
                     "filename": filename_of(meta["srdp_url"])})
    readme = [f for f in files if f["kind"] == "readme"]
    raw = [f for f in files if f["kind"] == "raw"]
    if srdp:
        chosen, source, restore = srdp + readme, "srdp", False
    elif raw:
        aux = [f for f in files if f["kind"] == "auxiliary"]
        chosen, source, restore = raw + aux + readme, "raw", True
    elif products := [f for f in files if f["kind"] in ("product", "other")]:
        chosen, source, restore = products + readme, "products", False
    else:
        chosen, source, restore = [], "none", False
    sizes = [f.get("size") for f in chosen]
    total = None if any(s is None for s in sizes) else sum(sizes)
    return DownloadPlan(mous_id, source, chosen, total, restore)  # type: ignore[arg-type]


@dataclass
class IngestSummary:
    source: str
    projects: Counts = field(default_factory=Counts)
    mous: Counts = field(default_factory=Counts)
    targets: Counts = field(default_factory=Counts)
    files: Counts = field(default_factory=Counts)
    rows_read: int = 0
    duplicates: int = 0
    skipped: list[str] = field(default_factory=list)
    raw_only: list[str] = field(default_factory=list)  # restored by the restore stage
    unblocked: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    plans: list[DownloadPlan] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "dry_run": self.dry_run, "rows_read": self.rows_read,
            "duplicates": self.duplicates, "skipped": self.skipped,
            "projects": self.projects.as_dict(), "mous": self.mous.as_dict(),
            "targets": self.targets.as_dict(), "files": self.files.as_dict(),
            "raw_only": self.raw_only, "unblocked": self.unblocked, "warnings": self.warnings,
            "plans": [p.as_dict() for p in self.plans],
        }


class _DryRun(Exception):
    """Raised inside the write transaction to roll a dry run back."""


def _newest(records: list[Record]) -> Record:
    """The record with the newest lastModified; the first one on ties (deterministic)."""
    best = records[0]
    for r in records[1:]:
        if r.last_modified > best.last_modified:
            best = r
    return best


def apply_raw_only_policy(catalog: Catalog, con: sqlite3.Connection, mous_id: str,
                          summary: IngestSummary | None = None) -> None:
    """List a raw-only MOUS (its restore stage restores it); a verify that an older version
    blocked waiting for a restore is unblocked, since restore now runs before it."""
    plan = download_plan(catalog, mous_id)
    verify = catalog.find_stage(mous_id, "verify")
    why = ("SRDP restore registered" if plan.source == "srdp"
           else "the restore stage restores the raw delivery")
    if catalog.unblock(verify.id, why, only_code=Block.NEEDS_RESTORE, actor=ACTOR,
                       con=con) and summary is not None:
        summary.unblocked.append(mous_id)
    if plan.source == "raw" and summary is not None and \
            catalog.find_stage(mous_id, "download").status == "pending":
        summary.raw_only.append(mous_id)


def _store_files(catalog: Catalog, con: sqlite3.Connection, mous_id: str,
                 links: list[FileLink], summary: IngestSummary) -> None:
    for f in links:
        summary.files.add(catalog.add_file(
            mous_id, f.url, f.kind, filename=f.filename, size=f.size, semantics=f.semantics,
            content_type=f.content_type, con=con))


def ingest_records(catalog: Catalog, recordset: RecordSet,
                   files: Mapping[str, tuple[list[FileLink], list[str]]] | None = None, *,
                   dry_run: bool = False, skip_bad: bool = False) -> IngestSummary:
    """Upsert projects, MOUS, targets (and DataLink files) in one transaction.

    ``files`` maps MOUS uid -> (files, DataLink error messages), as
    :meth:`DatalinkClient.resolve_many` returns. Bad rows abort the whole ingest unless
    ``skip_bad``; with ``dry_run`` everything is computed and then rolled back.
    """
    if not skip_bad:
        recordset.raise_if_problems()
    summary = IngestSummary(recordset.source, rows_read=recordset.rows_read,
                            duplicates=recordset.duplicates, skipped=list(recordset.problems),
                            dry_run=dry_run)
    files = {mous_uri(k): v for k, v in (files or {}).items()}
    by_project: dict[str, list[Record]] = {}
    by_mous: dict[str, list[Record]] = {}
    for r in recordset.records:
        by_project.setdefault(r.project["project_code"], []).append(r)
        by_mous.setdefault(r.mous["mous_id"], []).append(r)
    try:
        with catalog.write() as con:
            for recs in by_project.values():
                summary.projects.add(catalog.upsert_project(_newest(recs).project, con=con))
            for mous_id, recs in by_mous.items():
                row = dict(_newest(recs).mous)
                if mous_id in files:
                    row["num_asdms"] = sum(1 for f in files[mous_id][0] if f.kind == "raw")
                summary.mous.add(catalog.upsert_mous(row, con=con))
            for r in recordset.records:
                summary.targets.add(catalog.upsert_target(r.target, con=con))
            for mous_id, (links, errors) in files.items():
                if mous_id not in by_mous:
                    catalog.mous(mous_id)  # must exist already
                _store_files(catalog, con, mous_id, links, summary)
                summary.warnings += [f"{mous_id}: DataLink: {e}" for e in errors]
                if not links:
                    summary.warnings.append(f"{mous_id}: DataLink lists no files")
                apply_raw_only_policy(catalog, con, mous_id, summary)
            for mous_id in list(by_mous) + [m for m in files if m not in by_mous]:
                summary.plans.append(download_plan(catalog, mous_id))
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return summary


def ingest_files(catalog: Catalog, files: Mapping[str, tuple[list[FileLink], list[str]]],
                 source: str = "DataLink") -> IngestSummary:
    """Store DataLink files for MOUS already in the catalog (``sails ingest datalink``)."""
    return ingest_records(catalog, RecordSet(source), files)


# ---------------------------------------------------------------------- SRDP and spw remap
def check_url(url: str) -> str:
    """An http(s) URL without whitespace, control characters or embedded credentials
    (downloads fetch over HTTP only; a password in it would be kept in the catalog's events)."""
    u = url.strip()
    if not u or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in u):
        raise UserInputError(f"malformed URL {url!r}")
    p = urlparse(u)
    if p.scheme in ("http", "https") and p.netloc and "@" in p.netloc:
        raise UserInputError("the URL holds a user name or password",
                             hint="give the URL without credentials")
    if p.scheme in ("http", "https") and p.netloc:
        return u
    raise UserInputError(f"malformed URL {url!r}",
                         hint="give an http(s):// URL of the SRDP restore")


@dataclass
class SrdpResult:
    mous_id: str
    url: str
    changed: bool
    unblocked: bool
    download_reset: bool
    note: str | None
    plan: DownloadPlan


def register_srdp(catalog: Catalog, mous_id: str, url: str, actor: str = "user") -> SrdpResult:
    """Record an SRDP restore URL for a MOUS: ``mous.srdp_url`` plus a ``srdp`` files row.

    Unblocks ``verify`` if it waited for a restore. A download that already fetched raw
    data is sent back to pending (with what follows it) so the restore gets fetched; a
    running download is refused.
    """
    mous_id = mous_uri(mous_id)
    url = check_url(url)
    meta = catalog.mous(mous_id)
    download = catalog.find_stage(mous_id, "download")
    before = download_plan(catalog, mous_id)
    if download.status == "running":
        raise IllegalTransitionError(
            f"{mous_id}: the download is running; cannot switch it to the SRDP restore now",
            hint="wait for it to finish (or stop it), then register the SRDP URL again")
    changed = meta.get("srdp_url") != url
    unblocked = False
    with catalog.write() as con:
        if changed:
            catalog.set_mous_field(mous_id, "srdp_url", url, actor=actor, con=con)
        catalog.add_file(mous_id, url, "srdp", filename=filename_of(url),
                         semantics="#srdp-restore", con=con)
        verify = catalog.find_stage(mous_id, "verify")
        if catalog.unblock(verify.id, f"SRDP restore registered: {url}",
                           only_code=Block.NEEDS_RESTORE, actor=actor, con=con):
            unblocked = True
    reset = False
    note = None
    if download.status == "done" and before.source != "srdp":
        catalog.reset(mous_id, "download", actor=actor)
        reset = True
    elif download.status == "done" and changed:
        note = ("the download already finished with the previous SRDP restore; run "
                f"`sails reset {mous_id} --stage download` to fetch the new one")
    return SrdpResult(mous_id, url, changed, unblocked, reset, note,
                      download_plan(catalog, mous_id))


class _Pairs(list):
    """A JSON object's (key, value) pairs in order, duplicates kept."""


def parse_spw_remap(text: str | Mapping[Any, Any]) -> dict[int, int]:
    """``'{"25": 0, "27": 1}'`` -> {25: 0, 27: 1}; non-negative ints, no two keys to one id."""
    if isinstance(text, Mapping):
        pairs = list(text.items())
    else:
        try:
            pairs = json.loads(text, object_pairs_hook=_Pairs)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"spw remap is not valid JSON: {exc.msg} at column "
                                 f"{exc.colno}", hint='e.g. \'{"25": 0, "27": 1}\'') from None
        if not isinstance(pairs, _Pairs):
            raise UserInputError("spw remap must be a JSON object like {\"25\": 0}")
    out: dict[int, int] = {}
    for k, v in pairs:
        try:
            key = int(str(k).strip())
        except ValueError:
            raise UserInputError(f"spw remap key {k!r} is not an integer spw id") from None
        if isinstance(v, bool) or not isinstance(v, int):
            raise UserInputError(f"spw remap value for {k!r} must be an integer, got {v!r}")
        if key < 0 or v < 0:
            raise UserInputError(f"spw ids must be non-negative ({k!r}: {v!r})")
        if key in out:
            raise UserInputError(f"spw {key} is given twice in the remap")
        out[key] = v
    targets = list(out.values())
    dup = sorted({v for v in targets if targets.count(v) > 1})
    if dup:
        raise UserInputError(f"spw remap sends several spws to {dup[0]}",
                             hint="each archive spw needs its own new id")
    return out


def set_spw_remap(catalog: Catalog, mous_id: str, remap: str | Mapping[Any, Any],
                  actor: str = "user") -> tuple[dict[int, int], list[int]]:
    """Store a validated remap (``{}`` clears it); returns it and the keys the catalog does
    not know as science spws of this MOUS (worth a warning, not an error)."""
    mous_id = mous_uri(mous_id)
    mapping = parse_spw_remap(remap)
    catalog.mous(mous_id)
    value = json.dumps({str(k): mapping[k] for k in sorted(mapping)}) if mapping else None
    catalog.set_mous_field(mous_id, "spw_remap", value, actor=actor)
    known = {t["spw_id"] for t in catalog.targets(mous_id) if t["spw_id"] is not None}
    unknown = sorted(k for k in mapping if known and k not in known)
    return mapping, unknown
