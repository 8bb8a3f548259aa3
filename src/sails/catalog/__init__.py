"""The central SQLite catalog: what exists, where each dataset stands, what was produced."""

from sails.catalog.db import Catalog, Product, StageRow, new_owner
from sails.catalog.schema import MOUS_STAGES, SCHEMA_VERSION, STAGES, STATUSES, TARGET_STAGES

__all__ = [
    "Catalog",
    "Product",
    "StageRow",
    "new_owner",
    "MOUS_STAGES",
    "TARGET_STAGES",
    "STAGES",
    "STATUSES",
    "SCHEMA_VERSION",
]
