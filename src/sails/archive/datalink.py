"""DataLink: which files make up a MOUS, with their sizes and kinds.

ALMA's DataLink answer for a MOUS uid lists the README (``#documentation``), the product
tarball (``#this``), the auxiliary tarball (``#auxiliary``) and one raw ASDM tarball per
execution block (``#progenitor``), each with ``content_length`` in bytes. Tarballs that can
be listed come with a service descriptor (a DataLink document, one level down); for the
product tarball (``#this``) we follow it and record the files inside instead of the tarball,
as astroquery's ``expand_tarfiles`` does. The auxiliary tarball stays whole: a calibration
restore needs its folder structure.

The recursion sends the descriptor's ``ID`` to the DataLink service we were configured
with (not to the host named in the descriptor), so a mirror answers for itself.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from sails.archive.client import DEFAULT_TIMEOUT, TimeoutSession, explain
from sails.errors import IngestError, SailsError

DATALINK_MIME = "content=datalink"
KINDS = ("srdp", "product", "auxiliary", "raw", "readme", "other")


@dataclass(frozen=True)
class FileLink:
    """One downloadable file of a MOUS, as the catalog's ``files`` table stores it."""

    url: str
    kind: str
    filename: str | None = None
    size: int | None = None
    semantics: str | None = None
    content_type: str | None = None
    description: str | None = None


@dataclass
class Listing:
    """A parsed DataLink document."""

    files: list[FileLink] = field(default_factory=list)
    # (semantics, ID to ask the DataLink service for) of listable tarballs
    descriptors: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def filename_of(url: str) -> str | None:
    path = urlparse(url).path
    name = unquote(path.rsplit("/", 1)[-1]) if path else ""
    return name or None


def classify(semantics: str | None, url: str | None) -> str:
    """Catalog file kind from DataLink semantics (and the README's name)."""
    sem = (semantics or "").strip().lower()
    name = (filename_of(url or "") or "").lower()
    if sem == "#progenitor":
        return "raw"
    if sem == "#auxiliary":
        return "auxiliary"
    if sem == "#this":
        return "product"
    if sem == "#documentation":
        return "readme" if "readme" in name else "other"
    return "other"


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    s = str(v).strip()
    return s or None


def _int(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        x = int(v)
    except (TypeError, ValueError):
        try:
            x = int(float(str(v)))
        except (TypeError, ValueError):
            return None
    return x if x >= 0 else None


def _descriptor_ids(results: Any) -> dict[str, str]:
    """Service-descriptor resource ID -> the ``ID`` its accessURL asks for."""
    out: dict[str, str] = {}
    for res in results.iter_adhocservices():
        params = {p.name: p.value for p in res.params}
        access = _text(params.get("accessURL"))
        if not access or not res.ID:
            continue
        ids = parse_qs(urlparse(access).query).get("ID")
        if ids:
            out[res.ID] = ids[0]
    return out


def listing_from_results(results: Any) -> Listing:
    """A :class:`Listing` from pyvo ``DatalinkResults``."""
    from sails.archive.tables import table_rows

    _, rows = table_rows(results.to_table())
    descriptors = _descriptor_ids(results)
    out = Listing()
    for r in rows:
        err = _text(r.get("error_message"))
        if err:
            out.errors.append(f"{_text(r.get('ID')) or '?'}: {err}")
            continue
        url = _text(r.get("access_url"))
        sem = _text(r.get("semantics"))
        ctype = _text(r.get("content_type"))
        sdef = _text(r.get("service_def"))
        if url:
            out.files.append(FileLink(
                url=url, kind=classify(sem, url), filename=filename_of(url),
                size=_int(r.get("content_length")), semantics=sem, content_type=ctype,
                description=_text(r.get("description"))))
        elif sdef and ctype and DATALINK_MIME in ctype.replace(" ", "") and sdef in descriptors:
            out.descriptors.append((sem or "", descriptors[sdef]))
    return out


def parse_datalink(data: bytes) -> Listing:
    """Parse a DataLink VOTable held in memory (e.g. a recorded answer)."""
    from astropy.io.votable import parse
    from pyvo.dal.adhoc import DatalinkResults

    try:
        vot = parse(io.BytesIO(data), verify="ignore")
        return listing_from_results(DatalinkResults(vot))
    except IngestError:
        raise
    except Exception as exc:
        raise IngestError(f"unreadable DataLink document: {exc}") from None


class DatalinkClient:
    """Resolves MOUS files through one DataLink service (thread-safe: a session per call)."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT, expand: bool = True,
                 max_depth: int = 2):
        self.url = url
        self.timeout = timeout
        self.expand = expand
        self.max_depth = max_depth

    def fetch(self, ident: str, session: TimeoutSession) -> Listing:
        from pyvo.dal.adhoc import DatalinkService

        try:
            service = DatalinkService(self.url, session=session)
            results = service.run_sync(ident)
            return listing_from_results(results)
        except Exception as exc:
            raise explain(exc, "the DataLink service", self.url, self.timeout) from None

    def resolve(self, mous_id: str) -> tuple[list[FileLink], list[str]]:
        """Files of one MOUS and any per-file error messages the service gave."""
        session = TimeoutSession(self.timeout)
        try:
            return self._resolve(mous_id, session, depth=0, seen={mous_id})
        finally:
            session.close()

    def _resolve(self, ident: str, session: TimeoutSession, depth: int,
                 seen: set[str]) -> tuple[list[FileLink], list[str]]:
        listing = self.fetch(ident, session)
        files, errors = list(listing.files), list(listing.errors)
        if not self.expand or depth >= self.max_depth:
            return files, errors
        for semantics, sub_id in listing.descriptors:
            if semantics.lower() != "#this" or sub_id in seen:
                continue
            seen.add(sub_id)
            inner, inner_errors = self._resolve(sub_id, session, depth + 1, seen)
            errors += inner_errors
            inner = [f for f in inner if f.kind != "other" or f.semantics != "#cutout"]
            if not inner:
                continue
            # The listing replaces the tarball it describes (same file name as its ID).
            files = [f for f in files if not (f.filename == sub_id and f.kind == "product")]
            known = {f.url for f in files}
            files += [FileLink(f.url, "product", f.filename, f.size, f.semantics,
                               f.content_type, f.description)
                      for f in inner if f.url not in known]
        return files, errors

    def resolve_each(self, mous_ids: Iterable[str], workers: int = 4
                     ) -> tuple[dict[str, tuple[list[FileLink], list[str]]], dict[str, str]]:
        """Resolve several MOUS in parallel, each on its own: (files of those resolved,
        error message of each that failed). One unreachable MOUS stops none of the others."""
        ids = list(dict.fromkeys(mous_ids))

        def one(mous_id: str) -> tuple[list[FileLink], list[str]] | str:
            try:
                return self.resolve(mous_id)
            except SailsError as exc:
                return exc.one_line()

        if not ids:
            return {}, {}
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(ids)))) as pool:
            results = dict(zip(ids, pool.map(one, ids), strict=True))
        return ({k: v for k, v in results.items() if not isinstance(v, str)},
                {k: v for k, v in results.items() if isinstance(v, str)})

    def resolve_many(self, mous_ids: Iterable[str], workers: int = 4
                     ) -> dict[str, tuple[list[FileLink], list[str]]]:
        """Resolve several MOUS in parallel; the first service failure is raised."""
        ids = list(dict.fromkeys(mous_ids))
        if not ids:
            return {}
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(ids)))) as pool:
            results = list(pool.map(self.resolve, ids))
        return dict(zip(ids, results, strict=True))
