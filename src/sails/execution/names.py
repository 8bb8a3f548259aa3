"""The backend names, in one place: config, ``--backend`` options and the registry read them.

Standard library and :mod:`sails.errors` only (the config imports it).
"""

from __future__ import annotations

from sails.errors import UserInputError

# name -> "module:Class" of the backend (imported only when chosen).
BACKENDS: dict[str, str] = {
    "local": "sails.execution.local:LocalBackend",
    "canfar": "sails.execution.canfar:CanfarBackend",
    "slurm": "sails.execution.slurm:SlurmBackend",
}
BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)
BACKEND_HELP = ", ".join(BACKEND_NAMES[:-1]) + " or " + BACKEND_NAMES[-1]


def check_backend(name: str | None) -> str | None:
    """``name`` if it is a backend (None passes: the configured one is used)."""
    if name is not None and name not in BACKENDS:
        raise UserInputError(f"unknown backend {name!r}", hint=f"use {BACKEND_HELP}")
    return name
