"""ALMA Science Archive: ObsCore query, ALminer/ObsCore tables, DataLink files -> catalog.

Writes only through :class:`sails.catalog.Catalog`.
"""

from sails.archive.adql import QueryFilters, adql_string, build_query
from sails.archive.datalink import DatalinkClient, FileLink, parse_datalink
from sails.archive.fsupport import SpectralWindow, parse_frequency_support
from sails.archive.ingest import (
    DownloadPlan,
    IngestSummary,
    download_plan,
    ingest_files,
    ingest_records,
    parse_spw_remap,
    register_srdp,
    set_spw_remap,
)
from sails.archive.rows import Record, RecordSet, map_rows, spw_from_obs_id
from sails.archive.service import (
    ingest_query,
    ingest_recordset,
    query_archive,
    resolve_datalink,
)
from sails.archive.tables import InputTable, read_csv, read_obscore_file

__all__ = [
    "DatalinkClient",
    "DownloadPlan",
    "FileLink",
    "IngestSummary",
    "InputTable",
    "QueryFilters",
    "Record",
    "RecordSet",
    "SpectralWindow",
    "adql_string",
    "build_query",
    "download_plan",
    "ingest_files",
    "ingest_query",
    "ingest_recordset",
    "ingest_records",
    "map_rows",
    "parse_datalink",
    "parse_frequency_support",
    "parse_spw_remap",
    "query_archive",
    "read_csv",
    "read_obscore_file",
    "register_srdp",
    "resolve_datalink",
    "set_spw_remap",
    "spw_from_obs_id",
]
