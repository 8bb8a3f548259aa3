"""Path mapping between this machine's mount and the platform's view of the project space.

On CANFAR the orchestrator sees the project through a mount (e.g. ``/mnt/arc/projects/x`` over
sshfs) while jobs see ``/arc/projects/x``. ``[platform] vm_prefix``/``platform_prefix`` in
``sails.toml`` say how one maps onto the other; every path handed to a job goes through
:func:`to_platform_path` and every path a job hands back through :func:`to_vm_path`.
Prefixes match whole path components (``/mnt/arc2`` is not under ``/mnt/arc``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from sails.casa.contract import map_paths
from sails.config import Platform
from sails.errors import ConfigError

JOB_PATH_KEYS = ("output_dir", "log_path", "cwd")


def _swap(path: str | os.PathLike, src: str, dst: str) -> str | None:
    """``path`` with the leading ``src`` components replaced by ``dst``; None if not under."""
    p = PurePosixPath(os.fspath(path))
    s = PurePosixPath(src)
    if not p.is_absolute():
        return None
    if p == s:
        return str(PurePosixPath(dst))
    try:
        rel = p.relative_to(s)
    except ValueError:
        return None
    return str(PurePosixPath(dst) / rel)


def _mapped(platform: Platform) -> bool:
    return bool(platform.vm_prefix or platform.platform_prefix)


def to_platform_path(path: str | os.PathLike, platform: Platform) -> str:
    """How a job on the platform names ``path`` (a path on this machine).

    Raises ConfigError for a path outside ``vm_prefix``: a job could never see it.
    """
    if not _mapped(platform):
        return os.fspath(path)
    out = _swap(path, platform.vm_prefix, platform.platform_prefix)
    if out is None:
        raise ConfigError(
            f"{os.fspath(path)} is outside [platform] vm_prefix {platform.vm_prefix}: "
            "a platform job cannot see it",
            hint="keep the project space (and every path jobs use) under vm_prefix",
        )
    return out


def to_vm_path(path: str | os.PathLike, platform: Platform) -> str:
    """How this machine names ``path`` (a path a job reported); unchanged if not mapped."""
    if not _mapped(platform):
        return os.fspath(path)
    out = _swap(path, platform.platform_prefix, platform.vm_prefix)
    return os.fspath(path) if out is None else out


def _map_tree(obj: Any, src: str, dst: str) -> Any:
    return map_paths(obj, lambda path: _swap(path, src, dst) or path)


def tree_to_platform(obj: Any, platform: Platform) -> Any:
    """Every absolute path string under ``vm_prefix`` inside ``obj``, mapped for a job.

    Other strings (source names, relative names, paths elsewhere) are left as they are.
    """
    if not _mapped(platform):
        return obj
    return _map_tree(obj, platform.vm_prefix, platform.platform_prefix)


def tree_to_vm(obj: Any, platform: Platform) -> Any:
    """Every absolute path string under ``platform_prefix`` in ``obj`` (e.g. a manifest)."""
    if not _mapped(platform):
        return obj
    return _map_tree(obj, platform.platform_prefix, platform.vm_prefix)


def job_payload_for_platform(payload: dict[str, Any], platform: Platform) -> dict[str, Any]:
    """The job JSON as the platform job must read it.

    ``output_dir``, ``log_path`` and ``cwd`` must be visible to the job (ConfigError
    otherwise); absolute paths under the project inside step args are mapped too.
    """
    out = tree_to_platform(payload, platform)
    for key in JOB_PATH_KEYS:
        value = payload.get(key)
        if value:
            out[key] = to_platform_path(value, platform)
    return out


def vm_mapper(platform: Platform) -> Callable[[str], str] | None:
    """``map_path`` for :func:`sails.casa.contract.read_manifest`: platform -> this machine."""
    if not _mapped(platform):
        return None
    return lambda path: to_vm_path(path, platform)


