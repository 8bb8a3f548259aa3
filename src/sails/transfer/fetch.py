"""One resumable, verified HTTP download.

Bytes go to ``<dest>.part``; an interrupted transfer resumes from its size with an HTTP
``Range`` request. Only a verified file (size against the listing and the server's
``Content-Length``/``Content-Range``, checksum when one is known) is renamed to ``dest``, so
the existence of ``dest`` means "finished". Timeouts, resets and 5xx are retried with
exponential backoff; 4xx and inconsistent sizes fail at once with a clear message; a full
disk fails at once and keeps the partial data for a later resume.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from sails import __version__
from sails.config import Download
from sails.errors import DownloadError, TransientError
from sails.transfer.progress import NullProgress, Progress

log = logging.getLogger("sails.transfer")

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_RETRY_STATUS = {408, 425, 429}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: where from, where to, and what we know about it beforehand."""

    url: str
    dest: Path
    size: int | None = None  # exact size from a listing (DataLink content_length)
    checksum: str | None = None  # "md5:<hex>", "sha256:<hex>", or bare hex (length decides)
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.dest.name


@dataclass
class FetchResult:
    path: Path
    bytes: int  # final size on disk
    fetched: int  # body bytes received over the network by this call
    resumed_from: int  # size of the .part file when this call started
    attempts: int  # HTTP requests made
    seconds: float
    skipped: bool = False  # already complete, nothing fetched


class _Restart(Exception):
    """Internal: the .part file is unusable; start from byte 0 without counting a retry."""


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


_READ_BYTES = 256 * 1024


def _larger_reads() -> None:
    """httpcore reads 64 KiB per recv(); 256 KiB cuts our CPU per GB by about a third.

    ``READ_NUM_BYTES`` is a class attribute read as ``self.READ_NUM_BYTES``; raising it is
    harmless for other users of httpx in the process (small responses read what is there).
    """
    try:
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:  # a future httpcore layout: keep its default
        return
    if getattr(HTTP11Connection, "READ_NUM_BYTES", _READ_BYTES) < _READ_BYTES:
        HTTP11Connection.READ_NUM_BYTES = _READ_BYTES


def _origin(url: httpx.URL) -> tuple[str, int | None]:
    """Host and explicit port (None: the scheme's default), as a redirect target is judged."""
    return url.host.lower(), url.port


def _entry_origin(entry: str) -> tuple[str, int | None]:
    url = httpx.URL(f"http://{entry}/")
    return url.host.lower(), url.port


def allowed_redirect_origins(policy: Download,
                             extra_urls: Iterable[str] = ()) -> frozenset[tuple[str, int | None]]:
    """``[download] redirect_hosts`` plus the hosts of ``extra_urls`` (the archive's URLs)."""
    out = {_entry_origin(h) for h in policy.redirect_hosts}
    for url in extra_urls:
        with contextlib.suppress(httpx.InvalidURL):
            if httpx.URL(url).host:
                out.add(_origin(httpx.URL(url)))
    return frozenset(out)


def check_redirect(response: httpx.Response,
                   allowed: frozenset[tuple[str, int | None]] = frozenset()) -> None:
    """A redirect may stay on its host or go to an allowed mirror, only over http(s), never
    from https down to plain http (a delivery must not be steered to another server, file:,
    ftp: or an unencrypted copy).

    Runs as a response hook, which httpx calls *before* it builds ``next_request``: the
    target is read from the ``Location`` header here, as httpx will resolve it.
    """
    if not response.has_redirect_location:
        return
    source = response.request.url
    try:
        target = source.join(response.headers["Location"])
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise DownloadError(f"refusing a redirect from {source}: its Location is not a URL",
                            hint="the archive answered with a broken redirect") from None
    if target.scheme not in ("http", "https") or (source.scheme == "https"
                                                  and target.scheme == "http"):
        raise DownloadError(f"refusing a redirect from {source} to {target}",
                            hint="the archive answered with an unsafe redirect")
    origin = _origin(target)
    if origin != _origin(source) and origin not in allowed:
        shown = origin[0] if origin[1] is None else f"{origin[0]}:{origin[1]}"
        raise DownloadError(
            f"refusing a redirect from {source} to {target}: host {shown} is not in "
            f"[download] redirect_hosts",
            hint=f"if {shown} is a trusted archive mirror, add it to [download] "
                 f"redirect_hosts")


def make_client(policy: Download, *, parallel: int | None = None,
                archive_urls: Iterable[str] = ()) -> httpx.Client:
    """An httpx client for downloads: timeouts from the policy, redirects (checked against
    ``redirect_hosts`` and the hosts of ``archive_urls``), no compression."""
    _larger_reads()
    n = max(parallel or policy.parallel_files, 1)
    allowed = allowed_redirect_origins(policy, archive_urls)
    return httpx.Client(
        timeout=httpx.Timeout(policy.timeout_seconds),
        follow_redirects=True,
        event_hooks={"response": [functools.partial(check_redirect, allowed=allowed)]},
        limits=httpx.Limits(max_connections=n + 2, max_keepalive_connections=n + 2),
        headers={"User-Agent": f"alma-sails/{__version__}", "Accept-Encoding": "identity"},
    )


def backoff_delay(policy: Download, failures: int) -> float:
    """Exponential backoff with jitter: base * 2^(n-1) * [0.5, 1.0), capped at 5 minutes."""
    base = policy.backoff_seconds * (2 ** max(failures - 1, 0))
    return min(base, 300.0) * (0.5 + random.random() / 2)


def _hasher(checksum: str) -> tuple[hashlib._Hash, str]:
    algo, _, digest = checksum.partition(":")
    if not digest:
        digest = algo
        algo = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}.get(len(digest), "")
    algo = algo.lower().replace("-", "")
    try:
        return hashlib.new(algo), digest.lower()
    except (ValueError, TypeError):
        raise DownloadError(f"unsupported checksum {checksum!r}") from None


def file_checksum(path: Path, checksum: str) -> bool:
    """True when ``path`` matches ``checksum`` (format as in :class:`RemoteFile`)."""
    h, want = _hasher(checksum)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest() == want


def _disk_error(exc: OSError, part: Path, url: str) -> DownloadError:
    kept = part.stat().st_size if part.exists() else 0
    if exc.errno in _DISK_FULL:
        return DownloadError(
            f"disk full while writing {part} ({os.strerror(exc.errno or 0)});"
            f" {kept} bytes kept there for resume",
            hint=f"free space under {part.parent}, then retry: the transfer resumes",
        )
    return DownloadError(f"cannot write {part} while fetching {url}: {exc.strerror or exc}")


def download_file(
    client: httpx.Client,
    rf: RemoteFile,
    policy: Download,
    *,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Fetch ``rf`` into ``rf.dest`` (resuming ``<dest>.part``); return what happened.

    Raises :class:`DownloadError` (4xx, size or checksum mismatch, disk full) or
    :class:`TransientError` (network trouble or 5xx that outlasted ``policy.retries``).
    """
    progress = progress or NullProgress()
    dest, part = rf.dest, part_path(rf.dest)
    t0 = time.monotonic()
    if dest.is_file() and (rf.size is None or dest.stat().st_size == rf.size):
        progress.skip(rf.name, dest.stat().st_size)
        return FetchResult(dest, dest.stat().st_size, 0, 0, 0, 0.0, skipped=True)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _disk_error(exc, part, rf.url) from None
    resumed_from = part.stat().st_size if part.exists() else 0
    fetched = requests = failures = restarts = 0
    bad_checksums = 0
    seen: dict[str, int] = {}  # "announced": the total size an earlier response gave
    last_error = ""
    progress.start(rf.name, rf.size, resumed_from)
    try:
        while True:
            offset = part.stat().st_size if part.exists() else 0
            if rf.size is not None and offset > rf.size:
                log.warning("event=download.discard url=%s part_bytes=%d listed_bytes=%d",
                            rf.url, offset, rf.size)
                part.unlink()
                offset = 0
            got = 0
            try:
                if rf.size is not None and offset == rf.size and offset > 0:
                    total = rf.size  # complete already: only verification is left
                else:
                    requests += 1
                    total, got = _one_request(client, rf, part, offset, progress, seen)
                    fetched += got
                size = part.stat().st_size
                if total is not None and size != total:
                    raise TransientError(f"{rf.url}: connection ended at byte {size} of {total}")
                if rf.size is not None and size != rf.size:
                    raise DownloadError(
                        f"size mismatch for {rf.url}: the listing says {rf.size} bytes, "
                        f"the server delivered {size}",
                        hint="the archive listing and the file disagree; report it",
                    )
                if rf.checksum and not file_checksum(part, rf.checksum):
                    part.unlink()
                    bad_checksums += 1
                    if bad_checksums > 1:
                        raise DownloadError(f"checksum mismatch for {rf.url} (twice)",
                                            hint="the file on the server may be corrupt")
                    log.warning("event=download.checksum_mismatch url=%s action=refetch", rf.url)
                    progress.reset(rf.name, 0)
                    continue
                os.replace(part, dest)
                break
            except _Restart as exc:
                restarts += 1
                if restarts > policy.retries + 1:
                    raise DownloadError(f"{rf.url}: {exc}") from None
                progress.reset(rf.name, 0)
                continue
            except TransientError as exc:
                last_error = str(exc)
                if isinstance(exc, _Progressed):
                    got = exc.got
                    fetched += got
                if got > 0:
                    # Progress was made: resume at once, do not count it against the budget.
                    log.info("event=download.resume url=%s at_byte=%d reason=%r",
                             rf.url, part.stat().st_size if part.exists() else 0, last_error)
                    continue
                failures += 1
                if failures > policy.retries:
                    raise TransientError(
                        f"giving up on {rf.url} after {failures} failed attempts: {last_error}",
                        hint="the partial file is kept; a later retry resumes it",
                    ) from None
                delay = backoff_delay(policy, failures)
                log.warning("event=download.retry url=%s attempt=%d delay_s=%.2f reason=%r",
                            rf.url, failures, delay, last_error)
                progress.note(rf.name, f"retry {failures} in {delay:.1f}s")
                sleep(delay)
    except BaseException:
        progress.fail(rf.name)
        raise
    seconds = time.monotonic() - t0
    size = dest.stat().st_size
    progress.finish(rf.name)
    log.info("event=download.done url=%s bytes=%d fetched=%d resumed_from=%d requests=%d "
             "seconds=%.2f rate_MBps=%.1f", rf.url, size, fetched, resumed_from, requests,
             seconds, fetched / 1e6 / seconds if seconds > 0 else 0.0)
    return FetchResult(dest, size, fetched, resumed_from, requests, seconds)


def _one_request(client: httpx.Client, rf: RemoteFile, part: Path, offset: int,
                 progress: Progress, seen: dict[str, int]) -> tuple[int | None, int]:
    """One GET from ``offset``; append to ``part``. Returns (total size if known, bytes got).

    ``seen["announced"]`` is the total an earlier response of this transfer gave: a server
    that changes its story is not trusted. A transient failure after some bytes arrived is raised
    as ``_Progressed`` (carrying the count), so the caller resumes without backing off.
    """
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    got = 0
    try:
        with client.stream("GET", rf.url, headers=headers) as r:
            status = r.status_code
            if status == 416 and offset:
                m = _UNSATISFIED_RANGE.match(r.headers.get("Content-Range", ""))
                if m and int(m.group(1)) == offset:
                    _check_total(rf, offset, seen, part)
                    return offset, 0  # the .part already holds the whole file
                part.unlink(missing_ok=True)
                raise _Restart("server refused to resume (416); restarting from byte 0")
            if status >= 500 or status in _RETRY_STATUS:
                raise TransientError(f"HTTP {status} {r.reason_phrase} from {rf.url}")
            if status >= 400:
                raise DownloadError(
                    f"HTTP {status} {r.reason_phrase} for {rf.url}",
                    hint="the file is not available (moved, proprietary or withdrawn); "
                    "re-run ingest to refresh the file list" if status in (403, 404, 410)
                    else None,
                )
            if status == 206:
                m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != offset:
                    part.unlink(missing_ok=True)
                    raise _Restart(f"server answered a resume with a different range "
                                   f"({r.headers.get('Content-Range')!r})")
                total = None if m.group(3) == "*" else int(m.group(3))
            elif status == 200:
                if offset:
                    log.info("event=download.range_ignored url=%s action=restart", rf.url)
                    offset = 0
                    progress.reset(rf.name, 0)
                clen = r.headers.get("Content-Length")
                total = int(clen) if clen and clen.isdigit() else None
            else:
                raise DownloadError(f"unexpected HTTP {status} for {rf.url}")
            if total is not None:
                _check_total(rf, total, seen, part)
            try:
                fh = open(part, "r+b" if part.exists() else "wb", buffering=0)  # noqa: SIM115
            except OSError as exc:
                raise _disk_error(exc, part, rf.url) from None
            with fh:
                fh.truncate(offset)
                fh.seek(offset)
                pos = offset
                for chunk in r.iter_raw():
                    view = memoryview(chunk)
                    while view:
                        try:
                            n = fh.write(view)
                        except OSError as exc:
                            raise _disk_error(exc, part, rf.url) from None
                        view = view[n:]
                        pos += n
                        got += n
                    progress.advance(rf.name, len(chunk))
                    if total is not None and pos > total:
                        raise DownloadError(f"{rf.url}: the server sent more than the "
                                            f"{total} bytes it announced")
            return total, got
    except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        err = TransientError(f"{type(exc).__name__} from {rf.url}: {exc}")
        if got:
            raise _Progressed(err, got) from None
        raise err from None


def _check_total(rf: RemoteFile, total: int, seen: dict[str, int], part: Path) -> None:
    """The size a response announces must match the listing and any earlier response."""
    announced = seen.setdefault("announced", total)
    if rf.size is not None and total != rf.size:
        raise DownloadError(
            f"size mismatch for {rf.url}: the listing says {rf.size} bytes, "
            f"the server says {total}",
            hint="the archive listing and the file disagree; report it",
        )
    if total != announced:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"size mismatch for {rf.url}: the server announced {announced} bytes, then "
            f"{total}; the partial file was discarded",
            hint="the file changed on the server or the server misreports sizes; retry later",
        )


class _Progressed(TransientError):
    """A transient failure after ``got`` bytes were written (so: resume, do not back off)."""

    def __init__(self, err: TransientError, got: int) -> None:
        super().__init__(str(err), err.hint)
        self.got = got
