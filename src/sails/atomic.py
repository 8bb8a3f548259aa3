"""Files a reader never sees half-written: write a temporary file beside, then ``os.replace``.

A crash, a full disk or a second process leaves either the old file or the new one, never a
torn one (a browser on the report, the catalog reading a job's result, a job reading its
JSON). Standard library only: job-side code (:mod:`sails.casa`, shipped to platform jobs by
:mod:`sails.execution.runtime`) uses it too.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_beside(path: Path, suffix: str = "") -> Path:
    """A hidden name beside ``path``, unique to this process and thread (``suffix`` last)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp{suffix}")


@contextmanager
def replacing(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one rename, on an
    error it is removed. ``suffix`` keeps an extension writers look at (``.png``)."""
    path = Path(path)
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; return the path."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], data: Any, **dumps_kw: Any) -> Path:
    """``json.dumps(data, **dumps_kw)`` written to ``path`` atomically; return the path."""
    return write_text_atomic(path, json.dumps(data, **dumps_kw))
