"""The catalog: one SQLite file, composed of its connection (with migrations and events),
its records (what exists, what was produced), the stage state machine and the sources
(targets of several MOUS grouped)."""

from __future__ import annotations

from sails.catalog.connection import Connection
from sails.catalog.model import (
    STATUSES,
    Product,
    StageRow,
    check_stage,
    check_status,
    new_owner,
)
from sails.catalog.qa import QaRecords
from sails.catalog.records import Records
from sails.catalog.sources import SourceRecords
from sails.catalog.states import ALLOWED, StateMachine

__all__ = ["ALLOWED", "STATUSES", "Catalog", "Product", "StageRow", "check_stage",
           "check_status", "new_owner"]


class Catalog(SourceRecords, QaRecords, StateMachine, Records, Connection):
    """One SQLite file. Safe to open from many processes at once."""
