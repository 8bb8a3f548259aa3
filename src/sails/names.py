"""File, job and session names made from archive names: safe to use, and never shared.

Archive source names hold spaces, quotes, ``+``, ``*``, slashes and unicode; stages turn
them into folder, file, job and log names. Sanitising alone maps different names onto one
(``A B`` and ``A_B``; ``*`` and ``..``; two long names with one 60-character start), and two
targets would then write one products folder. So wherever sanitising changed a name, a short
hash of the raw name is appended: :func:`short_hash` is the one rule, shared by
:func:`safe_name`, the CANFAR session names and the report's page names.
"""

from __future__ import annotations

import hashlib
import re

HASH_CHARS = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_HASHED = re.compile(rf"-[0-9a-f]{{{HASH_CHARS}}}$")  # what safe_name appends


def short_hash(*parts: str) -> str:
    """A short, stable hash of ``parts`` (joined by NUL, so ``("ab", "c") != ("a", "bc")``)."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[
        :HASH_CHARS]


def safe_name(text: str, limit: int = 60) -> str:
    """``text`` as a file/job-name-safe name, at most ``limit`` characters, unique per text.

    A name that is already safe and short enough is kept as it is (so ``HOPS_370`` stays
    ``HOPS_370``); any other gets ``-<short_hash(text)>`` after its sanitised, cut form. A
    raw name that already ends like a hash is hashed too, so no kept name equals a hashed one.
    """
    cleaned = _UNSAFE.sub("_", text).strip("._-") or "x"
    if cleaned == text and len(cleaned) <= limit and not _HASHED.search(text):
        return cleaned
    room = max(1, limit - HASH_CHARS - 1)
    return f"{cleaned[:room].rstrip('._-') or 'x'}-{short_hash(text)}"


def legacy_safe_name(text: str, limit: int = 60) -> str:
    """The name older versions gave ``text`` (not unique): to find folders they made."""
    return (_UNSAFE.sub("_", text).strip("._-") or "x")[:limit]


def source_stem(source: str, arrays: list[str] | tuple[str, ...]) -> str:
    """The start of a source product's name: ``source.<name>.<arrays>`` (arrays joined by
    ``_``, e.g. ``source.Per-emb-2.12m_7m``; then ``.<line>.cube.I.pbcor.fits``,
    ``.cont.I.pbcor.fits``, or ``.<line>.feather.cube.I.pbcor.fits`` with ``_TP``)."""
    return f"source.{safe_name(source)}.{'_'.join(arrays)}"
