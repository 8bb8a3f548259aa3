"""A loopback stand-in for the ALMA archive's TAP (sync) and DataLink services.

It speaks the real protocol, so the real clients (pyvo, astroquery) talk to it unchanged:

- TAP sync: ``GET`` or ``POST`` ``.../sync`` with ``REQUEST=doQuery``, ``LANG=ADQL``,
  ``QUERY``, optional ``MAXREC``; the answer is a VOTable with ``QUERY_STATUS`` OK (or
  OVERFLOW after a table cut at MAXREC); a query it cannot run gets a VOTable with
  ``QUERY_STATUS=ERROR`` and HTTP 400.
- DataLink: ``GET .../datalink/sync?ID=...`` answers a DataLink VOTable; an unknown ID gets
  a row whose ``error_message`` starts with ``NotFoundFault`` (as ALMA answers).

Rows live in an in-memory SQLite table. The ADQL subset understood is what
:mod:`sails.archive.adql` generates (and a little more): ``SELECT [TOP n] * | cols FROM
ivoa.obscore [WHERE ...] [ORDER BY ...]`` with AND/OR/NOT, comparisons, LIKE, IN, IS NULL,
BETWEEN, LOWER/UPPER, and ``INTERSECTS``/``CONTAINS`` of ``CIRCLE``/``POINT`` with
``s_region``. Geometry uses bounding circles of the regions (close enough for a test
archive). Every literal of the query becomes a bound SQLite parameter; identifiers must be
columns of the table; anything else is refused with QUERY_STATUS=ERROR.

The handlers are plain functions over any ``http.server.BaseHTTPRequestHandler``, so a
server that also serves other things (``sails.fakes.archive``) can mount them.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit
from xml.sax.saxutils import escape, quoteattr

from sails.fakes.http11 import Http11Handler

VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"
VOTABLE_MIME = "application/x-votable+xml"
DATALINK_MIME = "application/x-votable+xml;content=datalink"
LONG_NULL = -9223372036854775808

# Types of the ALMA ObsCore columns (the real service's schema); others are inferred.
_DOUBLE = frozenset((
    "s_ra", "s_dec", "s_fov", "s_resolution", "t_min", "t_max", "t_exptime", "t_resolution",
    "em_min", "em_max", "em_res_power", "gal_longitude", "gal_latitude", "em_resolution",
    "bandwidth", "spatial_resolution", "frequency", "velocity_resolution",
    "sensitivity_10kms", "cont_sensitivity_bandwidth", "pwv", "spatial_scale_max",
))
_LONG = frozenset(("calib_level", "publication_year", "spectral_resolution"))
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AdqlError(ValueError):
    """A query this service cannot run (answered with QUERY_STATUS=ERROR)."""


# ---------------------------------------------------------------------- VOTable writing
def _td(value: Any, datatype: str) -> str:
    if value is None:
        return f"<TD>{LONG_NULL}</TD>" if datatype == "long" else "<TD/>"
    if datatype == "double":
        return f"<TD>{float(value)!r}</TD>"
    if datatype == "long":
        return f"<TD>{int(value)}</TD>"
    if datatype == "boolean":
        return f"<TD>{'true' if value else 'false'}</TD>"
    return f"<TD>{escape(str(value))}</TD>"


def _field(name: str, datatype: str, extra: str = "") -> str:
    size = ' arraysize="*"' if datatype == "char" else ""
    null = f'<VALUES null="{LONG_NULL}"/>' if datatype == "long" else ""
    return (f"<FIELD name={quoteattr(name)} datatype=\"{datatype}\"{size}{extra}>{null}"
            f"</FIELD>")


def votable(fields: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]],
            infos: Sequence[tuple[str, str, str]] = (("QUERY_STATUS", "OK", ""),),
            trailing_infos: Sequence[tuple[str, str, str]] = (),
            extra_resources: str = "") -> bytes:
    """A results VOTable: ``fields`` are (name, datatype in char/double/long/boolean)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n',
           f'<VOTABLE version="1.4" xmlns="{VOTABLE_NS}">\n<RESOURCE type="results">\n']
    for name, value, content in infos:
        out.append(f"<INFO name={quoteattr(name)} value={quoteattr(value)}>"
                   f"{escape(content)}</INFO>\n")
    out.append("<TABLE>\n")
    out += [_field(n, t) + "\n" for n, t in fields]
    out.append("<DATA><TABLEDATA>\n")
    types = [t for _, t in fields]
    for row in rows:
        out.append("<TR>" + "".join(_td(v, t) for v, t in zip(row, types, strict=True))
                   + "</TR>\n")
    out.append("</TABLEDATA></DATA>\n</TABLE>\n")
    for name, value, content in trailing_infos:
        out.append(f"<INFO name={quoteattr(name)} value={quoteattr(value)}>"
                   f"{escape(content)}</INFO>\n")
    out.append("</RESOURCE>\n")
    out.append(extra_resources)
    out.append("</VOTABLE>\n")
    return "".join(out).encode("utf-8")


def error_votable(message: str) -> bytes:
    """A TAP/DataLink error document (QUERY_STATUS=ERROR with the message)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<VOTABLE version="1.4" xmlns="{VOTABLE_NS}">\n<RESOURCE type="results">\n'
        f'<INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>\n'
        "</RESOURCE>\n</VOTABLE>\n"
    ).encode()


# ---------------------------------------------------------------------- geometry (bounding circles)
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _sep_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    h = (math.sin((d2 - d1) / 2) ** 2
         + math.cos(d1) * math.cos(d2) * math.sin((r2 - r1) / 2) ** 2)
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h))))


def _circles(shape: str | None) -> list[tuple[float, float, float]]:
    """Bounding circles (ra, dec, radius deg) of a point/circle/polygon/union text."""
    if not shape:
        return []
    words = re.findall(rf"[A-Za-z]+|{_NUM}|[()]", shape)
    out: list[tuple[float, float, float]] = []
    i, negate = 0, False
    while i < len(words):
        w = words[i].lower()
        if w == "not":
            negate = True
        elif w in ("point", "circle", "polygon"):
            j = i + 1
            if j < len(words) and words[j].lower() in ("icrs", "fk5", "j2000", "galactic"):
                j += 1
            nums = []
            while j < len(words) and re.fullmatch(_NUM, words[j]):
                nums.append(float(words[j]))
                j += 1
            if not negate:
                if w == "point" and len(nums) >= 2:
                    out.append((nums[0], nums[1], 0.0))
                elif w == "circle" and len(nums) >= 3:
                    out.append((nums[0], nums[1], nums[2]))
                elif w == "polygon" and len(nums) >= 6:
                    ras, decs = nums[0::2], nums[1::2]
                    cra, cdec = sum(ras) / len(ras), sum(decs) / len(decs)
                    r = max(_sep_deg(cra, cdec, a, d) for a, d in zip(ras, decs, strict=False))
                    out.append((cra, cdec, r))
            negate = False
            i = j
            continue
        i += 1
    return out


def _intersects(a: str | None, b: str | None) -> int:
    return int(any(_sep_deg(r1, d1, r2, d2) <= s1 + s2
                   for r1, d1, s1 in _circles(a) for r2, d2, s2 in _circles(b)))


def _contains(a: str | None, b: str | None) -> int:
    """1 if shape ``a`` lies inside ``b`` (bounding circles)."""
    return int(any(_sep_deg(r1, d1, r2, d2) + s1 <= s2
                   for r1, d1, s1 in _circles(a) for r2, d2, s2 in _circles(b)))


# ---------------------------------------------------------------------- ADQL -> SQLite
_TOKEN = re.compile(
    r"(?P<ws>\s+)|(?P<str>'(?:[^']|'')*')"
    r"|(?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)"
    r"|(?P<op><=|>=|<>|!=|\|\||[=<>+\-*/(),])|(?P<bad>.)",
    re.DOTALL,
)
_KEYWORDS = frozenset(("AND", "OR", "NOT", "LIKE", "IN", "IS", "NULL", "BETWEEN"))
_FUNCS = {"LOWER": "lower", "UPPER": "upper", "INTERSECTS": "adql_intersects",
          "CONTAINS": "adql_contains", "CIRCLE": "adql_circle", "POINT": "adql_point",
          "ABS": "abs"}
_TABLES = frozenset(("ivoa.obscore",))


@dataclass
class _Tok:
    kind: str
    text: str


def _tokens(adql: str) -> list[_Tok]:
    out = []
    for m in _TOKEN.finditer(adql):
        kind = m.lastgroup or "bad"
        if kind == "ws":
            continue
        if kind == "bad":
            raise AdqlError(f"unexpected character {m.group()!r} in the query")
        out.append(_Tok(kind, m.group()))
    return out


@dataclass
class Translated:
    sql: str
    params: list[Any]
    columns: list[str]
    top: int | None


def translate(adql: str, columns: Sequence[str]) -> Translated:
    """ADQL (our subset) -> a parameterized SQLite SELECT over table ``obscore``."""
    known = {c.lower(): c for c in columns}
    toks = _tokens(adql)
    pos = 0

    def peek(offset: int = 0) -> _Tok | None:
        return toks[pos + offset] if pos + offset < len(toks) else None

    def is_word(tok: _Tok | None, word: str) -> bool:
        return tok is not None and tok.kind == "id" and tok.text.upper() == word

    def column(tok: _Tok | None) -> str:
        if tok is None or tok.kind != "id" or tok.text.lower() not in known:
            raise AdqlError(f"unknown column {tok.text if tok else '(end)'!r}")
        return known[tok.text.lower()]

    if not is_word(peek(), "SELECT"):
        raise AdqlError("only SELECT queries are supported")
    pos += 1
    top = None
    if is_word(peek(), "TOP"):
        nxt = peek(1)
        if nxt is None or nxt.kind != "num" or not nxt.text.isdigit():
            raise AdqlError("TOP needs an integer")
        top = int(nxt.text)
        pos += 2
    selected: list[str] = []
    if peek() is not None and peek().text == "*":
        selected = list(columns)
        pos += 1
    else:
        while True:
            selected.append(column(peek()))
            pos += 1
            if peek() is not None and peek().text == ",":
                pos += 1
                continue
            break
    if not is_word(peek(), "FROM"):
        raise AdqlError("expected FROM")
    pos += 1
    table = peek()
    if table is None or table.kind != "id" or table.text.lower() not in _TABLES:
        raise AdqlError(f"unknown table {table.text if table else '(end)'!r}"
                        " (this service has ivoa.obscore)")
    pos += 1
    where_sql, params = "", []
    if is_word(peek(), "WHERE"):
        pos += 1
        depth, parts = 0, []
        while pos < len(toks):
            tok = toks[pos]
            if depth == 0 and is_word(tok, "ORDER") and is_word(peek(1), "BY"):
                break
            if tok.kind == "str":
                parts.append("?")
                params.append(tok.text[1:-1].replace("''", "'"))
            elif tok.kind == "num":
                parts.append(tok.text)
            elif tok.kind == "op":
                depth += tok.text == "("
                depth -= tok.text == ")"
                if depth < 0:
                    raise AdqlError("unbalanced parentheses")
                parts.append("<>" if tok.text == "!=" else tok.text)
            else:
                up = tok.text.upper()
                if up in _KEYWORDS:
                    parts.append(up)
                elif up in _FUNCS:
                    nxt = peek(1)
                    if nxt is None or nxt.text != "(":
                        raise AdqlError(f"{tok.text} must be called with (...)")
                    parts.append(_FUNCS[up])
                else:
                    parts.append(f'"{column(tok)}"')
            pos += 1
        if depth != 0:
            raise AdqlError("unbalanced parentheses")
        if not parts:
            raise AdqlError("empty WHERE clause")
        where_sql = " WHERE " + " ".join(parts)
    order_sql = ""
    if is_word(peek(), "ORDER"):
        pos += 2
        keys = []
        while True:
            col = column(peek())
            pos += 1
            direction = ""
            if is_word(peek(), "ASC") or is_word(peek(), "DESC"):
                direction = " " + peek().text.upper()
                pos += 1
            keys.append(f'"{col}"{direction}')
            if peek() is not None and peek().text == ",":
                pos += 1
                continue
            break
        order_sql = " ORDER BY " + ", ".join(keys)
    if pos != len(toks):
        raise AdqlError(f"unsupported query text at {toks[pos].text!r}")
    cols_sql = ", ".join(f'"{c}"' for c in selected)
    return Translated(f"SELECT {cols_sql} FROM obscore{where_sql}{order_sql}", params,
                      selected, top)


# ---------------------------------------------------------------------- the rows table
def _infer(values: Iterable[Any]) -> str:
    kind = None
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "char"
        kind = "double" if isinstance(v, float) or kind == "double" else "long"
    return kind or "char"


def _coerce(v: Any, datatype: str) -> Any:
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if hasattr(v, "item") and not isinstance(v, str):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    if datatype == "double":
        return float(v)
    if datatype == "long":
        return int(v)
    if isinstance(v, bool):
        return "T" if v else "F"
    s = str(v)
    m = re.fullmatch(r"""b(['"])(.*)\1""", s, re.DOTALL)  # recorded b'...' reprs
    return m.group(2) if m else s


class ObsCoreTable:
    """ObsCore rows in an in-memory SQLite table, queryable with ADQL (thread-safe)."""

    def __init__(self, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None,
                 types: Mapping[str, str] | None = None):
        rows = [dict(r) for r in rows]
        if columns is None:
            columns = list(dict.fromkeys(k for r in rows for k in r))
        for c in columns:
            if not _IDENT.match(c):
                raise ValueError(f"column name {c!r} is not an identifier")
        self.columns = list(columns)
        given = dict(types or {})
        self.types: dict[str, str] = {}
        for c in self.columns:
            if c in given:
                self.types[c] = given[c]
            elif c in _DOUBLE:
                self.types[c] = "double"
            elif c in _LONG:
                self.types[c] = "long"
            elif c in ("s_region", "band_list", "obs_id", "target_name", "member_ous_uid"):
                self.types[c] = "char"
            else:
                self.types[c] = _infer(r.get(c) for r in rows)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute("PRAGMA case_sensitive_like = ON")  # ADQL LIKE is case-sensitive
        self._db.create_function("adql_point", 3, lambda f, a, d: f"point {a} {d}",
                                 deterministic=True)
        self._db.create_function("adql_circle", 4,
                                 lambda f, a, d, r: f"circle {a} {d} {r}", deterministic=True)
        self._db.create_function("adql_intersects", 2, _intersects, deterministic=True)
        self._db.create_function("adql_contains", 2, _contains, deterministic=True)
        sqltype = {"double": "REAL", "long": "INTEGER", "char": "TEXT", "boolean": "INTEGER"}
        cols_sql = ", ".join(f'"{c}" {sqltype[self.types[c]]}' for c in self.columns)
        self._db.execute(f"CREATE TABLE obscore ({cols_sql})")
        self.add_rows(rows)

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        marks = ", ".join("?" * len(self.columns))
        data = [tuple(_coerce(r.get(c), self.types[c]) for c in self.columns) for r in rows]
        with self._lock:
            self._db.executemany(f"INSERT INTO obscore VALUES ({marks})", data)

    @classmethod
    def from_table(cls, table: Any) -> ObsCoreTable:
        """From an astropy Table (e.g. a recorded answer read with ``Table.read``)."""
        names = list(table.colnames)
        cols = [table[n].tolist() for n in names]
        rows = [dict(zip(names, vals, strict=True)) for vals in zip(*cols, strict=True)]
        return cls(rows, columns=names)

    @classmethod
    def from_file(cls, path: str) -> ObsCoreTable:
        from astropy.table import Table

        fmt = "votable" if str(path).endswith((".xml", ".vot")) else "ascii"
        return cls.from_table(Table.read(str(path), format=fmt))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM obscore").fetchone()[0]

    def query(self, adql: str, maxrec: int | None = None
              ) -> tuple[list[tuple[str, str]], list[tuple], bool]:
        """(fields, rows, overflowed) for ``adql``; raises :class:`AdqlError`."""
        tr = translate(adql, self.columns)
        limit = tr.top
        if maxrec is not None:
            limit = maxrec if limit is None else min(limit, maxrec)
        sql = tr.sql + (" LIMIT ?" if limit is not None else "")
        params = tr.params + ([limit + 1] if limit is not None else [])
        try:
            with self._lock:
                rows = self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise AdqlError(f"cannot run the query: {exc}") from None
        overflow = False
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            overflow = maxrec is not None and (tr.top is None or maxrec < tr.top)
        return [(c, self.types[c]) for c in tr.columns], rows, overflow


# ---------------------------------------------------------------------- HTTP plumbing
def request_params(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    """GET query and urlencoded POST body, keys upper-cased (TAP names are
    case-insensitive); the last value wins."""
    out: dict[str, str] = {}
    for k, v in parse_qs(urlsplit(handler.path).query, keep_blank_values=True).items():
        out[k.upper()] = v[-1]
    if handler.command == "POST":
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        ctype = handler.headers.get("Content-Type", "")
        if body and "multipart/form-data" in ctype:
            raise AdqlError("multipart uploads are not supported by this service")
        for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items():
            out[k.upper()] = v[-1]
    return out


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes,
         content_type: str = VOTABLE_MIME) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def handle_tap_sync(handler: BaseHTTPRequestHandler, query_params: Mapping[str, str],
                    rows_table: ObsCoreTable | bytes) -> None:
    """Answer one TAP sync request (``query_params`` from :func:`request_params`).

    ``rows_table`` may also be a recorded answer (bytes), served as it is for any query.
    """
    p = {k.upper(): v for k, v in query_params.items()}
    request = p.get("REQUEST", "doQuery")
    if request.lower() != "doquery":
        send(handler, 400, error_votable(f"unsupported REQUEST {request!r}"))
        return
    lang = p.get("LANG", "")
    if not lang.upper().startswith("ADQL"):
        send(handler, 400, error_votable(f"unsupported LANG {lang!r} (use ADQL)"))
        return
    fmt = (p.get("RESPONSEFORMAT") or p.get("FORMAT") or "votable").lower()
    if "votable" not in fmt and fmt not in ("application/x-votable+xml", "text/xml"):
        send(handler, 400, error_votable(f"unsupported RESPONSEFORMAT {fmt!r}"))
        return
    adql = p.get("QUERY", "")
    if not adql.strip():
        send(handler, 400, error_votable("missing QUERY"))
        return
    maxrec = None
    if p.get("MAXREC"):
        try:
            maxrec = int(p["MAXREC"])
        except ValueError:
            send(handler, 400, error_votable(f"MAXREC {p['MAXREC']!r} is not an integer"))
            return
        if maxrec < 0:
            send(handler, 400, error_votable("MAXREC must be >= 0"))
            return
    if isinstance(rows_table, (bytes, bytearray)):
        send(handler, 200, bytes(rows_table))
        return
    try:
        fields, rows, overflow = rows_table.query(adql, maxrec)
    except AdqlError as exc:
        send(handler, 400, error_votable(str(exc)))
        return
    infos = [("QUERY_STATUS", "OK", ""), ("QUERY", adql, "")]
    trailing = [("QUERY_STATUS", "OVERFLOW", "")] if overflow else []
    send(handler, 200, votable(fields, rows, infos, trailing))


# ---------------------------------------------------------------------- DataLink
@dataclass
class Link:
    """One row of a DataLink answer. ``listing`` names an ID whose DataLink document lists
    this tarball's content (rendered as a service descriptor, as ALMA does)."""

    access_url: str | None
    semantics: str
    content_type: str | None = None
    content_length: int | None = None
    description: str = ""
    listing: str | None = None


DATALINK_FIELDS = [("ID", "char"), ("access_url", "char"), ("service_def", "char"),
                   ("error_message", "char"), ("semantics", "char"), ("description", "char"),
                   ("content_type", "char"), ("content_length", "long"),
                   ("readable", "boolean")]


def datalink_votable(ident: str, links: Sequence[Link], service_url: str) -> bytes:
    """A DataLink answer for ``ident``; ``service_url`` is this DataLink endpoint."""
    rows: list[tuple] = []
    descriptors = []
    for ln in links:
        if ln.access_url:
            rows.append((ident, ln.access_url, None, None, ln.semantics, ln.description,
                         ln.content_type, ln.content_length, True))
        if ln.listing:
            rid = f"DataLink.{ln.listing}"
            rows.append((ident, None, rid, None, ln.semantics, None, DATALINK_MIME, None,
                         None))
            access = f"{service_url}?ID={quote(ln.listing, safe='')}"
            descriptors.append(
                f'<RESOURCE type="meta" ID={quoteattr(rid)} utype="adhoc:service">\n'
                '<PARAM name="standardID" datatype="char" arraysize="*" '
                'value="ivo://ivoa.net/std/DataLink#links-1.0"/>\n'
                f'<PARAM name="accessURL" datatype="char" arraysize="*" '
                f"value={quoteattr(access)}/>\n"
                '<GROUP name="inputParams"/>\n</RESOURCE>\n')
    return votable(DATALINK_FIELDS, rows, infos=(), extra_resources="".join(descriptors))


def not_found_votable(ident: str) -> bytes:
    return votable(DATALINK_FIELDS, [(ident, None, None, f"NotFoundFault: {ident} not found",
                                      None, None, None, None, None)], infos=())


def service_url(handler: BaseHTTPRequestHandler) -> str:
    host = handler.headers.get("Host") or "{}:{}".format(*handler.server.server_address[:2])
    return f"http://{host}{urlsplit(handler.path).path}"


def handle_datalink(handler: BaseHTTPRequestHandler, query_params: Mapping[str, str],
                    datalink_index: Mapping[str, bytes | Sequence[Link]]) -> None:
    """Answer one DataLink sync request: the entry for ``ID`` (recorded bytes are served
    as they are; :class:`Link` lists are rendered with descriptors pointing back here)."""
    p = {k.upper(): v for k, v in query_params.items()}
    ident = p.get("ID", "").strip()
    if not ident:
        send(handler, 400, error_votable("missing ID"))
        return
    entry = datalink_index.get(ident)
    if entry is None:
        send(handler, 200, not_found_votable(ident), DATALINK_MIME)
    elif isinstance(entry, (bytes, bytearray)):
        send(handler, 200, bytes(entry), DATALINK_MIME)
    else:
        send(handler, 200, datalink_votable(ident, entry, service_url(handler)),
             DATALINK_MIME)


# ---------------------------------------------------------------------- recorded answers
RECORDED_MOUS = "uid://A001/X12a3/Xe9"  # the MOUS of the recorded DataLink answers
RECORDED_PRODUCT_TAR = "2017.1.01185.S_uid___A001_X12a3_Xe9_001_of_001.tar"


def shared_testdata_dir() -> Path:
    """``$SAILS_SHARED_TESTDATA``, else the repository's ``tests/data`` (a copy of the
    recorded archive responses, with their licence), else a ``shared/testdata`` beside an
    ancestor of this package (the development workspace)."""
    env = os.environ.get("SAILS_SHARED_TESTDATA")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        for cand in (parent / "tests" / "data", parent / "shared" / "testdata"):
            if (cand / "alma-archive").is_dir():
                return cand
    raise FileNotFoundError("no recorded archive responses found (tests/data/alma-archive); "
                            "set SAILS_SHARED_TESTDATA")


def recorded_datalink_index(testdata: Path | None = None) -> dict[str, bytes]:
    """The recorded ALMA DataLink answers, keyed by the ID each one answers."""
    d = (testdata or shared_testdata_dir()) / "alma-archive"
    return {RECORDED_MOUS: (d / "alma-datalink.xml").read_bytes(),
            RECORDED_PRODUCT_TAR: (d / "alma-datalink-recurse-this.xml").read_bytes()}


# ---------------------------------------------------------------------- a standalone fake
TAP_PATHS = ("/sync", "/tap/sync")
DATALINK_PATHS = ("/datalink/sync",)


class FakeArchiveHandler(Http11Handler):
    """TAP sync + DataLink over ``server.rows_table`` / ``server.datalink_index``.

    ``server.faults`` (``{"tap": f, "datalink": f}``) injects failures for tests and demos:
    ``"500"`` (HTTP 500), ``"sleep:SECONDS"`` (answer late), ``"malformed"`` (not XML),
    ``"error"`` (QUERY_STATUS=ERROR). ``"datalink:<ID>"`` fails the DataLink calls for one
    ID only.
    """

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def _fault(self, service: str) -> bool:
        fault = (getattr(self.server, "faults", None) or {}).get(service)
        if not fault:
            return False
        if fault.startswith("sleep:"):
            time.sleep(float(fault.split(":", 1)[1]))
            return False
        if fault == "500":
            send(self, 500, b"Internal Server Error", "text/plain")
        elif fault == "malformed":
            send(self, 200, b"<VOTABLE><RESOURCE><TABLE><oops", VOTABLE_MIME)
        elif fault == "error":
            send(self, 400, error_votable("simulated service failure"))
        else:
            return False
        return True

    def _route(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        try:
            params = request_params(self)
        except AdqlError as exc:
            send(self, 400, error_votable(str(exc)))
            return
        if path in TAP_PATHS:
            if not self._fault("tap"):
                handle_tap_sync(self, params, self.server.rows_table)
        elif path in DATALINK_PATHS:
            one = f"datalink:{params.get('ID', '').strip()}"
            if not self._fault(one) and not self._fault("datalink"):
                handle_datalink(self, params, self.server.datalink_index)
        else:
            send(self, 404, b"not found", "text/plain")

    do_GET = _route
    do_POST = _route
    do_HEAD = _route


class QuietThreadingHTTPServer(ThreadingHTTPServer):
    """Clients that hang up (e.g. after their timeout) are not worth a traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def serve_fake_archive(rows_table: ObsCoreTable | bytes,
                       datalink_index: Mapping[str, bytes | Sequence[Link]] | None = None,
                       host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Start the fake archive in a daemon thread; ``server.server_address`` has the port.
    Stop it with ``server.shutdown(); server.server_close()``."""
    server = QuietThreadingHTTPServer((host, port), FakeArchiveHandler)
    server.rows_table = rows_table  # type: ignore[attr-defined]
    server.datalink_index = dict(datalink_index or {})  # type: ignore[attr-defined]
    server.faults = {}  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, name="fake-archive", daemon=True).start()
    return server
