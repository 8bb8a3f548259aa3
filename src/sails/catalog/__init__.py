"""The central SQLite catalog: what exists, where each dataset stands, what was produced."""

from sails.catalog.db import Catalog
from sails.catalog.model import STATUSES, Product, StageRow, check_stage, new_owner
from sails.catalog.reasons import Block, Failure
from sails.catalog.schema import SCHEMA_VERSION

__all__ = [
    "Block",
    "Failure",
    "Catalog",
    "Product",
    "StageRow",
    "check_stage",
    "new_owner",
    "STATUSES",
    "SCHEMA_VERSION",
]
