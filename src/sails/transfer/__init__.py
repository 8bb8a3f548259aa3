"""Resumable, verified HTTP transfers; safe tar extraction; organizing into the layout.

Knows nothing about CASA. The download stage (``sails.stages.download``) drives it.
"""

from sails.transfer.batch import download_many
from sails.transfer.crawl import ListedFile, crawl
from sails.transfer.extract import TruncatedArchiveError, UnsafeArchiveError, safe_extract
from sails.transfer.fetch import FetchResult, RemoteFile, download_file, make_client, part_path
from sails.transfer.organize import Layout, organize
from sails.transfer.progress import LogProgress, Progress, RichProgress, make_progress

__all__ = [
    "FetchResult",
    "Layout",
    "ListedFile",
    "LogProgress",
    "Progress",
    "RemoteFile",
    "RichProgress",
    "TruncatedArchiveError",
    "UnsafeArchiveError",
    "crawl",
    "download_file",
    "download_many",
    "make_client",
    "make_progress",
    "organize",
    "part_path",
    "safe_extract",
]
