"""One module per stage: builds the job for a dataset, reads back its manifest, names products.

Each stage module (named in the stage table, :mod:`sails.pipeline`) exposes
``run(ctx: StageContext) -> Outcome``. Modules are imported when their stage runs, so a
missing optional part never breaks the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from sails.errors import SailsError
from sails.pipeline import PIPELINE
from sails.stages.base import Outcome, StageContext


def stage_function(stage: str) -> Callable[[StageContext], Outcome]:
    try:
        module_name = PIPELINE.get(stage).module
    except KeyError:
        raise SailsError(f"unknown stage {stage!r}") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise SailsError(f"stage {stage!r} is not implemented in this version") from None
        raise
    return module.run


__all__ = ["Outcome", "StageContext", "stage_function"]
