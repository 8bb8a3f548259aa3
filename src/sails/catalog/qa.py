"""Human QA verdicts (events of kind ``verdict``) and the override fingerprint of stage
rows. A verdict changes no stage state; ``--redo`` goes through the state machine's reset.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from sails.errors import UserInputError
from sails.ids import mous_uri

VERDICT_KIND = "verdict"
VERDICTS = ("pass", "fail", "redo")


class QaRecords:
    """Verdicts and override fingerprints (a mixin of :class:`sails.catalog.Catalog`)."""

    def _kind_event(self, con: sqlite3.Connection, mous_id: str, target: str,
                    stage: str | None, actor: str, reason: str, kind: str,
                    data: dict[str, Any]) -> None:
        con.execute(
            "INSERT INTO events (at, mous_id, target, stage, actor, from_status, to_status,"
            " reason, kind, data) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?)",
            (time.time(), mous_id, target, stage, actor, reason, kind, json.dumps(data)))

    def record_verdict(self, mous_id: str, target: str, verdict: str, note: str, actor: str,
                       stage: str | None = None) -> None:
        """Record who decided what about a target ('' : the whole MOUS), and why."""
        if verdict not in VERDICTS:
            raise UserInputError(f"unknown verdict {verdict!r}",
                                 hint=f"choose one of: {', '.join(VERDICTS)}")
        mous_id = mous_uri(mous_id)
        self.mous(mous_id)
        what = f"redo {stage}" if verdict == "redo" else verdict
        reason = f"QA verdict: {what}" + (f" - {note}" if note else "")
        with self.write() as con:
            self._kind_event(con, mous_id, target, stage, actor, reason, VERDICT_KIND,
                             {"verdict": verdict, "note": note, "stage": stage})

    def verdicts(self, mous_id: str | None = None) -> list[dict[str, Any]]:
        """Every verdict, oldest first: mous_id, target, verdict, note, stage, actor, at."""
        sql = "SELECT * FROM events WHERE kind = ?"
        params: list[Any] = [VERDICT_KIND]
        if mous_id:
            sql += " AND mous_id = ?"
            params.append(mous_uri(mous_id))
        return [verdict_of(dict(r)) for r in self.query(sql + " ORDER BY id", params)]

    def set_override_fp(self, stage_id: int, owner: str, fp: str | None) -> None:
        """The overrides fingerprint a running stage works with (compared at `sails run`)."""
        with self.write() as con:
            self._held(con, stage_id, owner)
            con.execute("UPDATE stages SET override_fp = ? WHERE id = ?", (fp, stage_id))


def verdict_of(event: dict[str, Any]) -> dict[str, Any]:
    """A verdict event as a plain record."""
    data = json.loads(event.get("data") or "{}")
    return {"mous_id": event["mous_id"], "target": event.get("target") or "",
            "verdict": data.get("verdict"), "note": data.get("note") or "",
            "stage": data.get("stage"), "actor": event["actor"], "at": event["at"]}


def latest_verdicts(verdicts: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(mous_id, target) -> the newest verdict (a MOUS-wide one covers its targets unless
    a target has its own newer one: callers look up (mous, target) then (mous, ''))."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for v in verdicts:
        out[(v["mous_id"], v["target"])] = v
    return out
