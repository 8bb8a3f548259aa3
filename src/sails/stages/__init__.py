"""One module per stage: builds the job for a dataset, reads back its manifest, names products.

Each stage module exposes ``run(ctx: StageContext) -> Outcome``. Stage modules are imported
lazily so a missing optional part never breaks the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from sails.errors import SailsError
from sails.stages.base import Outcome, StageContext

STAGE_MODULES = {
    "download": "sails.stages.download",
    "verify": "sails.stages.verify",
    "split": "sails.stages.split",
    "selfcal": "sails.stages.selfcal",
    "image": "sails.stages.image",
    "cleanup": "sails.stages.cleanup",
}


def stage_function(stage: str) -> Callable[[StageContext], Outcome]:
    try:
        module = importlib.import_module(STAGE_MODULES[stage])
    except KeyError:
        raise SailsError(f"unknown stage {stage!r}") from None
    except ModuleNotFoundError as exc:
        if exc.name == STAGE_MODULES[stage]:
            raise SailsError(f"stage {stage!r} is not implemented in this version") from None
        raise
    return module.run


__all__ = ["Outcome", "StageContext", "stage_function", "STAGE_MODULES"]
