"""Safe tarball extraction: all-or-nothing, never outside the target folder.

Every member is checked before anything is written: absolute names, ``..`` components,
links pointing outside the archive's own tree, devices and FIFOs reject the whole tarball.
A symbolic link is kept only when it names a regular file of the same tarball: a link to a
directory (or to nothing) is dropped, since a later move of it (``organize``) to a shallower
place would make the same relative path point elsewhere, e.g. outside the project.
Extraction goes into a temporary sibling folder which is renamed into place only when
complete; a truncated tarball is reported as :class:`TruncatedArchiveError` so the caller
can delete and re-fetch it.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import tarfile
from pathlib import Path

from sails.errors import DownloadError


class UnsafeArchiveError(DownloadError):
    """A tarball that would write outside its folder or create special files."""


class TruncatedArchiveError(DownloadError):
    """A tarball that ends early (interrupted transfer or damaged file)."""


def _member_problem(m: tarfile.TarInfo) -> str | None:
    name = m.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or ".." in name.split("/"):
        return "path climbs out with '..'"
    if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
        return "device or FIFO"
    if m.issym() or m.islnk():
        link = m.linkname
        if link.startswith("/") or not link:
            return f"link to absolute path {link!r}"
        base = posixpath.dirname(norm) if m.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, link))
        if resolved == ".." or resolved.startswith("../"):
            return f"link pointing outside ({link!r})"
    if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
        return f"unsupported member type {m.type!r}"
    return None


def _links_to_file(m: tarfile.TarInfo, by_name: dict[str, tarfile.TarInfo]) -> bool:
    """Whether symlink ``m`` ends (through at most a few other links) at a regular member."""
    for _ in range(8):
        target = posixpath.normpath(posixpath.join(posixpath.dirname(
            posixpath.normpath(m.name)), m.linkname))
        nxt = by_name.get(target)
        if nxt is None or not (nxt.isreg() or nxt.issym()):
            return False
        if nxt.isreg():
            return True
        m = nxt
    return False


def keep_members(members: list[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    """The members to extract: all but symlinks that do not name a regular file member."""
    by_name = {posixpath.normpath(m.name): m for m in members}
    return [m for m in members if not m.issym() or _links_to_file(m, by_name)]


def check_members(tf: tarfile.TarFile, source: Path) -> list[tarfile.TarInfo]:
    """The members to extract, after checking each; raises on the first unsafe or
    truncated one (see :func:`keep_members` for the links left out)."""
    try:
        members = tf.getmembers()
    except (tarfile.ReadError, EOFError) as exc:
        raise TruncatedArchiveError(f"{source.name} is truncated or damaged ({exc})") from None
    # A tarball cut exactly at a member boundary reads as complete: insist on the
    # end-of-archive marker (a zero block) right after the last member.
    try:
        tf.fileobj.seek(tf.offset)
        marker = tf.fileobj.read(512)
    except (OSError, EOFError, tarfile.ReadError):
        marker = b""
    if len(marker) < 512 or marker.count(0) != 512:
        raise TruncatedArchiveError(
            f"{source.name} is truncated (no end-of-archive marker after "
            f"{len(members)} members)")
    bad = [(m.name, p) for m in members if (p := _member_problem(m))]
    if bad:
        shown = "; ".join(f"{n!r}: {p}" for n, p in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise UnsafeArchiveError(
            f"refusing to extract {source.name}: {shown}{more}",
            hint="the tarball is unsafe; nothing was written",
        )
    return keep_members(members)


def safe_extract(tar_path: Path, dest: Path) -> Path:
    """Extract ``tar_path`` into ``dest`` (created; replaced if present). Returns ``dest``."""
    tmp = dest.with_name(f".{dest.name}.extracting")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        with tarfile.open(tar_path, "r:*") as tf:
            members = check_members(tf, tar_path)
            tmp.mkdir(parents=True)
            try:
                tf.extractall(tmp, members=members, filter="data")
            except tarfile.FilterError as exc:
                raise UnsafeArchiveError(f"refusing to extract {tar_path.name}: {exc}",
                                         hint="the tarball is unsafe") from None
            except (tarfile.ReadError, EOFError) as exc:
                raise TruncatedArchiveError(
                    f"{tar_path.name} is truncated or damaged ({exc})") from None
    except tarfile.ReadError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TruncatedArchiveError(f"{tar_path.name} is not a readable tarball ({exc})") from None
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise DownloadError(f"disk full while extracting {tar_path.name} into {dest.parent}",
                                hint="free space, then retry (the tarball is kept)") from None
        raise DownloadError(f"cannot extract {tar_path.name}: {exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest
