"""Several downloads in parallel (up to ``download.parallel_files``).

One failing file does not stop the others: every transfer runs to its end (so all progress
is kept on disk), then the first permanent error is raised, else the first transient one.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

from sails.config import Download
from sails.errors import DownloadError, SailsError, TransientError
from sails.transfer.fetch import FetchResult, RemoteFile, download_file
from sails.transfer.progress import NullProgress, Progress


def download_many(
    client: httpx.Client,
    files: Sequence[RemoteFile],
    policy: Download,
    *,
    progress: Progress | None = None,
) -> list[FetchResult]:
    """Fetch ``files`` (results in the same order); raise after all have been tried."""
    progress = progress or NullProgress()
    sizes = [f.size for f in files]
    progress.plan(len(files), None if None in sizes else sum(s or 0 for s in sizes))
    results: list[FetchResult | None] = [None] * len(files)
    errors: list[SailsError] = []
    workers = max(1, min(policy.parallel_files, len(files)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download") as pool:
        futures = [pool.submit(download_file, client, f, policy, progress=progress)
                   for f in files]
        for i, fut in enumerate(futures):
            try:
                results[i] = fut.result()
            except SailsError as exc:
                errors.append(exc)
    if errors:
        permanent = [e for e in errors if not isinstance(e, TransientError)]
        first = (permanent or errors)[0]
        if len(errors) > 1:
            msg = f"{first} (and {len(errors) - 1} more failed file(s))"
            cls = DownloadError if permanent else TransientError
            raise cls(msg, first.hint) from first
        raise first
    return [r for r in results if r is not None]
