"""The stage state machine: the one place where stage states change.

A stage is started by one compare-and-set UPDATE that takes a lease; every change writes an
event in the same transaction; a stage whose lease expired is recoverable by anyone. Which
stage may start when comes from the stage table (:mod:`sails.pipeline`): the runnable query
is built from its prerequisites, and stage rows are created for every stage it declares.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sails.catalog.model import FINISHED, Product, StageRow, check_stage, owner_is_dead
from sails.catalog.reasons import LATE_STAGE_REASON, Block, Failure, message
from sails.errors import IllegalTransitionError, LeaseLostError, NotFoundError
from sails.ids import mous_uri
from sails.pipeline import PIPELINE, Scope, StageTable

ALLOWED: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "skipped", "blocked", "failed"}),
    "running": frozenset({"done", "failed", "skipped", "blocked", "pending"}),
    "failed": frozenset({"pending"}),
    "blocked": frozenset({"pending"}),
    "skipped": frozenset({"pending"}),
    "done": frozenset({"pending"}),
}
_CLEARED = {"error": None, "reason": None, "reason_code": None}
STAGE_TABLE_KEY = "stage_table"


def runnable_sql(table: StageTable, only: Iterable[str] | None = None
                 ) -> tuple[str, list[Any]]:
    """Pending rows whose prerequisites are finished, as one query built from ``table``
    (``only``: just these stages' clauses).

    A prerequisite at the same scope is the same row key (MOUS row, or the same target's
    row); a MOUS-scope prerequisite of a target stage is its MOUS's row; a target-scope
    prerequisite of a MOUS stage means every target row of that stage in the MOUS.
    """
    clauses: list[str] = []
    params: list[Any] = []
    finished = ", ".join("?" * len(FINISHED))
    wanted = None if only is None else set(only)
    for st in table:
        if (wanted is not None and st.name not in wanted) or st.scope == Scope.SOURCE:
            continue  # source rows live in source_stages (sails.catalog.sources)
        conds = ["s.stage = ?"]
        params.append(st.name)
        for pre_name in st.after:
            pre = table.get(pre_name)
            if pre.scope == Scope.SOURCE:  # every source of the MOUS: that row finished
                conds.append("NOT EXISTS (SELECT 1 FROM source_members m JOIN source_stages p"
                             " ON p.source_id = m.source_id JOIN sources so ON so.id ="
                             " m.source_id WHERE m.mous_id = s.mous_id AND p.stage = ?"
                             f" AND so.removed_at IS NULL AND p.status NOT IN ({finished}))")
            elif pre.scope == Scope.TARGET and st.scope == Scope.MOUS:
                conds.append("NOT EXISTS (SELECT 1 FROM stages p WHERE p.mous_id = s.mous_id"
                             f" AND p.stage = ? AND p.status NOT IN ({finished}))")
            else:
                target = "s.target" if pre.scope == st.scope else "''"
                conds.append("EXISTS (SELECT 1 FROM stages p WHERE p.mous_id = s.mous_id"
                             f" AND p.target = {target} AND p.stage = ?"
                             f" AND p.status IN ({finished}))")
            params += [pre.name, *FINISHED]
        clauses.append("(" + " AND ".join(conds) + ")")
    sql = ("SELECT s.* FROM stages s WHERE s.status = 'pending' AND ("
           + (" OR ".join(clauses) or "0") + ")")
    return sql, params


class StateMachine:
    """Stage rows and their transitions (a mixin of :class:`sails.catalog.Catalog`)."""

    # ------------------------------------------------------------------ rows per stage
    def _ensure_stages(self, con: sqlite3.Connection, mous_id: str, target: str,
                       late: bool = False) -> None:
        """Create the pending rows the stage table declares for a MOUS ('') or a target.

        ``late``: rows of a stage added to the table after the MOUS existed; one whose
        dependent stages of the MOUS have already started is created ``skipped`` (the MOUS
        is past it: e.g. a restore row for a MOUS verified before restore existed)."""
        scope = Scope.TARGET if target else Scope.MOUS
        for st in PIPELINE.at_scope(scope):
            cur = con.execute(
                "INSERT OR IGNORE INTO stages (mous_id, target, stage, updated_at)"
                " VALUES (?, ?, ?, ?)", (mous_id, target, st.name, time.time()))
            if not cur.rowcount:
                continue
            self._event(con, mous_id, target, st.name, "catalog", None, "pending", "created")
            later = PIPELINE.downstream(st.name)[1:]
            if late and later and con.execute(
                    f"SELECT 1 FROM stages WHERE mous_id = ? AND status != 'pending' AND stage"
                    f" IN ({', '.join('?' * len(later))}) LIMIT 1",
                    (mous_id, *later)).fetchone():
                why = LATE_STAGE_REASON
                con.execute("UPDATE stages SET status = 'skipped', reason = ?, updated_at = ?"
                            " WHERE mous_id = ? AND target = ? AND stage = ?",
                            (why, time.time(), mous_id, target, st.name))
                self._event(con, mous_id, target, st.name, "catalog", "pending", "skipped",
                            why)

    def _after_open(self) -> None:
        """A stage added to the table gets its rows in an existing catalog (once)."""
        if self.meta(STAGE_TABLE_KEY) == PIPELINE.fingerprint():
            return
        with self.write() as con:
            for mous_id in [r[0] for r in con.execute("SELECT mous_id FROM mous")]:
                self._ensure_stages(con, mous_id, "", late=True)
            for mous_id, target in con.execute(
                    "SELECT DISTINCT mous_id, alma_source_name FROM targets").fetchall():
                self._ensure_stages(con, mous_id, target, late=True)
            con.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                        " SET value = excluded.value", (STAGE_TABLE_KEY, PIPELINE.fingerprint()))

    # ------------------------------------------------------------------ runnable
    def _runnable_sql(self, stages: Iterable[str] | None, mous: Iterable[str] | None,
                      limit: int | None) -> tuple[str, list[Any]]:
        only = None if stages is None else [check_stage(s) for s in stages]
        sql, params = runnable_sql(PIPELINE, only)
        if mous is not None:
            ms = [mous_uri(m) for m in mous]
            sql += f" AND s.mous_id IN ({', '.join('?' * len(ms))})"
            params += ms
        sql += " ORDER BY s.id"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return sql, params

    def runnable(self, stages: Iterable[str] | None = None, mous: Iterable[str] | None = None,
                 limit: int | None = None) -> list[StageRow]:
        """Pending stages whose prerequisites are finished, oldest first."""
        sql, params = self._runnable_sql(stages, mous, limit)
        return [StageRow.from_row(r) for r in self.query(sql, params)]

    def waiting_for(self, row: StageRow) -> list[StageRow]:
        """The unfinished prerequisite rows a pending ``row`` waits for (what the runnable
        query checks, as rows a person can read)."""
        st = PIPELINE.get(row.stage)
        out = []
        for pre_name in st.after:
            pre = PIPELINE.get(pre_name)
            for r in self.stages(row.mous_id, pre_name):
                same = (r.target == row.target if pre.scope == st.scope
                        else (pre.scope == Scope.TARGET or r.target == ""))
                if same and r.status not in FINISHED:
                    out.append(r)
        return out

    # ------------------------------------------------------------------ transitions
    def _move(self, con: sqlite3.Connection, row: StageRow, to: str, actor: str,
              reason: str | None, sets: dict[str, Any], guard_owner: str | None = None) -> None:
        if to not in ALLOWED[row.status]:
            raise IllegalTransitionError(
                f"{row.label}: cannot go from {row.status} to {to}",
            )
        sets = dict(sets, status=to, updated_at=time.time())
        where = "id = ? AND status = ?"
        params: list[Any] = [row.id, row.status]
        if guard_owner is not None:
            where += " AND lease_owner = ?"
            params.append(guard_owner)
        cur = con.execute(
            f"UPDATE stages SET {', '.join(f'{k} = ?' for k in sets)} WHERE {where}",
            (*sets.values(), *params),
        )
        if cur.rowcount != 1:
            raise LeaseLostError(f"{row.label}: changed under us (no longer {row.status})")
        self._event(con, row.mous_id, row.target, row.stage, actor, row.status, to, reason)

    def _load(self, con: sqlite3.Connection, stage_id: int) -> StageRow:
        r = con.execute("SELECT * FROM stages WHERE id = ?", (stage_id,)).fetchone()
        if r is None:
            raise NotFoundError(f"no stage row {stage_id}")
        return StageRow.from_row(r)

    def _held(self, con: sqlite3.Connection, stage_id: int, owner: str) -> StageRow:
        row = self._load(con, stage_id)
        if row.status != "running" or row.lease_owner != owner:
            raise LeaseLostError(
                f"{row.label}: lease not held by {owner} (status {row.status},"
                f" owner {row.lease_owner})"
            )
        return row

    def claim(self, stage_id: int, owner: str, lease_seconds: float = 3600.0) -> StageRow | None:
        """Atomically start one pending stage; None if someone else got it first."""
        with self.write() as con:
            row = self._load(con, stage_id)
            if row.status != "pending":
                return None
            return self._claim_row(con, row, owner, lease_seconds)

    def _claim_row(self, con: sqlite3.Connection, row: StageRow, owner: str,
                   lease_seconds: float) -> StageRow | None:
        now = time.time()
        cur = con.execute(
            "UPDATE stages SET status = 'running', lease_owner = ?, lease_expires = ?,"
            " started_at = ?, finished_at = NULL, updated_at = ?, error = NULL, reason = NULL,"
            " reason_code = NULL"
            " WHERE id = ? AND status = 'pending'",
            (owner, now + lease_seconds, now, now, row.id),
        )
        if cur.rowcount != 1:
            return None
        self._event(con, row.mous_id, row.target, row.stage, owner, "pending", "running",
                    f"claimed (attempt {row.attempts + 1})")
        return self._load(con, row.id)

    def claim_next(self, owner: str, lease_seconds: float = 3600.0,
                   stages: Iterable[str] | None = None,
                   mous: Iterable[str] | None = None) -> StageRow | None:
        """Claim the oldest runnable stage (optionally among ``stages``/``mous``)."""
        sql, params = self._runnable_sql(stages, mous, 1)
        with self.write() as con:
            r = con.execute(sql, params).fetchone()
            if r is None:
                return None
            return self._claim_row(con, StageRow.from_row(r), owner, lease_seconds)

    def renew(self, stage_id: int, owner: str, lease_seconds: float = 3600.0) -> None:
        with self.write() as con:
            cur = con.execute(
                "UPDATE stages SET lease_expires = ?, updated_at = ? WHERE id = ?"
                " AND status = 'running' AND lease_owner = ?",
                (time.time() + lease_seconds, time.time(), stage_id, owner),
            )
            if cur.rowcount != 1:
                raise LeaseLostError(f"stage {stage_id}: lease not held by {owner}")

    def set_job_ref(self, stage_id: int, owner: str, job_ref: str | None) -> None:
        with self.write() as con:
            self._held(con, stage_id, owner)
            con.execute("UPDATE stages SET job_ref = ? WHERE id = ?", (job_ref, stage_id))

    def _finish_sets(self, row: StageRow) -> dict[str, Any]:
        now = time.time()
        return {
            "lease_owner": None,
            "lease_expires": None,
            "finished_at": now,
            "duration_s": (now - row.started_at) if row.started_at else None,
        }

    def complete(self, stage_id: int, owner: str, products: Iterable[Product] = (),
                 reason: str | None = None) -> StageRow:
        """running -> done, recording products in the same transaction."""
        with self.write() as con:
            row = self._held(con, stage_id, owner)
            self._record_products(con, row, products)
            self._move(con, row, "done", owner, reason or "completed",
                       self._finish_sets(row), guard_owner=owner)
            return self._load(con, stage_id)

    def add_products(self, stage_id: int, owner: str, products: Iterable[Product]) -> None:
        """Record products while still running (e.g. each finished download)."""
        with self.write() as con:
            row = self._held(con, stage_id, owner)
            self._record_products(con, row, products)

    def _record_products(self, con: sqlite3.Connection, row: StageRow,
                         products: Iterable[Product]) -> None:
        now = time.time()
        for p in products:
            size = p.bytes if p.bytes is not None else (
                Product.measure(p.path) if Path(p.path).exists() else None)
            con.execute(
                "INSERT INTO products (mous_id, target, stage, kind, path, spw, bytes, checksum,"
                " metrics, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(path) DO UPDATE SET kind = excluded.kind, target = excluded.target,"
                " stage = excluded.stage, spw = excluded.spw, bytes = excluded.bytes,"
                " checksum = excluded.checksum, metrics = excluded.metrics,"
                " created_at = excluded.created_at",
                (row.mous_id, p.target or row.target, row.stage, p.kind, str(p.path), p.spw,
                 size, p.checksum, json.dumps(p.metrics, default=str) if p.metrics else None,
                 now),
            )

    def _end(self, con: sqlite3.Connection, stage_id: int, owner: str | None, to: str,
             why: str, sets: dict[str, Any] | Callable[[StageRow], dict[str, Any]]
             ) -> StageRow:
        """Move to a final state: the lease holder (``owner``) from running, or an
        administrative caller (``owner`` None) from a state that allows it."""
        row = self._held(con, stage_id, owner) if owner else self._load(con, stage_id)
        extra = sets(row) if callable(sets) else sets
        self._move(con, row, to, owner or "sails", why, self._finish_sets(row) | extra,
                   guard_owner=owner if row.status == "running" else None)
        return self._load(con, stage_id)

    def fail(self, stage_id: int, owner: str | None, error: str,
             code: Failure | None = None) -> StageRow:
        """-> failed with the error text (and ``code``, e.g. disk_full); attempts + 1."""
        kind = Failure(code).value if code else None
        with self.write() as con:
            return self._end(con, stage_id, owner, "failed", error,
                             lambda row: {"error": error, "attempts": row.attempts + 1,
                                          "reason_code": kind})

    def skip(self, stage_id: int, owner: str | None, reason: str) -> StageRow:
        with self.write() as con:
            return self._end(con, stage_id, owner, "skipped", reason, {"reason": reason})

    def block(self, stage_id: int, owner: str | None, code: Block, detail: str | None = None,
              con: sqlite3.Connection | None = None) -> StageRow:
        """-> blocked with ``code`` and its message; ``con`` joins the caller's transaction
        (e.g. ingest)."""
        code = Block(code)
        reason = message(code, detail)
        with self._tx(con) as con:
            return self._end(con, stage_id, owner, "blocked", reason,
                             {"reason": reason, "reason_code": code.value})

    def unblock(self, stage_id: int, reason: str, *, only_code: Block | None = None,
                actor: str = "sails", con: sqlite3.Connection | None = None) -> StageRow | None:
        """blocked -> pending (logging ``reason``); None when the stage is not blocked, or
        (with ``only_code``) was blocked for another reason, so a person's block stays."""
        with self._tx(con) as con:
            row = self._load(con, stage_id)
            if row.status != "blocked" or (only_code is not None
                                           and row.reason_code != Block(only_code).value):
                return None
            self._move(con, row, "pending", actor, reason, _CLEARED)
            return self._load(con, stage_id)

    def record_outcome(self, stage_id: int, owner: str, status: str,
                       products: Iterable[Product] = (), reason: str | None = None,
                       code: Block | None = None) -> StageRow:
        """Finish a stage the caller holds as its outcome says (done, skipped or blocked),
        recording its products in the same transaction."""
        if status == "done":
            return self.complete(stage_id, owner, products, reason)
        with self.write() as con:
            row = self._held(con, stage_id, owner)
            self._record_products(con, row, products)
            if status == "skipped":
                why = reason or "skipped"
                return self._end(con, stage_id, owner, "skipped", why, {"reason": why})
            if status == "blocked":
                code = Block(code or Block.STAGE)
                why = message(code, reason)
                return self._end(con, stage_id, owner, "blocked", why,
                                 {"reason": why, "reason_code": code.value})
        raise IllegalTransitionError(f"{row.label}: no outcome {status!r}")

    def release(self, stage_id: int, owner: str, reason: str = "released") -> StageRow:
        """running -> pending without counting an attempt (e.g. cancelled by the user)."""
        with self.write() as con:
            row = self._held(con, stage_id, owner)
            self._move(con, row, "pending", owner, reason,
                       {"lease_owner": None, "lease_expires": None}, guard_owner=owner)
            return self._load(con, stage_id)

    def recover_expired(self, actor: str = "recovery", now: float | None = None) -> list[StageRow]:
        """Running stages whose lease expired go back to pending (attempts + 1)."""
        now = time.time() if now is None else now
        with self.write() as con:
            rows = [StageRow.from_row(r) for r in con.execute(
                "SELECT * FROM stages WHERE status = 'running' AND lease_expires < ?", (now,))]
            for row in rows:
                self._move(con, row, "pending", actor,
                           f"lease of {row.lease_owner} expired; recovered",
                           {"lease_owner": None, "lease_expires": None,
                            "attempts": row.attempts + 1})
        return rows

    def requeue(self, stage_id: int, actor: str, reason: str) -> StageRow:
        """One failed/blocked/skipped stage back to pending (e.g. a transient-failure retry)."""
        with self.write() as con:
            row = self._load(con, stage_id)
            self._move(con, row, "pending", actor, reason, _CLEARED)
            return self._load(con, stage_id)

    def recover_dead_owners(self, actor: str = "recovery") -> list[StageRow]:
        """Running stages whose owner was a process on this host that no longer exists.

        Owners name their host, pid and pid space (see :func:`new_owner`); a lease held by a
        dead process of this host and pid space is recovered at once instead of waiting for
        it to expire. Any other (another container or boot, an older owner format) waits for
        its lease to expire.
        """
        dead = [row for row in self.stages(status="running")
                if owner_is_dead(row.lease_owner or "")]
        out = []
        with self.write() as con:
            for row in dead:
                try:
                    self._move(con, row, "pending", actor,
                               f"owner {row.lease_owner} is no longer running; recovered",
                               {"lease_owner": None, "lease_expires": None,
                                "attempts": row.attempts + 1},
                               guard_owner=row.lease_owner)
                except LeaseLostError:
                    continue  # someone else recovered or finished it meanwhile
                out.append(self._load(con, row.id))
        return out

    def retry(self, mous_id: str, stage: str | None = None, actor: str = "user") -> list[StageRow]:
        """failed/blocked (and skipped, when named) stages of a MOUS back to pending."""
        mous_id = mous_uri(mous_id)
        self.mous(mous_id)
        from_states = ("failed", "blocked") if stage is None else ("failed", "blocked", "skipped")
        out = []
        with self.write() as con:
            sql = (f"SELECT * FROM stages WHERE mous_id = ?"
                   f" AND status IN ({', '.join('?' * len(from_states))})")
            params: list[Any] = [mous_id, *from_states]
            if stage:
                sql += " AND stage = ?"
                params.append(check_stage(stage))
            for r in con.execute(sql, params).fetchall():
                row = StageRow.from_row(r)
                self._move(con, row, "pending", actor, "retry requested", _CLEARED)
                out.append(self._load(con, row.id))
        return out

    def reset(self, mous_id: str, stage: str, actor: str = "user",
              force: bool = False, target: str | None = None,
              reason: str | None = None) -> list[StageRow]:
        """A stage and everything downstream of it back to pending; their products forgotten.

        A running stage is only reset with ``force`` (its lease holder may still be alive).
        ``target`` limits the target-scope rows to that target (downstream MOUS rows follow);
        ``reason`` replaces the default event text.
        """
        mous_id = mous_uri(mous_id)
        self.mous(mous_id)
        check_stage(stage)
        downstream = PIPELINE.downstream(stage)
        out = []
        with self.write() as con:
            rows = [StageRow.from_row(r) for r in con.execute(
                f"SELECT * FROM stages WHERE mous_id = ? AND stage IN"
                f" ({', '.join('?' * len(downstream))}) ORDER BY id",
                (mous_id, *downstream))]
            if target is not None:
                rows = [r for r in rows if r.target in ("", target)]
            running = [r for r in rows if r.status == "running"]
            if running and not force:
                raise IllegalTransitionError(
                    f"{running[0].label} is running (lease held by {running[0].lease_owner})",
                    hint="wait for it, or pass --force if that process is dead",
                )
            for row in rows:
                if row.status == "pending":
                    continue
                self._move(con, row, "pending", actor, reason or f"reset of {stage} requested",
                           _CLEARED | {"lease_owner": None, "lease_expires": None,
                                       "attempts": 0})
                con.execute("DELETE FROM products WHERE mous_id = ? AND stage = ? AND target = ?",
                            (mous_id, row.stage, row.target))
                out.append(self._load(con, row.id))
        return out

