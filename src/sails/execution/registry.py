"""Backend by name. Kept apart from :mod:`sails.execution.base`, which the backends import."""

from __future__ import annotations

import importlib
from typing import Any

from sails.errors import ConfigError
from sails.execution.base import Backend
from sails.execution.names import BACKEND_HELP, BACKENDS


def get_backend(name: str, project: Any) -> Backend:
    where = BACKENDS.get(name)
    if where is None:
        raise ConfigError(f"unknown backend {name!r}", hint=f"use {BACKEND_HELP}")
    module, _, cls = where.partition(":")
    try:
        backend_cls = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise ConfigError(f"the {name} backend is not available: {exc}") from None
    return backend_cls(project)
