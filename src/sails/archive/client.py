"""The ALMA Science Archive's TAP (ObsCore) and DataLink services, through pyvo.

Every failure of the service (HTTP error, timeout, refused connection, a VOTable with
QUERY_STATUS=ERROR, a body that is not XML) becomes one :class:`IngestError` that says
which service failed and how; nothing here touches the catalog.
"""

from __future__ import annotations

import warnings
from typing import Any

import requests

from sails import __version__
from sails.errors import ArchiveUnavailableError, IngestError

DEFAULT_TIMEOUT = 60.0


class TimeoutSession(requests.Session):
    """A requests session with a default timeout (pyvo passes none) and our user agent."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        super().__init__()
        self.timeout = timeout
        try:
            from pyvo.utils.http import USER_AGENT as pyvo_agent
        except ImportError:  # pragma: no cover - pyvo always has it
            pyvo_agent = "pyVO"
        self.headers["User-Agent"] = f"alma-sails/{__version__} {pyvo_agent}"

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        out.append(cur)
        seen.add(id(cur))
        nxt = getattr(cur, "cause", None)
        if not isinstance(nxt, BaseException):
            nxt = cur.__cause__ or cur.__context__
        cur = nxt
    return out


def _busy(code: object) -> bool:
    """An HTTP status worth retrying later (5xx, 429)."""
    return isinstance(code, int) and (code >= 500 or code == 429)


def explain(exc: BaseException, service: str, url: str, timeout: float) -> IngestError:
    """One clear message for any failure of ``service`` at ``url``."""
    from pyvo.dal.exceptions import DALFormatError, DALQueryError, DALServiceError

    chain = _chain(exc)
    for e in chain:
        if isinstance(e, requests.exceptions.Timeout):
            return ArchiveUnavailableError(
                               f"{service} at {url} did not answer within {timeout:g} s",
                               hint="try again later, another mirror, or raise "
                                    "archive.timeout_seconds")
        if isinstance(e, requests.exceptions.ConnectionError):
            return ArchiveUnavailableError(
                               f"cannot reach {service} at {url}: connection failed",
                               hint="check the network and archive.tap_url / datalink_url")
    for e in chain:
        if isinstance(e, DALQueryError):
            return IngestError(f"{service} at {url} rejected the query: "
                               f"{(e.reason or 'no message').strip()}")
        if isinstance(e, DALServiceError) and e.code:
            cls = ArchiveUnavailableError if _busy(e.code) else IngestError
            return cls(f"{service} at {url} failed with HTTP {e.code}",
                               hint="the archive may be down; try again later or another "
                                    "mirror")
        if isinstance(e, requests.exceptions.HTTPError) and e.response is not None:
            cls = ArchiveUnavailableError if _busy(e.response.status_code) else IngestError
            return cls(f"{service} at {url} failed with HTTP "
                               f"{e.response.status_code}",
                               hint="the archive may be down; try again later or another "
                                    "mirror")
    for e in chain:
        if isinstance(e, DALFormatError):
            return IngestError(f"{service} at {url} sent an unreadable answer "
                               f"(not a valid VOTable: {_short(e.reason)})")
    return IngestError(f"{service} at {url} failed: {type(exc).__name__}: {_short(str(exc))}")


def _short(text: str | None, limit: int = 200) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def query_tap(adql: str, tap_url: str, *, timeout: float = DEFAULT_TIMEOUT,
              max_rows: int | None = None, session: requests.Session | None = None) -> Any:
    """Run ``adql`` on the TAP service (sync); return an astropy Table.

    A result cut short by MAXREC is an error: ingesting part of a result silently would
    leave MOUS out without anyone noticing.
    """
    import pyvo
    from pyvo.dal.exceptions import DALOverflowWarning

    session = session or TimeoutSession(timeout)
    url = tap_url.rstrip("/")
    try:
        service = pyvo.dal.TAPService(url, session=session)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DALOverflowWarning)
            warnings.simplefilter("ignore", UserWarning)
            result = service.run_sync(adql, maxrec=max_rows)
        status = str(result.status[0] or "OK").upper()
        table = result.to_table()
    except Exception as exc:
        raise explain(exc, "the TAP service", f"{url}/sync", session_timeout(session)) from None
    if status == "OVERFLOW":
        raise IngestError(
            f"the TAP service at {url} returned only the first {len(table)} rows "
            f"(MAXREC {max_rows})",
            hint="narrow the query, or raise archive.max_rows",
        )
    return table


def session_timeout(session: requests.Session) -> float:
    return float(getattr(session, "timeout", DEFAULT_TIMEOUT))
