"""The ``download`` stage: fetch what ingest listed for a MOUS, verified, into the layout.

What is fetched follows the same precedence rule as ingest's download plan (catalog
``files`` rows of the MOUS):

1. an SRDP restore (``srdp`` rows or ``mous.srdp_url``), crawled recursively below its URL,
   plus the README;
2. else, if raw ASDMs are listed (``raw``): the raw ASDM tarballs, the auxiliary tarball and
   the README, into ``datasets_raw/<mous_fs>/`` (``raw/``, ``calibration/``, ``script/``...).
   Raw data needs a calibration restore: the stage ends ``done`` with the ``raw_asdm``
   products and the ``restore`` stage restores them before ``verify``;
3. else the archive products (``product``, ``other``): tarballs are extracted safely; files
   listed inside a tarball (DataLink ``#this`` recursion) keep their path inside it, so a
   measurement set delivered file by file is put together again.

Bytes land in ``work/download/<mous_fs>/`` (resumable ``.part`` files), are organized into
``datasets/``, ``SRDP_weblogs/`` and ``datasets_raw/``, and each finished catalog file is
marked (``files.done_at``) with its outputs listed in ``datasets/<mous_fs>/.sails-download.json``
so a re-run never fetches it again. The temporary area is removed only after success.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from sails.archive.ingest import download_plan
from sails.atomic import write_json_atomic
from sails.catalog import Catalog, Product
from sails.errors import DownloadError, SailsError
from sails.ids import mous_uri, parse_uid
from sails.project import Project
from sails.stages.base import Outcome, StageContext
from sails.transfer import (
    Layout,
    Progress,
    RemoteFile,
    TruncatedArchiveError,
    crawl,
    download_file,
    download_many,
    make_client,
    make_progress,
    organize,
    safe_extract,
)
from sails.transfer.crawl import safe_relpath
from sails.transfer.organize import product_for

log = logging.getLogger("sails.stages.download")

MANIFEST_NAME = ".sails-download.json"
RAW_DOWNLOADED = "raw delivery downloaded (no SRDP restore): the restore stage restores it"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+ -]*$")


# ---------------------------------------------------------------------- manifest
class Manifest:
    """Which outputs each finished catalog file produced (survives the temp area)."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.root = root
        self.files: dict[str, list[dict[str, Any]]] = {}
        if path.is_file():
            try:
                self.files = json.loads(path.read_text()).get("files", {})
            except (OSError, ValueError, AttributeError):
                self.files = {}

    def _rel(self, p: str) -> str:
        path = Path(p)
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else p

    def _abs(self, p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else self.root / path

    def record(self, url: str, products: list[Product]) -> None:
        self.files[url] = [{"kind": p.kind, "path": self._rel(p.path), "bytes": p.bytes}
                           for p in products]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {"version": 1, "files": self.files}, indent=1)

    def products(self, url: str) -> list[Product] | None:
        """The recorded outputs of ``url`` if every one of them still exists."""
        entries = self.files.get(url)
        if entries is None:
            return None
        out = [Product(kind=e["kind"], path=str(self._abs(e["path"])), bytes=e.get("bytes"),
                       metrics={"url": url}) for e in entries]
        if not all(Path(p.path).exists() for p in out):
            return None
        return out


# ---------------------------------------------------------------------- helpers
def _file_name(row: dict) -> str:
    """A safe local file name for a DataLink row (never a path)."""
    for cand in (row.get("filename"), PurePosixPath(unquote(urlsplit(row["url"]).path)).name):
        if cand and _SAFE_NAME.match(cand) and ".." not in cand:
            return cand
    return f"file-{row['id']}"


def _rel_path(row: dict) -> str:
    """Where a listed file goes in the staging area: its path inside the tarball it was
    listed from (URL components after a ``*.tar`` component), else its file name."""
    parts = unquote(urlsplit(row["url"]).path).split("/")
    for i, part in enumerate(parts[:-1]):
        if part.endswith(".tar"):
            rel = safe_relpath("/".join(parts[i + 1:]))
            if rel is not None:
                return rel
    return _file_name(row)


def plan_files(catalog: Catalog, mous: str) -> tuple[str, list[dict]]:
    """(source, files rows) by ingest's precedence (:func:`download_plan`); a registered SRDP
    URL gets a files row first, so its completion can be recorded like any file's."""
    srdp_url = (catalog.mous(mous).get("srdp_url") or "").strip()
    if srdp_url and not any(r["url"] == srdp_url for r in catalog.files(mous)):
        catalog.add_file(mous, srdp_url, "srdp", semantics="#srdp-restore")
    plan = download_plan(catalog, mous)
    return plan.source, plan.files


def _is_tarball(name: str, content_type: str | None) -> bool:
    return name.endswith((".tar", ".tar.gz")) or (content_type or "").startswith(
        "application/x-tar")


def _label(mous_fs: str, name: str) -> str:
    return f"{mous_fs[-10:]}/{name}"


class _Run:
    """State of one download_mous call."""

    def __init__(self, project: Project, catalog: Catalog, mous: str, client: httpx.Client,
                 progress: Progress) -> None:
        self.project = project
        self.catalog = catalog
        self.mous = mous
        self.fs = parse_uid(mous).fs
        self.client = client
        self.progress = progress
        self.policy = project.settings.download
        self.work = project.work / "download" / self.fs
        self.layout = Layout(project.datasets / self.fs, project.weblogs / self.fs,
                             project.datasets_raw / self.fs)
        self.manifest = Manifest(self.layout.datasets / MANIFEST_NAME, project.root)

    def finished(self, row: dict) -> list[Product] | None:
        """Outputs of a file finished by an earlier run (None: fetch it)."""
        if not row.get("done_at"):
            return None
        return self.manifest.products(row["url"])

    def done(self, row: dict, products: list[Product], *, tag: bool = True) -> None:
        """Record a finished catalog file: its outputs in the manifest, done_at in the DB."""
        if tag:  # the product came from this one URL
            for p in products:
                p.metrics = {"url": row["url"]}
        self.manifest.record(row["url"], products)
        self.catalog.mark_file_done(row["id"])

    # ---------------------------------------------------------------- SRDP restores
    def srdp(self, row: dict) -> list[Product]:
        staging = self.work / f"srdp-{row['id']}"
        listed = crawl(self.client, row["url"], self.policy)
        if not listed:
            raise DownloadError(f"the SRDP restore at {row['url']} lists no files",
                                hint="the restore may have expired; request a new one")
        files = [RemoteFile(f.url, staging / f.relpath, size=f.size,
                            label=_label(self.fs, f.relpath)) for f in listed]
        download_many(self.client, files, self.policy, progress=self.progress)
        products = organize(staging, self.layout)
        self.done(row, products)
        shutil.rmtree(staging, ignore_errors=True)
        return products

    # ---------------------------------------------------------------- DataLink files
    def datalink(self, rows: list[dict]) -> list[Product]:
        """Fetch listed files; extract tarballs; reassemble files listed inside tarballs."""
        tars, loose = [], []
        for r in rows:
            if _is_tarball(_file_name(r), r.get("content_type")):
                dest = self.work / "tars" / _file_name(r)
                tars.append((r, RemoteFile(r["url"], dest, size=r.get("size"),
                                           checksum=r.get("checksum"),
                                           label=_label(self.fs, dest.name))))
            else:
                dest = self.work / "files" / _rel_path(r)
                loose.append((r, RemoteFile(r["url"], dest, size=r.get("size"),
                                            checksum=r.get("checksum"),
                                            label=_label(self.fs, _rel_path(r)))))
        download_many(self.client, [rf for _, rf in tars + loose], self.policy,
                      progress=self.progress)
        products: list[Product] = []
        for row, rf in tars:
            got = self.unpack(rf)
            self.done(row, got)
            products += got
        if loose:
            moved: dict[Path, Product] = {}
            products += organize(self.work / "files", self.layout, moved)
            for row, rf in loose:
                p = product_for(rf.dest, moved)
                self.done(row, [p] if p else [], tag=False)
        return products

    def unpack(self, rf: RemoteFile) -> list[Product]:
        """Extract a tarball (re-fetching it once if truncated), organize, clean up."""
        target = self.work / "extract" / rf.dest.name
        for attempt in (1, 2):
            try:
                safe_extract(rf.dest, target)
                break
            except TruncatedArchiveError as exc:
                rf.dest.unlink(missing_ok=True)
                if attempt == 2:
                    raise DownloadError(f"{exc} (again after a fresh download)",
                                        hint="the archive copy may be damaged; report it") \
                        from None
                log.warning("event=download.truncated file=%s action=refetch", rf.dest.name)
                self.catalog.log_event(self.mous, f"{exc}; deleted and fetching again",
                                       actor="download", stage="download")
                download_file(self.client, rf, self.policy, progress=self.progress)
        products = organize(target, self.layout)
        shutil.rmtree(target, ignore_errors=True)
        rf.dest.unlink(missing_ok=True)
        return products

    # ---------------------------------------------------------------- plan
    def resolve_files(self) -> None:
        """The MOUS's DataLink file list, when ingest could not get it (network): an
        unreachable archive raises a TransientError, so the stage is retried with backoff."""
        from sails.archive.ingest import ingest_files
        from sails.archive.service import resolve_datalink

        files = resolve_datalink([self.mous], self.project.settings.archive)
        ingest_files(self.catalog, files)
        self.catalog.log_event(self.mous, f"file list resolved ({len(files[self.mous][0])} "
                               "file(s))", actor="download", stage="download")

    def run(self) -> list[Product]:
        source, rows = plan_files(self.catalog, self.mous)
        if source == "none" and not self.catalog.files(self.mous):
            self.resolve_files()
            source, rows = plan_files(self.catalog, self.mous)
        if source == "none":
            raise DownloadError(f"nothing to download for {self.mous}: the catalog lists no files",
                                hint="run ingest (DataLink) or `sails ingest srdp MOUS URL`")
        products: list[Product] = []
        todo = []
        # Files listed one by one are put together (e.g. a measurement set) in one batch:
        # if any of them is unfinished, the whole batch is fetched again, so a folder is
        # never rebuilt from only part of its files.
        loose = [r for r in rows if r["kind"] != "srdp"
                 and not _is_tarball(_file_name(r), r.get("content_type"))]
        redo_loose = any(self.finished(r) is None for r in loose)
        for row in rows:
            prior = None if (redo_loose and row in loose) else self.finished(row)
            if prior is not None:
                products += prior
            elif row["kind"] == "srdp":
                products += self.srdp(row)
            else:
                todo.append(row)
        if todo:
            products += self.datalink(todo)
        unique: dict[str, Product] = {}
        for p in products:
            unique.setdefault(p.path, p)
        return list(unique.values())


def is_raw_only(kinds: Iterable[str]) -> bool:
    """Raw ASDMs and no measurement set: verify waits for a calibration restore."""
    kinds = set(kinds)
    return "raw_asdm" in kinds and "ms" not in kinds


def download_mous(
    project: Project,
    catalog: Catalog,
    mous_id: str,
    *,
    client: httpx.Client | None = None,
    progress: Progress | None = None,
) -> list[Product]:
    """Fetch, verify and organize everything the catalog lists for one MOUS.

    Returns the products (kinds ``ms``, ``weblog``, ``raw_asdm``, ``file``) with sizes.
    Raises :class:`DownloadError` (permanent: 4xx, size/checksum mismatch, unsafe tarball,
    disk full) or :class:`TransientError` (network, 5xx) after logging the reason as an event
    on the MOUS; partial files stay in ``work/download/<mous_fs>/`` for the next attempt.
    """
    mous = mous_uri(mous_id)
    catalog.mous(mous)  # NotFoundError for an unknown MOUS
    own_client = client is None
    archive = project.settings.archive
    client = client or make_client(project.settings.download,
                                   archive_urls=(archive.tap_url, archive.datalink_url))
    reporter = progress or make_progress()
    try:
        with reporter as active:
            run = _Run(project, catalog, mous, client, active)
            try:
                products = run.run()
            except OSError as exc:
                raise DownloadError(f"file system error while downloading {mous}: {exc}") \
                    from None
    except SailsError as exc:
        with suppress(SailsError):  # a busy catalog must not hide the real error
            catalog.log_event(mous, f"download failed: {exc.one_line()}", actor="download",
                              stage="download")
        raise
    finally:
        if own_client:
            client.close()
    shutil.rmtree(run.work, ignore_errors=True)
    total = sum(p.bytes or 0 for p in products)
    log.info("event=download.mous_done mous=%s products=%d bytes=%d", mous, len(products), total)
    return products


def run(ctx: StageContext) -> Outcome:
    """Stage entry point (see sails.stages.base)."""
    products = download_mous(ctx.project, ctx.catalog, ctx.row.mous_id)
    if is_raw_only(p.kind for p in products):
        return Outcome.done(products=products, reason=RAW_DOWNLOADED)
    return Outcome.done(products=products)
