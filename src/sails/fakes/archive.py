"""A loopback stand-in for the ALMA archive's download services, serving simulated MOUS.

The folder served holds one sub-folder per MOUS, named by its file-system uid
(``uid___A001_X1_X2/``) and holding what an SRDP calibrated-data restore delivers:
``uid___A002_..._X...ms/`` measurement sets, ``weblog_restore/``, optional raw
``*.asdm.sdm/`` folders, and files such as ``truth.json`` that the archive would not ship
(hidden from both views).

It answers in the two ways the real services do:

* ``/srdp/<mous_fs>/...``: an SRDP-restore-like browsable tree (Apache-style autoindex pages
  with relative links, sort links, a parent link and abbreviated sizes; files with
  ``Content-Length``, ``HEAD`` and ``Range`` -> 206). Raw ASDMs are not part of a restore.
* ``/datalink/sync?ID=<mous uid>``: a DataLink VOTable in the same shape as the real
  ``almascience.org`` responses, whose ``access_url``s point to tarballs under
  ``/dataPortal/`` (built on first use, cached): ``#documentation`` README, ``#this``
  product tarball (plus the ``DataLink.<tar>`` service row whose listing,
  ``/datalink/sync?ID=<tar name>``, names every file inside it), ``#auxiliary`` tarball and
  one ``#progenitor`` tarball per raw ASDM.

``extra_routes`` mounts more handlers by path prefix (e.g. a TAP service at ``/tap/sync``).
"""

from __future__ import annotations

import email.utils
import fnmatch
import html
import json
import mimetypes
import os
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape, quoteattr

from sails.atomic import replacing
from sails.errors import UserInputError
from sails.fakes.http11 import Http11Handler
from sails.ids import is_uid, parse_uid

Route = Callable[[BaseHTTPRequestHandler, dict[str, str]], None]

# Top-level names in a MOUS folder that the archive would not deliver.
DEFAULT_HIDDEN = ("truth.json", "*obscore*", "*alminer*", ".*", "*.tmp")
# Top-level folders that go into the auxiliary tarball rather than the product one.
AUX_DIRS = ("script", "calibration", "log", "qa")
# A MOUS folder's own README (a raw delivery's, naming the CASA version) is served as the
# #documentation file rather than inside a tarball.
README_NAME = "README"
DEFAULT_PROJECT = "2099.1.00001.S"
_PROJECT_RE = re.compile(r"^\d{4}\.\d\.\d{5}\.[A-Z]+$")
_CHUNK = 1 << 20


@dataclass
class TarSpec:
    """One tarball offered through DataLink: its name, semantics and members."""

    name: str
    semantics: str
    mous_fs: str
    members: list[tuple[str, Path]] = field(default_factory=list)  # (arcname, source path)
    files: dict[str, Path] = field(default_factory=dict)  # relpath in MOUS -> regular file


def human_size(n: int) -> str:
    """Apache's abbreviated sizes: 512, 1.2K, 34M, 2.0G."""
    if n < 1024:
        return str(n)
    for unit in "KMGT":
        n_f = n / 1024
        if n_f < 10:
            return f"{n_f:.1f}{unit}"
        if n_f < 1024:
            return f"{n_f:.0f}{unit}"
        n = int(n_f)
    return f"{n}P"


class ArchiveServer:
    """Threaded HTTP server on 127.0.0.1 serving a folder of simulated MOUS.

    Use as a context manager; ``url`` is the base URL (``http://127.0.0.1:PORT``).
    ``bytes_sent`` counts response body bytes sent (for resume checks), ``hits`` counts
    requests per path.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_routes: dict[str, Route] | None = None,
        cache_dir: str | os.PathLike | None = None,
        hidden: tuple[str, ...] = DEFAULT_HIDDEN,
        project_code: str | None = None,
        verbose: bool = False,
        rate_bytes_per_s: float | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        # Per-connection throttle for file bodies (a realistic archive link in benchmarks).
        self.rate_bytes_per_s = rate_bytes_per_s
        if not self.root.is_dir():
            raise UserInputError(f"cannot serve {self.root}: not a folder")
        self.host = host
        self.port = port
        self.extra_routes = dict(extra_routes or {})
        self.hidden = tuple(hidden)
        self.project_code = project_code
        self.verbose = verbose
        self._own_cache = cache_dir is None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._tar_locks: dict[str, threading.Lock] = {}
        self._specs: dict[str, list[TarSpec]] = {}
        self.bytes_sent = 0
        self.hits: Counter[str] = Counter()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ArchiveServer:
        if self._httpd is not None:
            return self
        if self.cache_dir is None:
            self.cache_dir = Path(tempfile.mkdtemp(prefix="sails-archive-cache-"))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        handler = type("BoundHandler", (_Handler,), {"archive": self})
        httpd = _QuietServer((self.host, self.port), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"archive-server-{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        if self._own_cache and self.cache_dir is not None:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
            self.cache_dir = None

    def __enter__(self) -> ArchiveServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Block until interrupted (for the CLI)."""
        self.start()
        try:
            while True:
                time.sleep(3600)
        finally:
            self.stop()

    # ------------------------------------------------------------------ addresses
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def srdp_url(self, mous: str) -> str:
        return f"{self.url}/srdp/{parse_uid(mous, 'MOUS uid').fs}/"

    def datalink_url(self, mous: str) -> str:
        return f"{self.url}/datalink/sync?ID={quote(parse_uid(mous, 'MOUS uid').uri, safe='')}"

    def file_url(self, name: str) -> str:
        return f"{self.url}/dataPortal/{quote(name)}"

    # ------------------------------------------------------------------ content model
    def is_hidden(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pat) for pat in self.hidden)

    def mous_dirs(self) -> dict[str, Path]:
        """MOUS folders by fs uid (sub-folders of the root named like a uid)."""
        out = {}
        for p in sorted(self.root.iterdir()):
            if p.is_dir() and not p.is_symlink() and is_uid(p.name):
                out[parse_uid(p.name).fs] = p
        return out

    def mous_dir(self, mous: str) -> Path | None:
        try:
            fs = parse_uid(mous, "MOUS uid").fs
        except UserInputError:
            return None
        return self.mous_dirs().get(fs)

    def project_of(self, mous_dir: Path) -> str:
        """Project code for tarball names: constructor, else truth.json, else a default."""
        if self.project_code:
            return self.project_code
        truth = mous_dir / "truth.json"
        if truth.is_file():
            try:
                data = json.loads(truth.read_text())
            except (OSError, ValueError):
                data = {}
            if isinstance(data, dict):
                for key in ("project_code", "proposal_id"):
                    val = data.get(key)
                    if isinstance(val, str) and _PROJECT_RE.match(val):
                        return val
        return DEFAULT_PROJECT

    def tar_specs(self, mous_fs: str) -> list[TarSpec]:
        """The tarballs DataLink offers for one MOUS (none for an unknown MOUS).

        Computed once per server lifetime, like the tarballs themselves.
        """
        with self._lock:
            cached = self._specs.get(mous_fs)
        if cached is None:
            cached = self._make_specs(mous_fs)
            with self._lock:
                self._specs[mous_fs] = cached
        return cached

    def _make_specs(self, mous_fs: str) -> list[TarSpec]:
        mdir = self.mous_dirs().get(mous_fs)
        if mdir is None:
            return []
        project = self.project_of(mdir)
        prefix = (f"{project}/science_goal.uid___A001_X0_X0/group.uid___A001_X0_X1/"
                  f"member.{mous_fs}")
        product = TarSpec(f"{project}_{mous_fs}_001_of_001.tar", "#this", mous_fs)
        aux = TarSpec(f"{project}_{mous_fs}_auxiliary.tar", "#auxiliary", mous_fs)
        raws: list[TarSpec] = []
        for entry in sorted(mdir.iterdir()):
            if self.is_hidden(entry.name) or entry.is_symlink() or entry.name == README_NAME:
                continue
            if entry.is_dir() and entry.name.endswith(".asdm.sdm"):
                spec = TarSpec(f"{project}_{entry.name}.tar", "#progenitor", mous_fs)
                self._add_members(spec, entry, f"{prefix}/raw/{entry.name}", mdir)
                raws.append(spec)
            elif entry.is_dir() and entry.name in AUX_DIRS:
                self._add_members(aux, entry, f"{prefix}/{entry.name}", mdir)
            elif entry.name.endswith(".ms") or entry.name == "weblog_restore":
                self._add_members(product, entry, f"{prefix}/calibrated/{entry.name}", mdir)
            else:
                self._add_members(product, entry, f"{prefix}/product/{entry.name}", mdir)
        return [s for s in (product, aux, *raws) if s.members]

    @staticmethod
    def _add_members(spec: TarSpec, entry: Path, arc: str, mdir: Path) -> None:
        if entry.is_dir():
            spec.members.append((arc, entry))
            for root, dirs, files in os.walk(entry):
                dirs.sort()
                rel_root = Path(root).relative_to(entry)
                for d in dirs:
                    spec.members.append((f"{arc}/{(rel_root / d).as_posix()}", Path(root, d)))
                for f in sorted(files):
                    p = Path(root, f)
                    if p.is_symlink() or not p.is_file():
                        continue
                    spec.members.append((f"{arc}/{(rel_root / f).as_posix()}", p))
                    spec.files[p.relative_to(mdir).as_posix()] = p
        elif entry.is_file():
            spec.members.append((arc, entry))
            spec.files[entry.relative_to(mdir).as_posix()] = entry

    def find_tar(self, name: str) -> TarSpec | None:
        """The tarball spec called ``name`` (any MOUS; product tarballs name theirs)."""
        dirs = list(self.mous_dirs())
        dirs.sort(key=lambda fs: fs not in name)  # the likely owner first
        for fs in dirs:
            for spec in self.tar_specs(fs):
                if spec.name == name:
                    return spec
        return None

    def readme_text(self, mous_fs: str) -> bytes:
        specs = self.tar_specs(mous_fs)
        lines = [f"Simulated ALMA delivery for member OUS {parse_uid(mous_fs).uri}", ""]
        own = self.mous_dirs()[mous_fs] / README_NAME if mous_fs in self.mous_dirs() else None
        if own is not None and own.is_file():
            lines += [own.read_text(errors="replace").rstrip(), ""]
        lines += [f"  {s.name}  ({s.semantics})" for s in specs]
        return ("\n".join(lines) + "\n").encode()

    def tarball(self, spec: TarSpec) -> Path:
        """Build (once, atomically) and return the cached tarball for ``spec``."""
        assert self.cache_dir is not None, "server not started"
        with self._lock:
            lock = self._tar_locks.setdefault(spec.name, threading.Lock())
        with lock:
            path = self.cache_dir / spec.name
            if path.is_file():
                return path
            with replacing(path) as tmp, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tf:
                for arcname, src in spec.members:
                    info = tf.gettarinfo(str(src), arcname)
                    info.uid = info.gid = 0
                    info.mtime = int(info.mtime)
                    info.uname = info.gname = "alma"
                    if info.isreg():
                        with open(src, "rb") as fh:
                            tf.addfile(info, fh)
                    else:
                        tf.addfile(info)
            return path

    # ------------------------------------------------------------------ DataLink
    def datalink_votable(self, ident: str) -> bytes:
        """A DataLink response in the archive's shape, for a MOUS uid or a tarball name."""
        rows: list[dict[str, str]] = []
        services: list[tuple[str, str]] = []
        mdir = self.mous_dir(ident) if is_uid(ident) else None
        spec = None if mdir is not None else self.find_tar(ident)
        if mdir is not None:
            fs = mdir.name
            uri = parse_uid(fs).uri
            readme = f"member.{fs}.README.txt"
            rows.append(dict(ID=uri, access_url=self.file_url(readme),
                             semantics="#documentation",
                             description=f"Download documentation for ./{uri}|README.",
                             content_type="text/plain",
                             content_length=str(len(self.readme_text(fs))), readable="true"))
            for s in self.tar_specs(fs):
                kind = "" if s.semantics == "#progenitor" else "null"
                rows.append(dict(ID=uri, access_url=self.file_url(s.name),
                                 semantics=s.semantics,
                                 description=f"Download dataset of type: {kind}, and class: N/A.",
                                 content_type="application/x-tar",
                                 content_length=str(self.tarball(s).stat().st_size),
                                 readable="true"))
                if s.semantics in ("#this", "#auxiliary"):
                    sd = f"DataLink.{s.name}"
                    rows.append(dict(ID=uri, service_def=sd, semantics=s.semantics,
                                     content_type="application/x-votable+xml;content=datalink"))
                    services.append((sd, f"{self.url}/datalink/sync?ID={quote(s.name)}"))
        elif spec is not None:
            for rel, src in spec.files.items():
                rows.append(dict(ID=spec.name,
                                 access_url=self.file_url(f"{spec.name}/{rel}"),
                                 semantics="#this",
                                 description="Download dataset of type: product, and class: "
                                             "SCIENCE.",
                                 content_type="application/octet-stream",
                                 content_length=str(src.stat().st_size), readable="true"))
        else:
            rows.append(dict(ID=ident, error_message=f"NotFoundFault: {ident} not found",
                             semantics="#this"))
        return _votable(rows, services)

    # ------------------------------------------------------------------ bookkeeping
    def count(self, path: str, nbytes: int = 0) -> None:
        with self._lock:
            self.hits[path] += 1
            self.bytes_sent += nbytes

    def add_bytes(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_sent += nbytes


_FIELDS = (
    ('ID', 'datatype="char" arraysize="*" ucd="meta.id;meta.main"'),
    ("access_url", 'datatype="char" arraysize="*" ucd="meta.ref.url"'),
    ("service_def", 'datatype="char" arraysize="*" ucd="meta.ref"'),
    ("error_message", 'datatype="char" arraysize="*" ucd="meta.code.error"'),
    ("semantics", 'datatype="char" arraysize="*" ucd="meta.code"'),
    ("description", 'datatype="char" arraysize="*" ucd="meta.note"'),
    ("content_type", 'datatype="char" arraysize="*" ucd="meta.code.mime"'),
    ("content_length", 'datatype="long" ucd="phys.size;meta.file" unit="byte"'),
)


def _votable(rows: list[dict[str, str]], services: list[tuple[str, str]]) -> bytes:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<VOTABLE xmlns="http://www.ivoa.net/xml/VOTable/v1.3" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.4">',
        '  <RESOURCE type="results">',
        "    <TABLE>",
    ]
    for name, attrs in _FIELDS:
        out.append(f'      <FIELD name="{name}" {attrs} />')
    out.append('      <FIELD name="readable" datatype="boolean">')
    out.append("        <DESCRIPTION>the caller is allowed to use this link with the current "
               "authenticated identity</DESCRIPTION>")
    out.append("      </FIELD>")
    out += ["      <DATA>", "        <TABLEDATA>"]
    for row in rows:
        out.append("          <TR>")
        for name in [f for f, _ in _FIELDS] + ["readable"]:
            val = row.get(name, "")
            out.append(f"            <TD>{escape(val)}</TD>" if val else "            <TD />")
        out.append("          </TR>")
    out += ["        </TABLEDATA>", "      </DATA>", "    </TABLE>",
            '    <INFO name="placeholder" value="ignore" />', "  </RESOURCE>"]
    for sd, access in services:
        out.append(f'  <RESOURCE type="meta" ID={quoteattr(sd)} utype="adhoc:service">')
        out.append('    <PARAM name="standardID" datatype="char" arraysize="37" '
                   'value="ivo://ivoa.net/std/DataLink#links-1.0" />')
        out.append(f'    <PARAM name="accessURL" datatype="char" arraysize="{len(access)}" '
                   f"value={quoteattr(access)} />")
        out.append('    <GROUP name="inputParams" />')
        out.append("  </RESOURCE>")
    out.append("</VOTABLE>")
    return ("\n".join(out) + "\n").encode()


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up (a cancelled download) are normal here, not tracebacks."""

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(Http11Handler):
    server_version = "sails-sim-archive/1.0"
    archive: ArchiveServer  # set on the per-server subclass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
        if self.archive.verbose:
            super().log_message(format, *args)

    # ------------------------------------------------------------------ dispatch
    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _params(self) -> dict[str, str]:
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        if self.command == "POST":
            ctype = self.headers.get("Content-Type", "")
            length = int(self.headers.get("Content-Length") or 0)
            if ctype.startswith("application/x-www-form-urlencoded") and length:
                body = self.rfile.read(length).decode("utf-8", "replace")
                params.update(parse_qsl(body, keep_blank_values=True))
        return params

    def _dispatch(self) -> None:
        path = unquote(urlsplit(self.path).path)
        self.archive.count(path)
        try:
            for prefix in sorted(self.archive.extra_routes, key=len, reverse=True):
                if path.startswith(prefix):
                    self.archive.extra_routes[prefix](self, self._params())
                    return
            if self.command == "POST":
                self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)
            elif path == "/":
                self._send_bytes(_ROOT_PAGE, "text/html; charset=utf-8")
            elif path == "/srdp" or path.startswith("/srdp/"):
                self._srdp(path)
            elif path == "/datalink/sync":
                ident = self._params().get("ID", "")
                self._send_bytes(self.archive.datalink_votable(ident),
                                 "application/x-votable+xml;content=datalink")
            elif path.startswith("/dataPortal/"):
                self._data_portal(path[len("/dataPortal/"):])
            else:
                self.send_error(HTTPStatus.NOT_FOUND)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # ------------------------------------------------------------------ SRDP tree
    def _srdp(self, path: str) -> None:
        rel = path[len("/srdp"):].strip("/")
        parts = [p for p in rel.split("/") if p]
        if any(p in (".", "..") for p in parts):
            self.send_error(HTTPStatus.BAD_REQUEST)
            return
        if not parts:
            if not path.endswith("/"):
                self._redirect(path + "/")
                return
            entries = list(self.archive.mous_dirs().values())
            self._send_index(path, entries, parent=None)
            return
        mdir = self.archive.mous_dirs().get(parts[0])
        if mdir is None or (len(parts) > 1 and self._hidden_in_restore(parts[1])):
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        target = mdir.joinpath(*parts[1:])
        if target.is_symlink() or not target.exists():
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        if target.is_dir():
            if not path.endswith("/"):
                self._redirect(path + "/")
                return
            entries = [e for e in target.iterdir() if not e.is_symlink()]
            if target == mdir:
                entries = [e for e in entries if not self._hidden_in_restore(e.name)]
            self._send_index(path, entries, parent="../")
        else:
            self._send_file(target)

    def _redirect(self, path: str) -> None:
        self.send_response(HTTPStatus.MOVED_PERMANENTLY)
        self.send_header("Location", quote(path))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _hidden_in_restore(self, name: str) -> bool:
        """Top-level names a calibrated-data restore does not hold (truth, raw ASDMs)."""
        return self.archive.is_hidden(name) or name.endswith(".asdm.sdm")

    def _send_index(self, path: str, entries: list[Path], parent: str | None) -> None:
        query = dict(parse_qsl(urlsplit(self.path).query.replace(";", "&")))
        column, order = query.get("C", "N"), query.get("O", "A")

        def key(e: Path) -> tuple:
            st = e.stat()
            if column == "S":
                return (st.st_size if e.is_file() else -1, e.name)
            if column == "M":
                return (st.st_mtime, e.name)
            return (e.name,)

        entries = sorted(entries, key=key, reverse=(order == "D"))
        title = html.escape(path if path.endswith("/") else path + "/")
        flip = {c: ("D" if column == c and order == "A" else "A") for c in "NMSD"}
        rows = [
            '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">',
            f"<html>\n <head>\n  <title>Index of {title}</title>\n </head>\n <body>",
            f"<h1>Index of {title}</h1>",
            "  <table>",
            '   <tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th>'
            f'<th><a href="?C=N;O={flip["N"]}">Name</a></th>'
            f'<th><a href="?C=M;O={flip["M"]}">Last modified</a></th>'
            f'<th><a href="?C=S;O={flip["S"]}">Size</a></th>'
            f'<th><a href="?C=D;O={flip["D"]}">Description</a></th></tr>',
            '   <tr><th colspan="5"><hr></th></tr>',
        ]
        if parent is not None:
            up = path.rstrip("/").rsplit("/", 1)[0] + "/"
            rows.append('<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]">'
                        f'</td><td><a href="{html.escape(quote(up))}">Parent Directory</a>'
                        '</td><td>&nbsp;</td><td align="right">  - </td><td>&nbsp;</td></tr>')
        for e in entries:
            st = e.stat()
            is_dir = e.is_dir()
            name = e.name + ("/" if is_dir else "")
            mtime = time.strftime("%Y-%m-%d %H:%M", time.gmtime(st.st_mtime))
            size = "  - " if is_dir else human_size(st.st_size)
            icon = ('<img src="/icons/folder.gif" alt="[DIR]">' if is_dir
                    else '<img src="/icons/unknown.gif" alt="[   ]">')
            rows.append(f'<tr><td valign="top">{icon}</td><td><a href="'
                        f'{html.escape(quote(name))}">{html.escape(name)}</a></td>'
                        f'<td align="right">{mtime}  </td><td align="right">{size}</td>'
                        "<td>&nbsp;</td></tr>")
        rows += ['   <tr><th colspan="5"><hr></th></tr>', "</table>",
                 "<address>sails-sim-archive at 127.0.0.1</address>", "</body></html>"]
        self._send_bytes(("\n".join(rows) + "\n").encode(), "text/html;charset=UTF-8")

    # ------------------------------------------------------------------ DataLink files
    def _data_portal(self, name: str) -> None:
        if not name or ".." in name.split("/"):
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        arc = self.archive
        m = re.fullmatch(r"member\.(uid___A\d{3}_X[0-9a-f]+_X[0-9a-f]+)\.README\.txt", name)
        if m and m.group(1) in arc.mous_dirs():
            self._send_bytes(arc.readme_text(m.group(1)), "text/plain")
            return
        tar_name, _, rel = name.partition("/")
        spec = arc.find_tar(tar_name)
        if spec is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        if rel:
            src = spec.files.get(rel)
            if src is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            self._send_file(src)
        else:
            self._send_file(arc.tarball(spec), "application/x-tar")

    # ------------------------------------------------------------------ bodies
    def _send_bytes(self, body: bytes, ctype: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.archive.add_bytes(len(body))  # before: the client may be done at once
            self.wfile.write(body)

    def _send_file(self, path: Path, ctype: str | None = None) -> None:
        """A file with Content-Length, Last-Modified, Accept-Ranges; one Range -> 206."""
        st = path.stat()
        size = st.st_size
        start, end = 0, size - 1
        status = HTTPStatus.OK
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(size - int(m.group(2)), 0)
                if start >= size or start > end:
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = HTTPStatus.PARTIAL_CONTENT
        length = max(end - start + 1, 0)
        self.send_response(status)
        self.send_header("Content-Type", ctype or mimetypes.guess_type(path.name)[0]
                         or "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD" or length == 0:
            return
        rate = self.archive.rate_bytes_per_s
        step = _CHUNK if not rate else max(16 << 10, min(_CHUNK, int(rate / 20)))
        t0 = time.monotonic()
        with open(path, "rb") as fh:
            offset, left = start, length
            while left > 0:
                if rate:  # throttled: never ahead of rate x elapsed
                    ahead = (offset - start) / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                want = min(left, step)
                # Counted before sending (a client may finish before we return); a chunk
                # cut short by a hang-up counts whole (at most 1 MiB too many).
                self.archive.add_bytes(want)
                sent = self.connection.sendfile(fh, offset, want)
                self.archive.add_bytes(sent - want)
                if sent == 0:
                    break
                offset += sent
                left -= sent


_ROOT_PAGE = (
    b"<html><body><h1>sails simulated ALMA archive</h1><ul>"
    b'<li><a href="srdp/">SRDP restores</a></li>'
    b"<li>DataLink: /datalink/sync?ID=uid://A001/X1/X2</li>"
    b"</ul></body></html>\n"
)
