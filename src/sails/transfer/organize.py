"""Move what a delivery contains into the project layout and describe it as products.

* calibrated measurement sets (``*.ms`` folders)  -> ``datasets/<mous_fs>/<name>.ms``
* ``weblog_restore`` folders                      -> ``SRDP_weblogs/<mous_fs>/``
* raw ASDMs (``*.asdm.sdm`` folders)              -> ``datasets_raw/<mous_fs>/raw/<name>``
* a raw delivery's ``script/``, ``calibration/``, ``qa/`` and ``log/`` files
                                                  -> ``datasets_raw/<mous_fs>/<path>``
  (the layout ALMA's restore scripts expect; the restore stage reads it there)
* any other file                                  -> ``datasets/<mous_fs>/archive/<path>``

Paths inside archive tarballs start with ``<project>/science_goal.*/group.*/member.*/``;
that prefix is dropped. An existing destination is replaced (a re-run after a crash).
Symbolic links are never moved or kept (a relative link moved to a shallower place points
somewhere else, perhaps outside the project).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sails.catalog import Product

# Folders of an archive delivery that belong with the raw data (the auxiliary tarball).
DELIVERY_DIRS = ("script", "calibration", "qa", "log")


@dataclass
class Layout:
    """Destinations for one MOUS."""

    datasets: Path  # datasets/<mous_fs>
    weblogs: Path  # SRDP_weblogs/<mous_fs>
    raw: Path  # datasets_raw/<mous_fs>
    used: set[Path] = field(default_factory=set)

    @property
    def archive(self) -> Path:
        return self.datasets / "archive"


def _strip_prefix(rel: Path) -> Path:
    parts = rel.parts
    for i, p in enumerate(parts):
        if p.startswith("member.uid___"):
            return Path(*parts[i + 1:]) if i + 1 < len(parts) else Path(p)
    return rel


def place(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing ``dst``; copy-then-rename across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        aside = dst.with_name(f".{dst.name}.replaced")
        if aside.exists():
            shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
        os.replace(dst, aside)
        shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # different file systems: copy, then rename
            raise
        tmp = dst.with_name(f".{dst.name}.copying")
        if tmp.exists():  # left by a crash during an earlier copy
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        if src.is_dir():
            shutil.copytree(src, tmp, symlinks=True)
            os.replace(tmp, dst)
            shutil.rmtree(src)
        else:
            shutil.copy2(src, tmp)
            os.replace(tmp, dst)
            src.unlink()


def _unique(layout: Layout, dst: Path) -> Path:
    n = 2
    out = dst
    while out in layout.used:
        out = dst.with_name(f"{dst.name}_{n}")
        n += 1
    layout.used.add(out)
    return out


def organize(staging: Path, layout: Layout,
             moved: dict[Path, Product] | None = None) -> list[Product]:
    """Move the recognised content of ``staging`` into ``layout``; return the products.

    ``moved``, if given, receives staged path -> product for everything moved, so a caller
    can tell which product a staged file ended up in.
    """
    products: list[Product] = []
    moved = {} if moved is None else moved
    for root, dirs, files in os.walk(staging, topdown=True):
        rootp = Path(root)
        for d in sorted(dirs):
            src = rootp / d
            if src.is_symlink():  # os.walk lists links to folders here: never follow them
                dirs.remove(d)
                continue
            if d == "weblog_restore":
                dst, kind = _unique(layout, layout.weblogs), "weblog"
            elif d.endswith(".ms"):
                dst, kind = _unique(layout, layout.datasets / d), "ms"
            elif d.endswith(".asdm.sdm"):
                dst, kind = _unique(layout, layout.raw / "raw" / d), "raw_asdm"
            else:
                continue
            dirs.remove(d)
            place(src, dst)
            products.append(Product(kind=kind, path=str(dst), bytes=Product.measure(dst)))
            moved[src] = products[-1]
        for f in sorted(files):
            src = rootp / f
            if src.is_symlink() or f.endswith(".part"):
                continue
            rel = _strip_prefix(src.relative_to(staging))
            base = layout.raw if len(rel.parts) > 1 and rel.parts[0] in DELIVERY_DIRS \
                else layout.archive
            dst = _unique(layout, base / rel)
            place(src, dst)
            products.append(Product(kind="file", path=str(dst), bytes=dst.stat().st_size))
            moved[src] = products[-1]
    return products


def product_for(staged: Path, moved: dict[Path, Product]) -> Product | None:
    """The product a staged file was moved into (itself, or the folder holding it)."""
    for p in (staged, *staged.parents):
        if p in moved:
            return moved[p]
    return None
