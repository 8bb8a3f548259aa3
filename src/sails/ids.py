"""ALMA uid forms.

The archive writes ``uid://A001/X1465/X15b``; file systems and CASA want
``uid___A001_X1465_X15b``. Both forms name the same entity; the catalog keys on the
``uid://`` form. Everything else is rejected, so a uid can never carry a path separator
or a shell metacharacter into a file name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sails.errors import UserInputError

_PART = r"[0-9a-f]+"
_URI = re.compile(rf"^uid://(A\d{{3}})/X({_PART})/X({_PART})$", re.IGNORECASE)
_FILE = re.compile(rf"^uid___(A\d{{3}})_X({_PART})_X({_PART})$", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class Uid:
    """A parsed ALMA uid (MOUS, GOUS, SOUS or ASDM/EB: they share one syntax)."""

    archive: str  # e.g. "A001" (MOUS) or "A002" (ASDM)
    x1: str
    x2: str

    @property
    def uri(self) -> str:
        return f"uid://{self.archive}/X{self.x1}/X{self.x2}"

    @property
    def fs(self) -> str:
        """File-system form, safe as one path component."""
        return f"uid___{self.archive}_X{self.x1}_X{self.x2}"

    def __str__(self) -> str:
        return self.uri


def parse_uid(text: str, what: str = "uid") -> Uid:
    """Parse either form; raise :class:`UserInputError` naming ``what`` otherwise."""
    if not isinstance(text, str):
        raise UserInputError(f"malformed {what}: {text!r} is not a string")
    s = text.strip()
    # Measurement-set names carry the EB uid with a suffix: strip the common ones.
    for suffix in (".ms", ".asdm.sdm", "_targets.ms"):
        if s.endswith(suffix) and _FILE.fullmatch(s[: -len(suffix)]):
            s = s[: -len(suffix)]
    m = _URI.fullmatch(s) or _FILE.fullmatch(s)
    if not m:
        raise UserInputError(
            f"malformed {what}: {text!r}",
            hint="expected a form like uid://A001/X1465/X15b or uid___A001_X1465_X15b",
        )
    archive, x1, x2 = m.groups()
    return Uid(archive.upper(), x1.lower(), x2.lower())


def is_uid(text: str) -> bool:
    try:
        parse_uid(text)
    except UserInputError:
        return False
    return True


def mous_uri(text: str) -> str:
    """Canonical catalog key of a MOUS given in either form."""
    return parse_uid(text, "MOUS uid").uri


def to_fs(text: str) -> str:
    return parse_uid(text).fs


def to_uri(text: str) -> str:
    return parse_uid(text).uri
