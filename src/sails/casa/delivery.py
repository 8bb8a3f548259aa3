"""A raw ALMA delivery (``datasets_raw/<mous>/``), parsed and checked without running any of it.

What ALMA delivers for a MOUS without an SRDP restore::

    raw/uid___A002_X..._X....asdm.sdm/      the ASDMs (also accepted at the top level)
    script/*.scriptForPI.py                 the restore script (code from outside)
    calibration/*.caltables.tgz             calibration tables
    calibration/*.flagversions.tgz          the flag versions the calibration ended with
    calibration/*.calapply.txt              the exact applycal calls
    qa/                                     QA reports
    README                                  names the CASA (and pipeline) version

Everything here is pure parsing: ``calapply.txt`` is read with :mod:`ast` and only
``applycal(...)`` calls whose keyword arguments are literals are accepted (anything else is
refused with its line number); tarballs are listed, never extracted. So the CASA-wheels
restore (:mod:`sails.casa.steps.restore`) runs nothing that came with the delivery. Only
the pinned-CASA path runs the delivery's ``scriptForPI``, and only when the user's config
allows it (``[casa] allow_delivery_scripts``).
"""

from __future__ import annotations

import ast
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sails.errors import SailsError

ASDM_SUFFIX = ".asdm.sdm"
CALAPPLY_GLOB = "*calapply.txt"
CALTABLES_GLOB = "*caltables.tgz"
FLAGVERSIONS_GLOB = "*flagversions.tgz"
SCRIPT_GLOB = "*scriptForPI.py"
README_GLOBS = ("README", "README.txt", "*README*")
# The one CASA task a calapply.txt may call, and the arguments the restore passes on.
APPLYCAL = "applycal"
APPLYCAL_ARGS = frozenset({
    "vis", "field", "spw", "intent", "selectdata", "timerange", "uvrange", "antenna",
    "scan", "observation", "msselect", "docallib", "callib", "gaintable", "gainfield",
    "interp", "spwmap", "calwt", "parang", "applymode", "flagbackup"})

_CASA_VERSION = re.compile(
    r"CASA[\s_-]*(?:version)?\s*[:=]?\s*v?(\d+\.\d+(?:\.\d+)?(?:-\d+)?)", re.IGNORECASE)
_PIPELINE_VERSION = re.compile(
    r"pipeline[\s_-]*(?:version)?\s*[:=]?\s*v?(\d{4}\.\d+\.\d+(?:\.\d+)?|r\d+)", re.IGNORECASE)


class DeliveryError(SailsError):
    """The delivery is incomplete or holds something the restore refuses to run."""


@dataclass(frozen=True)
class ApplyCall:
    """One ``applycal`` call of ``calapply.txt``: its line and its literal arguments."""

    line: int
    kwargs: dict[str, Any]

    @property
    def vis(self) -> str:
        return str(self.kwargs.get("vis", ""))

    @property
    def gaintables(self) -> list[str]:
        tables = self.kwargs.get("gaintable") or []
        return [tables] if isinstance(tables, str) else [str(t) for t in tables]


@dataclass
class Delivery:
    """What a raw delivery holds, as found on disk (paths absolute)."""

    root: Path
    asdms: list[Path] = field(default_factory=list)
    scripts: list[Path] = field(default_factory=list)
    caltables: list[Path] = field(default_factory=list)  # *.caltables.tgz
    flagversions: list[Path] = field(default_factory=list)  # *.flagversions.tgz
    calapply: list[Path] = field(default_factory=list)
    readme: Path | None = None
    casa_version: str | None = None
    pipeline_version: str | None = None
    applycals: list[ApplyCall] = field(default_factory=list)

    @property
    def script_dir(self) -> Path:
        return self.root / "script"

    def eb_names(self) -> list[str]:
        return [eb_of(a) for a in self.asdms]

    def facts(self) -> dict[str, Any]:
        """The delivery as the restore report records it (paths relative to ``root``)."""
        def rel(p: Path) -> str:
            return str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p)

        return {"root": str(self.root), "asdms": [rel(p) for p in self.asdms],
                "scripts": [rel(p) for p in self.scripts],
                "caltables": [rel(p) for p in self.caltables],
                "flagversions": [rel(p) for p in self.flagversions],
                "calapply": [rel(p) for p in self.calapply],
                "readme": rel(self.readme) if self.readme else None,
                "casa_version": self.casa_version, "pipeline_version": self.pipeline_version,
                "applycal_calls": len(self.applycals)}


def eb_of(asdm: Path) -> str:
    """``uid___A002_X1_X2.asdm.sdm`` -> ``uid___A002_X1_X2`` (the restored MS's stem)."""
    name = asdm.name
    return name[: -len(ASDM_SUFFIX)] if name.endswith(ASDM_SUFFIX) else name


# ----------------------------------------------------------------------------- README
def read_versions(text: str) -> tuple[str | None, str | None]:
    """(CASA version, pipeline version) named in a README text; None when absent."""
    casa = _CASA_VERSION.search(text)
    pipe = _PIPELINE_VERSION.search(text)
    return (casa.group(1) if casa else None), (pipe.group(1) if pipe else None)


def find_readme(*folders: Path) -> Path | None:
    for folder in folders:
        if not folder.is_dir():
            continue
        for pattern in README_GLOBS:
            hits = sorted(p for p in folder.glob(pattern) if p.is_file())
            if hits:
                return hits[0]
    return None


# ----------------------------------------------------------------------------- calapply
def parse_calapply(text: str, source: str = "calapply.txt") -> list[ApplyCall]:
    """The ``applycal`` calls of a calapply.txt; anything else raises DeliveryError.

    Accepted: one expression statement per call, ``applycal(...)`` with keyword arguments
    only, each value a Python literal (strings, numbers, booleans, lists). Comments and
    blank lines are ignored. Nothing is evaluated beyond :func:`ast.literal_eval`.
    """
    try:
        tree = ast.parse(text, filename=source)
    except SyntaxError as exc:
        raise DeliveryError(f"{source} line {exc.lineno}: not Python syntax ({exc.msg}); "
                            "refusing to restore from it") from None
    calls: list[ApplyCall] = []
    for node in tree.body:
        where = f"{source} line {node.lineno}"
        call = node.value if isinstance(node, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and call.func.id == APPLYCAL):
            got = ast.get_source_segment(text, node) or type(node).__name__
            raise DeliveryError(f"{where} is not an applycal call: {got.strip()[:80]!r}; "
                                "refusing to restore from it (only applycal(...) lines with "
                                "literal arguments are accepted)")
        if call.args:
            raise DeliveryError(f"{where}: applycal with positional arguments; only "
                                "keyword arguments are accepted")
        kwargs: dict[str, Any] = {}
        for kw in call.keywords:
            if kw.arg is None:
                raise DeliveryError(f"{where}: applycal(**...) is not accepted")
            if kw.arg not in APPLYCAL_ARGS:
                raise DeliveryError(f"{where}: unknown applycal argument {kw.arg!r}")
            try:
                kwargs[kw.arg] = ast.literal_eval(kw.value)
            except (ValueError, TypeError, SyntaxError):
                raise DeliveryError(f"{where}: the value of {kw.arg!r} is not a literal "
                                    f"({ast.get_source_segment(text, kw.value)!r})") from None
        if not kwargs.get("vis"):
            raise DeliveryError(f"{where}: applycal without vis=")
        if kwargs.get("docallib"):
            raise DeliveryError(f"{where}: docallib=True (a cal library) is not supported")
        calls.append(ApplyCall(node.lineno, kwargs))
    if not calls:
        raise DeliveryError(f"{source} holds no applycal call")
    return calls


# ----------------------------------------------------------------------------- tarballs
def tar_names(path: Path) -> set[str]:
    """Every path component of every member of a tarball (listed, not extracted)."""
    try:
        with tarfile.open(path) as tf:
            members = tf.getnames()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DeliveryError(f"{path.name}: cannot be read as a tarball ({exc})") from None
    return {part for m in members for part in PurePosixPath(m).parts}


def check_asdm(asdm: Path) -> str | None:
    """Why ``asdm`` is not a complete ASDM folder (None when it looks complete)."""
    if not asdm.is_dir():
        return f"{asdm.name} is not a folder"
    if not (asdm / "ASDM.xml").is_file():
        return f"{asdm.name} has no ASDM.xml"
    if not (asdm / "Main.xml").is_file():
        return f"{asdm.name} has no Main.xml (truncated?)"
    main = (asdm / "Main.xml").read_text(errors="replace")
    if "</MainTable>" not in main:
        return f"{asdm.name}: Main.xml is truncated"
    bdfs = [p for p in (asdm / "ASDMBinary").glob("*") if p.is_file()] \
        if (asdm / "ASDMBinary").is_dir() else []
    if not bdfs:
        return f"{asdm.name} holds no binary data (ASDMBinary/ is empty or missing)"
    for bdf in bdfs:
        with bdf.open("rb") as fh:
            fh.seek(max(0, bdf.stat().st_size - 64))
            if b"--MIME_boundary" not in fh.read():
                return f"{asdm.name}: binary data file {bdf.name} is truncated"
    return None


# ----------------------------------------------------------------------------- whole
def _glob(folders: list[Path], pattern: str) -> list[Path]:
    return sorted({p for f in folders if f.is_dir() for p in f.rglob(pattern) if p.is_file()})


def find_delivery(root: Path, extra: tuple[Path, ...] = ()) -> Delivery:
    """Locate a delivery's parts under ``root`` (and ``extra`` folders, e.g. where the
    download put the README); nothing is checked yet."""
    folders = [root, *extra]
    asdms = sorted({p for f in (root, root / "raw") if f.is_dir()
                    for p in f.glob(f"*{ASDM_SUFFIX}")})
    calib = [f / "calibration" for f in folders] + [root]
    return Delivery(
        root=root, asdms=asdms, scripts=_glob([f / "script" for f in folders], SCRIPT_GLOB),
        caltables=_glob(calib, CALTABLES_GLOB), flagversions=_glob(calib, FLAGVERSIONS_GLOB),
        calapply=_glob(calib, CALAPPLY_GLOB), readme=find_readme(*folders))


def has_raw_data(root: Path) -> bool:
    return bool(find_delivery(root).asdms)


def read_delivery(root: Path, extra: tuple[Path, ...] = (), *,
                  need_calapply: bool = True) -> Delivery:
    """Find and check a delivery: README with a CASA version, complete ASDMs, calapply.txt
    of applycal calls only, every table it names present in a caltables tarball."""
    d = find_delivery(root, extra)
    if not d.asdms:
        raise DeliveryError(f"no ASDM (*{ASDM_SUFFIX}) in {root} or {root / 'raw'}")
    if d.readme is None:
        raise DeliveryError(f"the delivery has no README in {root}: cannot tell which CASA "
                            "version calibrated it")
    d.casa_version, d.pipeline_version = read_versions(d.readme.read_text(errors="replace"))
    if d.casa_version is None:
        raise DeliveryError(f"{d.readme.name} names no CASA version (looked for 'CASA "
                            "version X.Y.Z'): cannot tell which CASA calibrated this delivery")
    for asdm in d.asdms:
        why = check_asdm(asdm)
        if why:
            raise DeliveryError(f"incomplete ASDM: {why}")
    if not need_calapply:
        return d
    if not d.calapply:
        raise DeliveryError("the delivery has no calibration/*.calapply.txt: nothing says "
                            "which calibration to apply")
    for path in d.calapply:
        d.applycals += parse_calapply(path.read_text(errors="replace"), path.name)
    tables: set[str] = set()
    for tgz in d.caltables:
        tables |= tar_names(tgz)
    ebs = set(d.eb_names())
    for call in d.applycals:
        vis = PurePosixPath(call.vis).name
        if vis.removesuffix(".ms") not in ebs:
            raise DeliveryError(f"calapply line {call.line}: vis={call.vis!r} is none of the "
                                f"delivered ASDMs ({', '.join(sorted(ebs))})")
        missing = [t for t in call.gaintables if PurePosixPath(t).name not in tables]
        if missing:
            where = ", ".join(p.name for p in d.caltables) or "no caltables tarball"
            raise DeliveryError(f"calapply line {call.line} names caltable(s) missing from "
                                f"the delivery: {', '.join(missing)} (looked in {where})")
    return d
