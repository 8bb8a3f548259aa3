"""A bare CASA "container image" for the fake CANFAR service: a venv holding only CASA.

A CANFAR CASA session runs a monolithic CASA: its Python has casatools, casatasks,
casadata, casaplotms, casaviewer and what they need (numpy, scipy, matplotlib, ...), and
nothing of ours (no sails, no auto-selfcal, no Prefect, no package metadata of either).
Running the fake's sessions with the developer's venv hides every job-side import or
metadata lookup that only works because the orchestrator's packages are installed (issue
#22, defect 7). So the fake runs them here instead:

    <cache>/alma-sails/casa-image/<key>/
        bin/python3                           # a venv of the same base interpreter
        lib/pythonX.Y/site-packages/
            casatools -> <dev venv>/.../casatools        # links, per top-level name
            casatools-6.7.0.31.dist-info -> ...
            ...                                          # only CASA's dependency closure
            casasiteconfig.py                            # the image's own CASA config

The distributions are the dependency closure (``Requires-Dist`` without extras) of
:data:`CASA_DISTRIBUTIONS`, linked from wherever they are installed here, so building takes
a second and no download. Built once per set of versions (the key), in a temporary folder
renamed into place, so concurrent builders agree.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sails.casaenv import SITECONFIG_TEXT

# What a monolithic CASA install ships (the roots; their own dependencies come along).
CASA_DISTRIBUTIONS = ("casatools", "casatasks", "casadata", "casaplotms", "casaviewer")
IMAGE_FORMAT = "1"  # bump when the layout below changes
# The PATH of a container: the image's interpreter first, then the system's.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alma-sails" / "casa-image"


def casa_closure(roots: tuple[str, ...] = CASA_DISTRIBUTIONS) -> dict[str, md.Distribution]:
    """Canonical name -> installed distribution, for ``roots`` and their (non-extra) needs."""
    out: dict[str, md.Distribution] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in out:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional need not installed here: the image lacks it too
        out[name] = dist
        for spec in dist.requires or ():
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return dict(sorted(out.items()))


def _top_level(dist: md.Distribution) -> dict[str, set[str]]:
    """Top-level entry -> its second-level entries (for namespace folders) in the RECORD."""
    tops: dict[str, set[str]] = {}
    for f in dist.files or ():
        parts = Path(str(f)).parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
            continue  # scripts, caches, and start-up hooks are not the package
        tops.setdefault(parts[0], set())
        if len(parts) > 2 and parts[1] != "__pycache__":
            tops[parts[0]].add(parts[1])
    return tops


def _image_key(dists: dict[str, md.Distribution]) -> str:
    h = hashlib.sha256()
    h.update(f"{IMAGE_FORMAT}\0{sys.version}\0{sys.base_prefix}\0{SITECONFIG_TEXT}".encode())
    for name, dist in dists.items():
        h.update(f"{name}\0{dist.version}\0{dist.locate_file('')}\0".encode())
    return h.hexdigest()[:16]


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def _link_distribution(dist: md.Distribution, site: Path) -> None:
    root = Path(str(dist.locate_file("")))
    for top, subs in _top_level(dist).items():
        src, dest = root / top, site / top
        if not (src.exists() or src.is_symlink()):
            continue
        namespace = src.is_dir() and not (src / "__init__.py").exists() and subs and \
            not top.endswith((".dist-info", ".libs", ".data"))
        if not namespace:
            if not (dest.exists() or dest.is_symlink()):
                dest.symlink_to(src, target_is_directory=src.is_dir())
            continue
        # A namespace folder (google/ of protobuf) may hold other distributions' packages:
        # only this distribution's own entries are linked into a real folder.
        dest.mkdir(exist_ok=True)
        for sub in sorted(subs):
            if not (dest / sub).exists() and (src / sub).exists():
                (dest / sub).symlink_to(src / sub, target_is_directory=(src / sub).is_dir())


def ensure_casa_image() -> Path:
    """Build (once, cached) and return the bare CASA venv's folder."""
    dists = casa_closure()
    missing = [n for n in CASA_DISTRIBUTIONS if canonicalize_name(n) not in dists]
    if missing:
        raise RuntimeError(f"cannot build the CASA image: {missing} not installed here")
    dest = _cache_root() / _image_key(dists)
    if (dest / "IMAGE.txt").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        venv = tmp / "venv-build"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],  # noqa: S603
                       check=True, capture_output=True)
        site = _site_packages(venv)
        for dist in dists.values():
            _link_distribution(dist, site)
        # The image ships its own CASA configuration (offline measures from casadata),
        # found on sys.path as casaconfig does in a container: no CASASITECONFIG needed.
        (site / "casasiteconfig.py").write_text(SITECONFIG_TEXT)
        (venv / "IMAGE.txt").write_text(
            "bare CASA image for the fake CANFAR service\n"
            + "".join(f"{n} {d.version}\n" for n, d in dists.items()))
        try:
            os.rename(venv, dest)
        except OSError:
            if not (dest / "IMAGE.txt").is_file():  # not another builder's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def image_python(image: Path) -> Path:
    return image / "bin" / "python3"


def container_path(image: Path) -> str:
    """PATH inside a session of this image."""
    return f"{image / 'bin'}:{SYSTEM_PATH}"
