"""Catalog sources: the grouping of :mod:`sails.sources` stored, with why it changed.

A regroup reads every target's ObsCore metadata, groups it with the project's rules and
compares the result with the stored sources. A stored source keeps its row (and name) as
long as it shares members with a new group; a changed membership is written to the
source's ``change_reason`` ("members changed: +uid://...") and to an event of kind
``source`` on each MOUS that joined or left, so the catalog always says why a source (and
any stage of it) opened again. Everything happens in one write transaction; a dry run
computes the same changes and rolls them back.

Source-scope stages (rows of the stage table with ``Scope.SOURCE``) get one row per source
of more than one member in ``source_stages``, carrying the membership fingerprint it stands
for: when the membership changes the row goes back to pending with the change as its
reason; a source left with one member (nothing to combine) or none skips it. Which rows may
start is :meth:`SourceRecords.source_runnable` (every member's prerequisite rows finished).
Their transitions mirror the MOUS rows' (:mod:`sails.catalog.states`): an atomic claim
with a lease, renewals, a final state recorded with its products (``source_products``,
keeping the members each came from) and an event, recovery of expired or dead leases.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field

from sails.catalog.model import FINISHED, LeasedRow, Product, owner_is_dead
from sails.errors import IllegalTransitionError, LeaseLostError, NotFoundError
from sails.ids import mous_uri
from sails.pipeline import PIPELINE, Scope, StageTable
from sails.sources import Member, Rules, Source, Window, group

SOURCE_EVENT = "source"  # events.kind of membership changes and source-stage rows
SOURCE_STAGE_TABLE_KEY = "source_stage_table"  # meta: the source stages rows exist for
NOTHING_TO_COMBINE = "one member left: nothing to combine"


@dataclass(frozen=True, kw_only=True)
class SourceStageRow(LeasedRow):
    """One row of ``source_stages`` with its source's name. ``mous_id`` is '' and ``target``
    the source's name, as in the row's events, so code that prints stage rows prints it."""

    source_id: int
    name: str
    members_fp: str

    @property
    def mous_id(self) -> str:
        return ""

    @property
    def target(self) -> str:
        return self.name

    @property
    def label(self) -> str:
        return f"source {self.name} {self.stage}"


SOURCE_ROW_SQL = ("SELECT ss.*, s.name FROM source_stages ss JOIN sources s"
                  " ON s.id = ss.source_id")


@dataclass
class SourceChange:
    """What a regroup did to one source."""

    name: str
    kind: str  # "new", "members", "removed", "details"
    added: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict:
        return {"source": self.name, "kind": self.kind, "reason": self.reason,
                "added": [list(k) for k in self.added],
                "removed": [list(k) for k in self.removed]}


@dataclass
class Regrouped:
    """A regroup's result: each source under its stored name, and what changed."""

    sources: list[tuple[str, Source]]
    changes: list[SourceChange]


class _DryRun(Exception):
    """Raised inside the write transaction to roll a dry run back."""


def _member_text(keys: list[tuple[str, str]], sign: str) -> list[str]:
    return [f"{sign}{m} ({t})" for m, t in keys]


class SourceRecords:
    """Sources and their members (a mixin of :class:`sails.catalog.Catalog`)."""

    # ------------------------------------------------------------------ grouping input
    def source_members_input(self) -> list[Member]:
        """One :class:`Member` per (MOUS, target name), from the targets and MOUS rows."""
        rows = self.query(  # type: ignore[attr-defined]
            "SELECT t.mous_id, t.alma_source_name AS target, t.ra, t.dec, t.ang_res_arcsec,"
            " t.fov_arcsec,"
            " t.is_mosaic, t.spw_id, t.band_list, t.min_freq_ghz, t.max_freq_ghz,"
            " m.group_ous_uid, m.antenna_arrays, m.project_code"
            " FROM targets t JOIN mous m ON m.mous_id = t.mous_id"
            " ORDER BY t.mous_id, t.alma_source_name, t.spw_id, t.obs_id")
        acc: dict[tuple[str, str], dict] = {}
        for r in rows:
            a = acc.setdefault((r["mous_id"], r["target"]), {
                "ra": r["ra"], "dec": r["dec"], "res": r["ang_res_arcsec"], "mosaic": False,
                "fov": r["fov_arcsec"],
                "group": r["group_ous_uid"], "arrays": r["antenna_arrays"],
                "project": r["project_code"], "windows": {}})
            if a["ra"] is None and r["ra"] is not None:
                a["ra"], a["dec"] = r["ra"], r["dec"]
            if r["ang_res_arcsec"] is not None and (a["res"] is None
                                                    or r["ang_res_arcsec"] < a["res"]):
                a["res"] = r["ang_res_arcsec"]
            a["mosaic"] = a["mosaic"] or bool(r["is_mosaic"])
            if r["fov_arcsec"] is not None:
                a["fov"] = max(a["fov"] or 0.0, r["fov_arcsec"])
            if r["min_freq_ghz"] is not None and r["max_freq_ghz"] is not None:
                w = Window(r["spw_id"], r["band_list"], r["min_freq_ghz"], r["max_freq_ghz"])
                a["windows"].setdefault((w.spw, w.min_ghz, w.max_ghz), w)
        return [Member(mous_id=m, target=t, ra=a["ra"], dec=a["dec"], group_ous=a["group"],
                       antenna_arrays=a["arrays"], ang_res_arcsec=a["res"], fov_arcsec=a["fov"],
                       is_mosaic=a["mosaic"], project=a["project"],
                       windows=tuple(a["windows"].values()))
                for (m, t), a in acc.items()]

    # ------------------------------------------------------------------ regroup
    def regroup_sources(self, rules: Rules | None = None, *, dry_run: bool = False,
                        actor: str = "sails") -> Regrouped:
        """Group the catalog's targets and store the sources; return them (under their
        stored names) and the changes. A dry run returns the same and writes nothing."""
        groups = group(self.source_members_input(), rules or Rules())
        names: dict[int, str] = {}
        changes: list[SourceChange] = []
        try:
            with self.write() as con:  # type: ignore[attr-defined]
                changes = self._store_sources(con, groups, actor, names)
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass
        return Regrouped([(names[i], g) for i, g in enumerate(groups)], changes)

    def _store_sources(self, con: sqlite3.Connection, groups: list[Source], actor: str,
                       names: dict[int, str]) -> list[SourceChange]:
        now = time.time()
        old: dict[int, dict] = {r["id"]: dict(r) for r in con.execute("SELECT * FROM sources")}
        old_keys: dict[int, set[tuple[str, str]]] = {i: set() for i in old}
        for r in con.execute("SELECT source_id, mous_id, target FROM source_members"):
            old_keys[r["source_id"]].add((r["mous_id"], r["target"]))
        # Match each new group to the stored source sharing most members (each used once;
        # ties: the same name, the larger group, then the group listed first).
        owner = {k: sid for sid, keys in old_keys.items() for k in keys}
        pairs = []
        for gi, g in enumerate(groups):
            shared = Counter(owner[k] for k in g.keys if k in owner)
            pairs += [(-n, g.name != old[sid]["name"], -len(g.keys), gi, sid)
                      for sid, n in shared.items()]
        pairs.sort()
        match: dict[int, int] = {}
        used: set[int] = set()
        for *_rank, gi, sid in pairs:
            if gi not in match and sid not in used:
                match[gi] = sid
                used.add(sid)
        by_name = {r["name"]: sid for sid, r in old.items()}
        for gi, g in enumerate(groups):  # a returning name revives its removed row
            sid = by_name.get(g.name)
            if gi not in match and sid is not None and sid not in used \
                    and old[sid]["removed_at"] is not None:
                match[gi] = sid
                used.add(sid)
        changes: list[SourceChange] = []
        for sid in old:  # sources no group continues
            if sid not in used and old[sid]["removed_at"] is None:
                gone = sorted(old_keys[sid])
                reason = "no members left: " + ", ".join(_member_text(gone, "-"))
                con.execute("UPDATE sources SET removed_at = ?, change_reason = ?,"
                            " changed_at = ?, updated_at = ?, members_fp = ? WHERE id = ?",
                            (now, reason, now, now, "", sid))
                con.execute("DELETE FROM source_members WHERE source_id = ?", (sid,))
                self._sync_source_stages(con, sid, old[sid]["name"], "", 0, True, reason,
                                         actor)
                changes.append(SourceChange(old[sid]["name"], "removed", removed=gone,
                                            reason=reason))
        taken = {r["name"] for r in old.values()}  # names stay unique, removed rows too
        # Clear the members that left first: the (mous, target) key is unique across
        # sources. Members that stay keep their rows (and when they joined).
        for gi, g in enumerate(groups):
            sid = match.get(gi)
            for m, t in sorted(old_keys[sid] - g.keys) if sid is not None else ():
                con.execute("DELETE FROM source_members WHERE source_id = ? AND mous_id = ?"
                            " AND target = ?", (sid, m, t))
        for gi, g in enumerate(groups):
            sid = match.get(gi)
            if sid is None:
                changes.append(self._new_source(con, g, taken, now, actor))
                names[gi] = changes[-1].name
            else:
                names[gi] = old[sid]["name"]
                ch = self._update_source(con, sid, old[sid], old_keys[sid], g, now, actor)
                if ch:
                    changes.append(ch)
        return changes

    @staticmethod
    def _details(g: Source) -> tuple:
        ra, dec = g.position
        return (ra, dec, json.dumps(list(g.arrays)),
                json.dumps([s.as_dict() for s in g.setups]), g.fingerprint)

    # ------------------------------------------------------------------ source stages
    def _after_open(self) -> None:
        """A source stage added to the stage table gets rows for the stored sources."""
        super()._after_open()  # type: ignore[misc]
        key = ";".join(st.name for st in PIPELINE.at_scope(Scope.SOURCE))
        if (self.meta(SOURCE_STAGE_TABLE_KEY) or "") == key:  # type: ignore[attr-defined]
            return
        with self.write() as con:  # type: ignore[attr-defined]
            for r in con.execute("SELECT s.id, s.name, s.members_fp, s.removed_at, (SELECT"
                                 " COUNT(*) FROM source_members m WHERE m.source_id = s.id)"
                                 " AS n FROM sources s").fetchall():
                self._sync_source_stages(con, r["id"], r["name"], r["members_fp"], r["n"],
                                         r["removed_at"] is not None,
                                         "created: a source stage was added", "catalog")
            con.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                        " SET value = excluded.value", (SOURCE_STAGE_TABLE_KEY, key))

    def _sync_source_stages(self, con: sqlite3.Connection, sid: int, name: str, fp: str,
                            n_members: int, removed: bool, reason: str, actor: str) -> None:
        """Bring the source's stage rows in line with its membership ``fp``: create them,
        reset them to pending (``reason``: the change), or skip them (nothing to combine)."""
        wanted = n_members > 1 and not removed
        now = time.time()
        for st in PIPELINE.at_scope(Scope.SOURCE):
            row = con.execute("SELECT * FROM source_stages WHERE source_id = ? AND stage = ?",
                              (sid, st.name)).fetchone()
            if row is None:
                if wanted:
                    con.execute("INSERT INTO source_stages (source_id, stage, members_fp,"
                                " reason, updated_at) VALUES (?, ?, ?, ?, ?)",
                                (sid, st.name, fp, reason, now))
                    self._source_stage_event(con, name, st.name, actor, None, "pending",
                                             reason)
                continue
            if wanted and row["members_fp"] != fp:
                to, why = "pending", reason
            elif not wanted and row["status"] != "skipped":
                to, why = "skipped", reason if removed else f"{NOTHING_TO_COMBINE} ({reason})"
            else:
                continue
            con.execute(
                "UPDATE source_stages SET status = ?, members_fp = ?, reason = ?,"
                " reason_code = NULL, error = NULL, attempts = 0, lease_owner = NULL,"
                " lease_expires = NULL, started_at = NULL, finished_at = NULL, job_ref = NULL,"
                " updated_at = ? WHERE id = ?", (to, fp, why, now, row["id"]))
            self._source_stage_event(con, name, st.name, actor, row["status"], to, why)

    @staticmethod
    def _source_stage_event(con: sqlite3.Connection, source: str, stage: str, actor: str,
                            from_status: str | None, to_status: str, reason: str) -> None:
        """Source-stage rows belong to no one MOUS: their events carry ``mous_id`` ''
        and the source's name as ``target``."""
        con.execute(
            "INSERT INTO events (at, mous_id, target, stage, actor, from_status, to_status,"
            " reason, kind, data) VALUES (?, '', ?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), source, stage, actor, from_status, to_status, reason, SOURCE_EVENT,
             json.dumps({"source": source})))

    def source_stages(self, source: str | None = None) -> list[dict]:
        """Source-stage rows (with the source's ``name``), by source and table order."""
        sql = ("SELECT ss.*, s.name FROM source_stages ss JOIN sources s ON s.id = ss.source_id"
               + (" WHERE s.name = ?" if source else "") + " ORDER BY s.name, ss.id")
        return [dict(r) for r in self.query(sql, (source,) if source else ())]  # type: ignore[attr-defined]

    def source_runnable(self, stages: list[str] | None = None) -> list[dict]:
        """Pending source-stage rows whose prerequisites are finished for every member."""
        sql, params = source_runnable_sql(PIPELINE, stages)
        return [dict(r) for r in self.query(sql, params)]  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ source-stage runs
    def source_stage(self, row_id: int) -> SourceStageRow:
        rows = self.query(SOURCE_ROW_SQL + " WHERE ss.id = ?", (row_id,))  # type: ignore[attr-defined]
        if not rows:
            raise NotFoundError(f"no source stage row {row_id}")
        return SourceStageRow.from_row(rows[0])

    @staticmethod
    def _load_source_row(con: sqlite3.Connection, row_id: int) -> SourceStageRow:
        r = con.execute(SOURCE_ROW_SQL + " WHERE ss.id = ?", (row_id,)).fetchone()
        if r is None:
            raise NotFoundError(f"no source stage row {row_id}")
        return SourceStageRow.from_row(r)

    def claim_source_next(self, owner: str, lease_seconds: float = 3600.0,
                          stages: list[str] | None = None,
                          mous: list[str] | None = None) -> SourceStageRow | None:
        """Claim the oldest runnable source-stage row (one compare-and-set UPDATE, as
        :meth:`claim_next` does for MOUS rows); None when there is none."""
        sql, params = source_runnable_sql(PIPELINE, stages, mous)
        with self.write() as con:  # type: ignore[attr-defined]
            r = con.execute(sql + " LIMIT 1", params).fetchone()
            if r is None:
                return None
            row = SourceStageRow.from_row(r)
            now = time.time()
            cur = con.execute(
                "UPDATE source_stages SET status = 'running', lease_owner = ?,"
                " lease_expires = ?, started_at = ?, finished_at = NULL, updated_at = ?,"
                " error = NULL, reason_code = NULL WHERE id = ? AND status = 'pending'",
                (owner, now + lease_seconds, now, now, row.id))
            if cur.rowcount != 1:
                return None
            self._source_stage_event(con, row.name, row.stage, owner, "pending", "running",
                                     f"claimed (attempt {row.attempts + 1}); {row.reason}"
                                     if row.reason else f"claimed (attempt {row.attempts + 1})")
            return self._load_source_row(con, row.id)

    def _held_source(self, con: sqlite3.Connection, row_id: int,
                     owner: str) -> SourceStageRow:
        row = self._load_source_row(con, row_id)
        if row.status != "running" or row.lease_owner != owner:
            raise LeaseLostError(f"{row.label}: lease not held by {owner} (status"
                                 f" {row.status}, owner {row.lease_owner})")
        return row

    def renew_source(self, row_id: int, owner: str, lease_seconds: float = 3600.0) -> None:
        with self.write() as con:  # type: ignore[attr-defined]
            cur = con.execute(
                "UPDATE source_stages SET lease_expires = ?, updated_at = ? WHERE id = ?"
                " AND status = 'running' AND lease_owner = ?",
                (time.time() + lease_seconds, time.time(), row_id, owner))
            if cur.rowcount != 1:
                raise LeaseLostError(f"source stage {row_id}: lease not held by {owner}")

    def set_source_job_ref(self, row_id: int, owner: str, job_ref: str | None) -> None:
        with self.write() as con:  # type: ignore[attr-defined]
            self._held_source(con, row_id, owner)
            con.execute("UPDATE source_stages SET job_ref = ? WHERE id = ?", (job_ref, row_id))

    def _move_source(self, con: sqlite3.Connection, row: SourceStageRow, to: str, actor: str,
                     reason: str, sets: dict, guard_owner: str | None) -> SourceStageRow:
        from sails.catalog.states import ALLOWED

        if to not in ALLOWED[row.status]:
            raise IllegalTransitionError(f"{row.label}: cannot go from {row.status} to {to}")
        sets = dict(sets, status=to, updated_at=time.time())
        where, params = "id = ? AND status = ?", [row.id, row.status]
        if guard_owner is not None:
            where += " AND lease_owner = ?"
            params.append(guard_owner)
        cur = con.execute(f"UPDATE source_stages SET {', '.join(f'{k} = ?' for k in sets)}"
                          f" WHERE {where}", (*sets.values(), *params))
        if cur.rowcount != 1:
            raise LeaseLostError(f"{row.label}: changed under us (no longer {row.status})")
        self._source_stage_event(con, row.name, row.stage, actor, row.status, to, reason)
        return self._load_source_row(con, row.id)

    def finish_source(self, row_id: int, owner: str, status: str, reason: str | None,
                      products: list[Product] = (), code: str | None = None  # type: ignore[assignment]
                      ) -> SourceStageRow:
        """The lease holder ends the row ``status`` (done, skipped, blocked, failed) with
        ``reason`` (the error, for failed), replacing the stage's products of this source
        in the same transaction."""
        with self.write() as con:  # type: ignore[attr-defined]
            row = self._held_source(con, row_id, owner)
            now = time.time()
            con.execute("DELETE FROM source_products WHERE source_id = ? AND stage = ?",
                        (row.source_id, row.stage))
            for p in products:
                metrics = dict(p.metrics)
                members = metrics.pop("members", [])
                size = p.bytes if p.bytes is not None else Product.measure(p.path)
                con.execute(
                    "INSERT INTO source_products (source_id, stage, kind, path, spw, bytes,"
                    " metrics, members, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(path) DO UPDATE SET source_id = excluded.source_id,"
                    " stage = excluded.stage, kind = excluded.kind, spw = excluded.spw,"
                    " bytes = excluded.bytes, metrics = excluded.metrics,"
                    " members = excluded.members, created_at = excluded.created_at,"
                    " removed_at = NULL",
                    (row.source_id, row.stage, p.kind, str(p.path), p.spw, size,
                     json.dumps(metrics, default=str), json.dumps(members), now))
            why = reason or ("completed" if status == "done" else status)
            sets = {"lease_owner": None, "lease_expires": None, "finished_at": now,
                    "duration_s": (now - row.started_at) if row.started_at else None,
                    "reason": why if status != "failed" else row.reason,
                    "error": why if status == "failed" else None, "reason_code": code}
            if status == "failed":
                sets["attempts"] = row.attempts + 1
            return self._move_source(con, row, status, owner, why, sets, guard_owner=owner)

    def release_source(self, row_id: int, owner: str, reason: str) -> SourceStageRow:
        """running -> pending without counting an attempt (the lease went)."""
        with self.write() as con:  # type: ignore[attr-defined]
            row = self._held_source(con, row_id, owner)
            return self._move_source(con, row, "pending", owner, reason,
                                     {"lease_owner": None, "lease_expires": None}, owner)

    def requeue_source(self, row_id: int, actor: str, reason: str) -> SourceStageRow:
        """A failed/blocked/skipped source row back to pending (a transient retry)."""
        with self.write() as con:  # type: ignore[attr-defined]
            row = self._load_source_row(con, row_id)
            return self._move_source(con, row, "pending", actor, reason,
                                     {"error": None, "reason_code": None}, None)

    def recover_source_leases(self, actor: str = "recovery",
                              now: float | None = None) -> list[SourceStageRow]:
        """Running source rows whose lease expired, or whose owner (a process of this host)
        is gone, back to pending (attempts + 1)."""
        now = time.time() if now is None else now
        out = []
        with self.write() as con:  # type: ignore[attr-defined]
            rows = [SourceStageRow.from_row(r) for r in con.execute(
                SOURCE_ROW_SQL + " WHERE ss.status = 'running'")]
            for row in rows:
                if (row.lease_expires or 0) < now:
                    why = f"lease of {row.lease_owner} expired; recovered"
                elif owner_is_dead(row.lease_owner or ""):
                    why = f"owner {row.lease_owner} is no longer running; recovered"
                else:
                    continue
                out.append(self._move_source(con, row, "pending", actor, why,
                                             {"lease_owner": None, "lease_expires": None,
                                              "attempts": row.attempts + 1},
                                             row.lease_owner))
        return out

    def source_products(self, source: str | None = None,
                        stage: str | None = None) -> list[dict]:
        """Products of source stages (with the source's ``name`` and parsed ``metrics`` and
        ``members``), by source and id."""
        sql = ("SELECT p.*, s.name FROM source_products p JOIN sources s ON s.id = p.source_id"
               " WHERE 1 = 1" + (" AND s.name = ?" if source else "")
               + (" AND p.stage = ?" if stage else "") + " ORDER BY s.name, p.id")
        params = [x for x in (source, stage) if x]
        return [dict(r, metrics=json.loads(r["metrics"] or "{}"),
                     members=json.loads(r["members"] or "[]"))
                for r in self.query(sql, params)]  # type: ignore[attr-defined]

    def _insert_members(self, con: sqlite3.Connection, sid: int, g: Source,
                        now: float) -> None:
        """Write the group's member rows; a member already in this source keeps the time
        it joined."""
        for j in g.members:
            windows = [[w.spw, w.band, w.min_ghz, w.max_ghz] for w in j.member.windows]
            con.execute(
                "INSERT INTO source_members (source_id, mous_id, target, array_kind, config,"
                " joined_by, windows, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (mous_id, target) DO UPDATE SET"
                " added_at = CASE WHEN source_id = excluded.source_id THEN added_at"
                " ELSE excluded.added_at END, source_id = excluded.source_id,"
                " array_kind = excluded.array_kind, config = excluded.config,"
                " joined_by = excluded.joined_by, windows = excluded.windows",
                (sid, j.member.mous_id, j.member.target, j.array, j.config, j.joined_by,
                 json.dumps(windows), now))

    def _new_source(self, con: sqlite3.Connection, g: Source, taken: set[str], now: float,
                    actor: str) -> SourceChange:
        name, n = g.name, 1
        while name in taken:  # the same name at another position: a second source
            n += 1
            name = f"{g.name}_{n}"
        taken.add(name)
        keys = sorted(g.keys)
        reason = f"new source of {len(keys)} member(s): " + ", ".join(_member_text(keys, "+"))
        sid = con.execute(
            "INSERT INTO sources (name, ra, dec, arrays, setups, members_fp, change_reason,"
            " changed_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, *self._details(g), reason, now, now, now)).lastrowid
        self._insert_members(con, sid, g, now)
        self._sync_source_stages(con, sid, name, g.fingerprint, len(keys), False, reason,
                                 actor)
        if len(keys) > 1:  # a target alone is no news (a first regroup makes thousands)
            for m, t in keys:
                self._source_event(con, m, t, actor, f"joined source {name} (new source)",
                                   name, "+")
        return SourceChange(name, "new", added=keys, reason=reason)

    def _update_source(self, con: sqlite3.Connection, sid: int, row: dict,
                       had: set[tuple[str, str]], g: Source, now: float,
                       actor: str) -> SourceChange | None:
        name = row["name"]
        added, removed = sorted(set(g.keys) - had), sorted(had - set(g.keys))
        details = self._details(g)
        if not added and not removed and row["removed_at"] is None:
            if (row["ra"], row["dec"], row["arrays"], row["setups"]) == details[:4]:
                return None
            con.execute("UPDATE sources SET ra = ?, dec = ?, arrays = ?, setups = ?,"
                        " updated_at = ? WHERE id = ?", (*details[:4], now, sid))
            self._insert_members(con, sid, g, now)  # array labels may have moved
            return SourceChange(name, "details", reason="arrays or set-ups changed")
        reason = "members changed: " + ", ".join(
            _member_text(added, "+") + _member_text(removed, "-"))
        con.execute("UPDATE sources SET ra = ?, dec = ?, arrays = ?, setups = ?,"
                    " members_fp = ?, change_reason = ?, changed_at = ?, removed_at = NULL,"
                    " updated_at = ? WHERE id = ?", (*details, reason, now, now, sid))
        self._insert_members(con, sid, g, now)
        self._sync_source_stages(con, sid, name, g.fingerprint, len(g.members), False, reason,
                                 actor)
        for m, t in added:
            self._source_event(con, m, t, actor, f"joined source {name} ({reason})", name, "+")
        for m, t in removed:
            self._source_event(con, m, t, actor, f"left source {name} ({reason})", name, "-")
        return SourceChange(name, "members", added=added, removed=removed, reason=reason)

    @staticmethod
    def _source_event(con: sqlite3.Connection, mous_id: str, target: str, actor: str,
                      reason: str, source: str, change: str) -> None:
        con.execute(
            "INSERT INTO events (at, mous_id, target, stage, actor, reason, kind, data)"
            " VALUES (?, ?, ?, NULL, ?, ?, ?, ?)",
            (time.time(), mous_id, target, actor, reason, SOURCE_EVENT,
             json.dumps({"source": source, "change": change})))

    # ------------------------------------------------------------------ reads
    def sources(self, include_removed: bool = False) -> list[dict]:
        """Stored sources (by name), each with its ``members`` (MOUS, target, array ...)."""
        sql = "SELECT * FROM sources" + ("" if include_removed else
                                         " WHERE removed_at IS NULL") + " ORDER BY name"
        out = []
        for r in self.query(sql):  # type: ignore[attr-defined]
            d = dict(r)
            d["arrays"] = json.loads(d["arrays"])
            d["setups"] = json.loads(d["setups"])
            d["members"] = [
                dict(m, windows=json.loads(m["windows"])) for m in self.query(  # type: ignore[attr-defined]
                    "SELECT mous_id, target, array_kind, config, joined_by, windows, added_at"
                    " FROM source_members WHERE source_id = ? ORDER BY mous_id, target",
                    (d["id"],))]
            out.append(d)
        return out

    def sources_of(self, mous_id: str) -> list[dict]:
        """The sources a MOUS's targets belong to: target, source, arrays, members."""
        rows = self.query(  # type: ignore[attr-defined]
            "SELECT m.target, s.name AS source, s.arrays, (SELECT COUNT(*) FROM"
            " source_members o WHERE o.source_id = s.id) AS members FROM source_members m"
            " JOIN sources s ON s.id = m.source_id WHERE m.mous_id = ? ORDER BY m.target",
            (mous_uri(mous_id),))
        return [dict(r, arrays=json.loads(r["arrays"])) for r in rows]

    def source(self, name: str) -> dict | None:
        for s in self.sources(include_removed=True):
            if s["name"] == name:
                return s
        return None


def source_runnable_sql(table: StageTable, only: list[str] | None = None,
                        mous: list[str] | None = None) -> tuple[str, list]:
    """Pending source-stage rows whose prerequisites are finished, as one query: a source
    prerequisite is the same source's row; a MOUS or target one is that row of every member
    (its MOUS's row, or its own target's row). The row must stand for the source's current
    membership."""
    finished = ", ".join("?" * len(FINISHED))
    clauses, params = [], []
    for st in table.at_scope(Scope.SOURCE):
        if only is not None and st.name not in only:
            continue
        conds = ["ss.stage = ?"]
        params.append(st.name)
        for pre_name in st.after:
            pre = table.get(pre_name)
            if pre.scope == Scope.SOURCE:
                conds.append("EXISTS (SELECT 1 FROM source_stages p WHERE p.source_id ="
                             f" ss.source_id AND p.stage = ? AND p.status IN ({finished}))")
            else:
                target = "m.target" if pre.scope == Scope.TARGET else "''"
                conds.append("NOT EXISTS (SELECT 1 FROM source_members m LEFT JOIN stages p"
                             f" ON p.mous_id = m.mous_id AND p.target = {target}"
                             " AND p.stage = ? WHERE m.source_id = ss.source_id"
                             f" AND (p.id IS NULL OR p.status NOT IN ({finished})))")
            params += [pre.name, *FINISHED]
        clauses.append("(" + " AND ".join(conds) + ")")
    sql = (SOURCE_ROW_SQL + " WHERE ss.status = 'pending' AND s.removed_at IS NULL"
           " AND ss.members_fp = s.members_fp AND (" + (" OR ".join(clauses) or "0") + ")")
    if mous is not None:  # ``sails run --mous``: the sources those MOUS belong to
        sql += (" AND EXISTS (SELECT 1 FROM source_members f WHERE f.source_id = ss.source_id"
                f" AND f.mous_id IN ({', '.join('?' * len(mous))}))")
        params += [mous_uri(m) for m in mous]
    return sql + " ORDER BY ss.id", params
