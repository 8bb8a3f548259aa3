"""List every file of an HTTP directory tree below one URL (like ``wget2 -r -np``).

Directory pages (URLs ending in ``/``) are read for their links and never saved. A link is
followed only when it stays strictly below the start URL: sort links (``?C=N;O=D``), the
parent link, absolute links elsewhere and anything whose decoded path would climb out
(``..``) are skipped.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import httpx

from sails.config import Download
from sails.errors import DownloadError, TransientError
from sails.transfer.fetch import backoff_delay

log = logging.getLogger("sails.transfer")

_EXACT = re.compile(r"^\d+$")
_ABBREV = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT])i?B?$", re.IGNORECASE)


@dataclass(frozen=True)
class ListedFile:
    url: str
    relpath: str  # POSIX path below the start URL, decoded, validated
    size: int | None = None  # exact size when the listing shows one
    approx_size: int | None = None  # abbreviated listing size ("1.2M"), for progress only


class _Links(HTMLParser):
    """Collect (href, text of the rest of the table row) from an autoindex page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[tuple[str, list[str]]] = []
        self._cells: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self._cells = []
                self.rows.append((href, self._cells))
        elif tag == "tr":
            self._cells = None

    def handle_data(self, data: str) -> None:
        if self._cells is not None and data.strip():
            self._cells.append(data.strip())


def parse_size(text: str) -> tuple[int | None, int | None]:
    """(exact, approximate) bytes from a listing's size cell.

    Apache puts the size in its own cell; nginx writes "date time size" after the link,
    so the last word is tried too.
    """
    text = text.strip()
    words = text.split()
    if len(words) > 1:
        text = words[-1]
    if _EXACT.match(text):
        return int(text), int(text)
    m = _ABBREV.match(text)
    if m:
        mult = 1024 ** ("KMGT".index(m.group(2).upper()) + 1)
        return None, int(float(m.group(1)) * mult)
    return None, None


def safe_relpath(rel: str) -> str | None:
    """The decoded relative path if it is safe as a local path below a folder, else None."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        return None
    if any(p in ("", ".", "..") for p in parts):
        return None
    return rel


def _get_page(client: httpx.Client, url: str, policy: Download) -> str:
    failures = 0
    while True:
        try:
            r = client.get(url)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            err: Exception = TransientError(f"{type(exc).__name__} listing {url}: {exc}")
        else:
            if r.status_code < 400:
                return r.text
            if r.status_code < 500 and r.status_code not in (408, 429):
                raise DownloadError(f"HTTP {r.status_code} {r.reason_phrase} listing {url}",
                                    hint="check the SRDP restore URL (restores expire)")
            err = TransientError(f"HTTP {r.status_code} listing {url}")
        failures += 1
        if failures > policy.retries:
            raise TransientError(f"giving up listing {url}: {err}") from None
        time.sleep(backoff_delay(policy, failures))


def crawl(client: httpx.Client, url: str, policy: Download) -> list[ListedFile]:
    """Every file below ``url`` (a directory URL; a trailing slash is added if missing)."""
    base = url if url.endswith("/") else url + "/"
    base_parts = urlsplit(base)
    seen_dirs = {base}
    queue = [base]
    files: dict[str, ListedFile] = {}
    while queue:
        page = queue.pop(0)
        parser = _Links()
        parser.feed(_get_page(client, page, policy))
        for href, cells in parser.rows:
            target, _frag = urldefrag(urljoin(page, href))
            parts = urlsplit(target)
            if parts.query or parts.scheme not in ("http", "https"):
                continue  # sort links and other non-file links
            if (parts.scheme, parts.netloc) != (base_parts.scheme, base_parts.netloc):
                continue
            if not parts.path.startswith(base_parts.path) or target == page:
                continue  # parent link or elsewhere on the server
            raw_rel = unquote(parts.path[len(base_parts.path):]).rstrip("/")
            if not raw_rel:
                continue  # the start folder itself (a parent link from below)
            rel = safe_relpath(raw_rel)
            if rel is None:
                log.warning("event=crawl.skip url=%s reason=unsafe_path", target)
                continue
            if target.endswith("/"):
                if target not in seen_dirs:
                    seen_dirs.add(target)
                    queue.append(target)
                continue
            exact = approx = None
            for cell in cells[1:]:
                exact, approx = parse_size(cell)
                if approx is not None:
                    break
            files.setdefault(rel, ListedFile(target, rel, exact, approx))
    log.info("event=crawl.done url=%s dirs=%d files=%d", base, len(seen_dirs), len(files))
    return sorted(files.values(), key=lambda f: f.relpath)
