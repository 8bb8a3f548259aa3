"""Backend by name. Kept apart from :mod:`sails.execution.base`, which the backends import."""

from __future__ import annotations

from typing import Any

from sails.errors import ConfigError
from sails.execution.base import Backend


def get_backend(name: str, project: Any) -> Backend:
    if name == "local":
        from sails.execution.local import LocalBackend

        return LocalBackend(project)
    if name == "canfar":
        try:
            from sails.execution.canfar import CanfarBackend
        except ImportError as exc:
            raise ConfigError(f"the canfar backend is not available: {exc}") from None
        return CanfarBackend(project)
    raise ConfigError(f"unknown backend {name!r}", hint="use 'local' or 'canfar'")
