"""The ``download`` stage: fetch what ingest listed for a MOUS, verified, into the layout.

What is fetched (from the catalog's ``files`` rows of the MOUS):

* ``srdp`` rows (or ``mous.srdp_url``): an SRDP restore URL, crawled recursively below the
  URL; preferred over everything else.
* otherwise DataLink files (``product``, ``auxiliary``, ``readme``, ``other``); tarballs are
  extracted safely. Raw ASDMs (``raw``) follow ``download.fetch_raw``: ``auto`` fetches them
  only when no calibrated measurement set arrived otherwise.

Bytes land in ``work/download/<mous_fs>/`` (resumable ``.part`` files), are organized into
``datasets/``, ``SRDP_weblogs/`` and ``datasets_raw/``, and each finished catalog file is
marked (``files.done_at``) with its outputs listed in ``datasets/<mous_fs>/.sails-download.json``
so a re-run never fetches it again. The temporary area is removed only after success.
A MOUS with only raw ASDMs ends ``done`` and blocks its ``verify`` stage.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import httpx

from sails.catalog import Catalog, Product
from sails.errors import DownloadError, SailsError
from sails.ids import mous_uri, parse_uid
from sails.project import Project
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
from sails.transfer.organize import place

if TYPE_CHECKING:  # the stage framework arrives from main
    from sails.stages.base import Outcome, StageContext

log = logging.getLogger("sails.stages.download")

RAW_BLOCK_REASON = "needs calibration restore: only raw ASDMs are available"
MANIFEST_NAME = ".sails-download.json"
DATALINK_KINDS = ("readme", "product", "auxiliary", "other")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


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
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "files": self.files}, indent=1))
        os.replace(tmp, self.path)

    def products(self, url: str) -> list[Product] | None:
        """The recorded outputs of ``url`` if every one of them still exists."""
        entries = self.files.get(url)
        if not entries:
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
        if not row.get("done_at"):
            return None
        return self.manifest.products(row["url"])

    def done(self, row: dict, products: list[Product]) -> None:
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
        files = [RemoteFile(r["url"], self.work / "files" / _file_name(r), size=r.get("size"),
                            checksum=r.get("checksum"), label=_label(self.fs, _file_name(r)))
                 for r in rows]
        download_many(self.client, files, self.policy, progress=self.progress)
        products: list[Product] = []
        for row, rf in zip(rows, files, strict=True):
            if _is_tarball(rf.dest.name, row.get("content_type")):
                got = self.unpack(rf)
            else:
                dst = self.layout.archive / rf.dest.name
                place(rf.dest, dst)
                got = [Product(kind="file", path=str(dst), bytes=dst.stat().st_size)]
            self.done(row, got)
            products += got
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
    def run(self) -> list[Product]:
        rows = self.catalog.files(self.mous)
        srdp_url = (self.catalog.mous(self.mous).get("srdp_url") or "").strip()
        if srdp_url and not any(r["url"] == srdp_url for r in rows):
            self.catalog.add_file(self.mous, srdp_url, "srdp")
            rows = self.catalog.files(self.mous)
        srdp = [r for r in rows if r["kind"] == "srdp"]
        datalink = [r for r in rows if r["kind"] in DATALINK_KINDS and r["url"]
                    and "datalink" not in (r.get("content_type") or "")]
        raw = [r for r in rows if r["kind"] == "raw" and r["url"]]
        fetch_raw = self.policy.fetch_raw
        if not (srdp or datalink or raw):
            raise DownloadError(f"nothing to download for {self.mous}: the catalog lists no files",
                                hint="run ingest (DataLink) or `sails ingest srdp MOUS URL`")
        products: list[Product] = []
        if srdp:
            for row in srdp:
                products += self.finished(row) or self.srdp(row)
            return products
        first = datalink + (raw if fetch_raw == "always" else [])
        products += self.fetch_rows(first)
        if (fetch_raw == "auto" and raw and not any(p.kind == "ms" for p in products)):
            products += self.fetch_rows(raw)
        if not products:
            raise DownloadError(
                f"nothing usable for {self.mous}: only raw ASDMs are listed and "
                "download.fetch_raw = 'never'",
                hint="set download.fetch_raw = 'auto' or register an SRDP restore")
        return products

    def fetch_rows(self, rows: list[dict]) -> list[Product]:
        products: list[Product] = []
        todo = []
        for row in rows:
            prior = self.finished(row)
            if prior is None:
                todo.append(row)
            else:
                products += prior
        if todo:
            products += self.datalink(todo)
        return products


def _block_verify(catalog: Catalog, mous: str) -> None:
    """Raw ASDMs only: the verify stage cannot run until a calibration restore exists."""
    row = catalog.find_stage(mous, "verify")
    if row.status == "pending":
        catalog.block(row.id, None, RAW_BLOCK_REASON)


def is_raw_only(products: list[Product]) -> bool:
    kinds = {p.kind for p in products}
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
    client = client or make_client(project.settings.download)
    reporter = progress or make_progress()
    try:
        with reporter:
            run = _Run(project, catalog, mous, client, reporter)
            try:
                products = run.run()
            except OSError as exc:
                raise DownloadError(f"file system error while downloading {mous}: {exc}") \
                    from None
    except SailsError as exc:
        catalog.log_event(mous, f"download failed: {exc.one_line()}", actor="download",
                          stage="download")
        raise
    finally:
        if own_client:
            client.close()
    if is_raw_only(products):
        _block_verify(catalog, mous)
    shutil.rmtree(run.work, ignore_errors=True)
    total = sum(p.bytes or 0 for p in products)
    log.info("event=download.mous_done mous=%s products=%d bytes=%d", mous, len(products), total)
    return products


def run(ctx: StageContext) -> Outcome:
    """Stage entry point (see sails.stages.base)."""
    from sails.stages.base import Outcome

    products = download_mous(ctx.project, ctx.catalog, ctx.row.mous_id)
    if is_raw_only(products):
        return Outcome.done(products=products,
                            reason=f"raw ASDMs downloaded; verify blocked ({RAW_BLOCK_REASON})")
    return Outcome.done(products=products)
