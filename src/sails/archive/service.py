"""The archive calls the CLI (and flows) make, configured from ``settings.archive``."""

from __future__ import annotations

from collections.abc import Iterable

from sails.archive.adql import QueryFilters, build_query
from sails.archive.client import query_tap
from sails.archive.datalink import DatalinkClient, FileLink
from sails.archive.tables import InputTable, table_rows
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
