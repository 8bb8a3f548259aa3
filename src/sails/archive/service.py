"""The archive calls the CLI (and flows) make, configured from ``settings.archive``."""

from __future__ import annotations

from collections.abc import Iterable

from sails.archive.adql import QueryFilters, build_query
from sails.archive.client import query_tap
from sails.archive.datalink import DatalinkClient, FileLink
from sails.archive.ingest import IngestSummary, ingest_records
from sails.archive.rows import RecordSet
from sails.archive.tables import InputTable, table_rows
from sails.catalog import Catalog
from sails.config import Archive


def query_archive(query: QueryFilters | str, archive: Archive,
                  tap_url: str | None = None) -> tuple[str, InputTable]:
    """Run filters (or a ready ADQL string) on ObsCore; return (ADQL, rows)."""
    adql = query if isinstance(query, str) else build_query(query)
    url = tap_url or archive.tap_url
    table = query_tap(adql, url, timeout=archive.timeout_seconds, max_rows=archive.max_rows)
    columns, rows = table_rows(table)
    return adql, InputTable(f"TAP {url.rstrip('/')}", columns, rows)


def resolve_datalink(mous_ids: Iterable[str], archive: Archive, datalink_url: str | None = None,
                     expand: bool | None = None
                     ) -> dict[str, tuple[list[FileLink], list[str]]]:
    """DataLink files of each MOUS (raises IngestError on any service failure)."""
    client = DatalinkClient(
        datalink_url or archive.datalink_url, timeout=archive.timeout_seconds,
        expand=archive.expand_product_listings if expand is None else expand)
    return client.resolve_many(mous_ids, workers=archive.datalink_workers)


def resolve_each(mous_ids: Iterable[str], archive: Archive, datalink_url: str | None = None
                 ) -> tuple[dict[str, tuple[list[FileLink], list[str]]], dict[str, str]]:
    """DataLink files of each MOUS, each on its own: (resolved, error of each that failed)."""
    client = DatalinkClient(datalink_url or archive.datalink_url,
                            timeout=archive.timeout_seconds,
                            expand=archive.expand_product_listings)
    return client.resolve_each(mous_ids, workers=archive.datalink_workers)


def ingest_recordset(catalog: Catalog, recordset: RecordSet, archive: Archive, *,
                     datalink: bool = True, datalink_url: str | None = None,
                     dry_run: bool = False, skip_bad: bool = False) -> IngestSummary:
    """Validate, resolve DataLink files (network, before any write), then ingest in one
    transaction. A dry run resolves nothing and writes nothing.

    File lists are resolved per MOUS: a MOUS whose DataLink call fails still has its
    metadata ingested; the failure is a warning and an event on the MOUS, and its
    ``download`` stage resolves the list (retried with backoff when the archive is busy)."""
    if not skip_bad:
        recordset.raise_if_problems()
    files, failed = None, {}
    if datalink and not dry_run and recordset.records:
        mous_ids = list(dict.fromkeys(r.mous["mous_id"] for r in recordset.records))
        files, failed = resolve_each(mous_ids, archive, datalink_url)
    summary = ingest_records(catalog, recordset, files, dry_run=dry_run, skip_bad=skip_bad)
    for mous_id, error in failed.items():
        note = f"file list not resolved ({error}); the download stage resolves it"
        summary.warnings.append(f"{mous_id}: {note}")
        catalog.log_event(mous_id, note, actor="ingest", stage="download")
    return summary


def ingest_query(catalog: Catalog, query: QueryFilters | str, archive: Archive, *,
                 tap_url: str | None = None, datalink: bool = True,
                 datalink_url: str | None = None, dry_run: bool = False
                 ) -> tuple[str, RecordSet, IngestSummary]:
    """Query ObsCore and ingest the answer: (ADQL, records, summary)."""
    adql, table = query_archive(query, archive, tap_url)
    recordset = table.records()
    summary = ingest_recordset(catalog, recordset, archive, datalink=datalink,
                               datalink_url=datalink_url, dry_run=dry_run)
    return adql, recordset, summary
