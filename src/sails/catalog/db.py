"""Catalog access and the crash-safe stage state machine.

Rules: every write is one short ``BEGIN IMMEDIATE`` transaction; a stage is started by one
compare-and-set UPDATE that takes a lease; every state change writes an event in the same
transaction; a stage whose lease expired is recoverable by anyone.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sails.catalog.schema import (
    MIGRATIONS,
    MOUS_STAGES,
    SCHEMA_VERSION,
    STAGES,
    STATUSES,
)
from sails.errors import (
    CatalogError,
    IllegalTransitionError,
    LeaseLostError,
    NotFoundError,
    UserInputError,
)
from sails.ids import mous_uri

# Which stage must be finished (done or skipped) before a stage may run, and whether that
# prerequisite is the MOUS-level row ('') or the same target's row.
PREREQUISITE: dict[str, tuple[str, bool] | None] = {
    "download": None,
    "verify": ("download", False),
    "split": ("verify", False),
    "selfcal": ("split", False),
    "image": ("selfcal", True),
    "cleanup": ("image", True),
}
DEFAULT_TARGET_STAGES = ("selfcal", "image")

ALLOWED: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "skipped", "blocked", "failed"}),
    "running": frozenset({"done", "failed", "skipped", "blocked", "pending"}),
    "failed": frozenset({"pending"}),
    "blocked": frozenset({"pending"}),
    "skipped": frozenset({"pending"}),
    "done": frozenset({"pending"}),
}


def new_owner(role: str = "worker") -> str:
    """A lease owner id unique to this process and call."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def check_stage(name: str) -> str:
    if name not in STAGES:
        raise UserInputError(
            f"unknown stage {name!r}", hint=f"choose one of: {', '.join(STAGES)}"
        )
    return name


def check_status(name: str) -> str:
    if name not in STATUSES:
        raise UserInputError(
            f"unknown status {name!r}", hint=f"choose one of: {', '.join(STATUSES)}"
        )
    return name


@dataclass(frozen=True)
class StageRow:
    id: int
    mous_id: str
    target: str
    stage: str
    status: str
    reason: str | None
    error: str | None
    attempts: int
    lease_owner: str | None
    lease_expires: float | None
    started_at: float | None
    finished_at: float | None
    updated_at: float
    job_ref: str | None = None
    duration_s: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> StageRow:
        return cls(**{k: row[k] for k in row.keys()})  # noqa: SIM118 (Row iterates values)

    @property
    def label(self) -> str:
        return f"{self.mous_id} {self.stage}" + (f" [{self.target}]" if self.target else "")


@dataclass
class Product:
    """A file or folder a stage produced, recorded with its size and metrics."""

    kind: str
    path: str
    target: str = ""
    spw: str | None = None
    bytes: int | None = None
    checksum: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def measure(path: str | Path) -> int:
        p = Path(path)
        if p.is_file():
            return p.stat().st_size
        total = 0
        for root, _dirs, files in os.walk(p):
            for f in files:
                with suppress(OSError):
                    total += os.lstat(os.path.join(root, f)).st_size
        return total


class Catalog:
    """One SQLite file. Safe to open from many processes at once."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True, timeout: float = 60.0):
        self.path = Path(path)
        self.timeout = timeout
        if not create and not self.path.exists():
            raise CatalogError(f"no catalog at {self.path}", hint="run `sails init` first")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.con = sqlite3.connect(
                str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self.con.row_factory = sqlite3.Row
            self.con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self.con.execute("PRAGMA foreign_keys = ON")
            mode = self.con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self.con.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise self._explain(exc) from None
        except OSError as exc:
            raise CatalogError(f"cannot open catalog {self.path}: {exc.strerror}") from None
        self.journal_mode = mode
        self._columns: dict[str, list[str]] = {}
        self._migrate()

    # ------------------------------------------------------------------ plumbing
    def _explain(self, exc: Exception) -> CatalogError:
        msg = str(exc)
        if "not a database" in msg or "malformed" in msg:
            return CatalogError(
                f"{self.path} is not a usable SQLite catalog ({msg})",
                hint="restore it from a backup or move it aside and run `sails init`",
            )
        if "readonly" in msg or "unable to open" in msg or "read-only" in msg:
            return CatalogError(
                f"cannot write the catalog {self.path} ({msg})",
                hint="check the permissions of the project space",
            )
        return CatalogError(f"catalog error in {self.path}: {msg}")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; waits for other writers instead of failing."""
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                self.con.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise self._explain(exc) from None
                if time.monotonic() > deadline:
                    raise CatalogError(
                        f"catalog {self.path} stayed locked for {self.timeout:.0f} s",
                        hint="another process holds a long write; try again",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            try:
                self.con.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self.con.execute("ROLLBACK")
                raise self._explain(exc) from None

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self.con.execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._explain(exc) from None

    def schema_version(self) -> int:
        return self.con.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        try:
            version = self.schema_version()
        except sqlite3.DatabaseError as exc:
            raise self._explain(exc) from None
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"catalog {self.path} has schema v{version}, newer than this sails "
                f"(v{SCHEMA_VERSION})",
                hint="upgrade alma-sails",
            )
        if version == SCHEMA_VERSION:
            return
        try:
            with self.write() as con:
                # Re-read inside the lock: another process may have migrated meanwhile.
                version = con.execute("PRAGMA user_version").fetchone()[0]
                while version < SCHEMA_VERSION:
                    MIGRATIONS[version](con)
                    version += 1
                    con.execute(f"PRAGMA user_version = {version}")
                self._columns.clear()
        except sqlite3.DatabaseError as exc:
            raise self._explain(exc) from None

    def columns(self, table: str) -> list[str]:
        if table not in {"projects", "mous", "targets", "files", "stages", "products", "events"}:
            raise ValueError(table)
        # Cached: the schema only changes in _migrate, when the catalog is opened.
        cols = self._columns.get(table)
        if cols is None:
            cols = [r["name"] for r in self.con.execute(f"PRAGMA table_info({table})")]
            self._columns[table] = cols
        return list(cols)

    def dump_schema(self, path: str | os.PathLike) -> None:
        rows = self.query("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid")
        text = f"-- ALMA-SAILS catalog schema v{self.schema_version()}\n" + "".join(
            r["sql"].strip() + ";\n\n" for r in rows
        )
        tmp = Path(f"{path}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    # ------------------------------------------------------------------ events
    @staticmethod
    def _event(
        con: sqlite3.Connection,
        mous_id: str,
        target: str,
        stage: str | None,
        actor: str,
        from_status: str | None,
        to_status: str | None,
        reason: str | None,
    ) -> None:
        con.execute(
            "INSERT INTO events (at, mous_id, target, stage, actor, from_status, to_status,"
            " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), mous_id, target, stage, actor, from_status, to_status, reason),
        )

    def log_event(self, mous_id: str, reason: str, actor: str = "sails", stage: str | None = None,
                  target: str = "") -> None:
        with self.write() as con:
            self._event(con, mous_id, target, stage, actor, None, None, reason)

    def events(self, mous_id: str | None = None, limit: int | None = None) -> list[dict]:
        sql = "SELECT * FROM events"
        params: list[Any] = []
        if mous_id:
            sql += " WHERE mous_id = ?"
            params.append(mous_uri(mous_id))
        sql += " ORDER BY id"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [dict(r) for r in self.query(sql, params)]

    # ------------------------------------------------------------------ upserts
    def _upsert(self, con: sqlite3.Connection, table: str, key: tuple[str, ...],
                row: dict[str, Any]) -> str:
        """Insert or update ``row``; return 'added', 'updated' or 'unchanged'."""
        all_cols = self.columns(table)
        # Not every table keeps both stamps (files has created_at only).
        stamps = [c for c in ("created_at", "updated_at") if c in all_cols]
        cols = set(all_cols) - {"id", "created_at", "updated_at"}
        data = {k: v for k, v in row.items() if k in cols}
        where = " AND ".join(f"{k} = ?" for k in key)
        old = con.execute(f"SELECT * FROM {table} WHERE {where}",
                          tuple(data[k] for k in key)).fetchone()
        now = time.time()
        if old is None:
            names = list(data) + stamps
            con.execute(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                (*data.values(), *([now] * len(stamps))),
            )
            return "added"
        changed = {k: v for k, v in data.items() if k not in key and old[k] != v}
        if not changed:
            return "unchanged"
        if "updated_at" in stamps:
            changed["updated_at"] = now
        sets = ", ".join(f"{k} = ?" for k in changed)
        con.execute(
            f"UPDATE {table} SET {sets} WHERE {where}",
            (*changed.values(), *(data[k] for k in key)),
        )
        return "updated"

    def upsert_project(self, row: dict[str, Any], con: sqlite3.Connection | None = None) -> str:
        if con is None:
            with self.write() as c:
                return self._upsert(c, "projects", ("project_code",), row)
        return self._upsert(con, "projects", ("project_code",), row)

    def upsert_mous(self, row: dict[str, Any], con: sqlite3.Connection | None = None) -> str:
        row = dict(row, mous_id=mous_uri(row["mous_id"]))
        if con is None:
            with self.write() as c:
                return self._upsert_mous(c, row)
        return self._upsert_mous(con, row)

    def _upsert_mous(self, con: sqlite3.Connection, row: dict[str, Any]) -> str:
        result = self._upsert(con, "mous", ("mous_id",), row)
        for stage in MOUS_STAGES:
            self._ensure_stage(con, row["mous_id"], "", stage)
        return result

    def upsert_target(self, row: dict[str, Any], con: sqlite3.Connection | None = None) -> str:
        row = dict(row, mous_id=mous_uri(row["mous_id"]))
        if not row.get("alma_source_name"):
            raise UserInputError(f"target row for {row['mous_id']} has no source name")
        if con is None:
            with self.write() as c:
                return self._upsert_target(c, row)
        return self._upsert_target(con, row)

    def _upsert_target(self, con: sqlite3.Connection, row: dict[str, Any]) -> str:
        result = self._upsert(con, "targets", ("mous_id", "alma_source_name", "obs_id"), row)
        for stage in DEFAULT_TARGET_STAGES:
            self._ensure_stage(con, row["mous_id"], row["alma_source_name"], stage)
        return result

    def _ensure_stage(self, con: sqlite3.Connection, mous_id: str, target: str,
                      stage: str) -> None:
        cur = con.execute(
            "INSERT OR IGNORE INTO stages (mous_id, target, stage, updated_at) VALUES (?, ?, ?, ?)",
            (mous_id, target, stage, time.time()),
        )
        if cur.rowcount:
            self._event(con, mous_id, target, stage, "catalog", None, "pending", "created")

    def add_file(self, mous_id: str, url: str, kind: str, *, filename: str | None = None,
                 size: int | None = None, semantics: str | None = None,
                 content_type: str | None = None, checksum: str | None = None,
                 con: sqlite3.Connection | None = None) -> str:
        row = dict(mous_id=mous_uri(mous_id), url=url, kind=kind, filename=filename, size=size,
                   semantics=semantics, content_type=content_type, checksum=checksum)
        if con is None:
            with self.write() as c:
                return self._upsert(c, "files", ("mous_id", "url"), row)
        return self._upsert(con, "files", ("mous_id", "url"), row)

    def files(self, mous_id: str) -> list[dict]:
        return [dict(r) for r in self.query(
            "SELECT * FROM files WHERE mous_id = ? ORDER BY id", (mous_uri(mous_id),))]

    def mark_file_done(self, file_id: int) -> None:
        with self.write() as con:
            con.execute("UPDATE files SET done_at = ? WHERE id = ?", (time.time(), file_id))

    # ------------------------------------------------------------------ reads
    def mous(self, mous_id: str) -> dict:
        rows = self.query("SELECT * FROM mous WHERE mous_id = ?", (mous_uri(mous_id),))
        if not rows:
            raise NotFoundError(f"MOUS {mous_uri(mous_id)} is not in the catalog",
                                hint="see `sails status` for the MOUS it holds")
        return dict(rows[0])

    def mous_ids(self) -> list[str]:
        return [r[0] for r in self.query("SELECT mous_id FROM mous ORDER BY mous_id")]

    def targets(self, mous_id: str) -> list[dict]:
        return [dict(r) for r in self.query(
            "SELECT * FROM targets WHERE mous_id = ? ORDER BY alma_source_name, spw_id, obs_id",
            (mous_uri(mous_id),))]

    def target_names(self, mous_id: str) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT DISTINCT alma_source_name FROM targets WHERE mous_id = ? ORDER BY 1",
            (mous_uri(mous_id),))]

    def stage(self, stage_id: int) -> StageRow:
        rows = self.query("SELECT * FROM stages WHERE id = ?", (stage_id,))
        if not rows:
            raise NotFoundError(f"no stage row {stage_id}")
        return StageRow.from_row(rows[0])

    def find_stage(self, mous_id: str, stage: str, target: str = "") -> StageRow:
        rows = self.query(
            "SELECT * FROM stages WHERE mous_id = ? AND stage = ? AND target = ?",
            (mous_uri(mous_id), check_stage(stage), target),
        )
        if not rows:
            raise NotFoundError(f"no {stage} stage for {mous_uri(mous_id)} {target}".strip())
        return StageRow.from_row(rows[0])

    def stages(self, mous_id: str | None = None, stage: str | None = None,
               status: str | None = None) -> list[StageRow]:
        sql, params = "SELECT * FROM stages WHERE 1=1", []
        if mous_id:
            sql += " AND mous_id = ?"
            params.append(mous_uri(mous_id))
        if stage:
            sql += " AND stage = ?"
            params.append(check_stage(stage))
        if status:
            sql += " AND status = ?"
            params.append(check_status(status))
        sql += " ORDER BY mous_id, CASE WHEN target = '' THEN 0 ELSE 1 END, target, id"
        return [StageRow.from_row(r) for r in self.query(sql, params)]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {s: dict.fromkeys(STATUSES, 0) for s in STAGES}
        for r in self.query("SELECT stage, status, COUNT(*) n FROM stages GROUP BY 1, 2"):
            out[r["stage"]][r["status"]] = r["n"]
        return {s: c for s, c in out.items() if any(c.values())}

    def products(self, mous_id: str | None = None, target: str | None = None,
                 stage: str | None = None) -> list[dict]:
        sql, params = "SELECT * FROM products WHERE 1=1", []
        if mous_id:
            sql += " AND mous_id = ?"
            params.append(mous_uri(mous_id))
        if target is not None:
            sql += " AND target = ?"
            params.append(target)
        if stage:
            sql += " AND stage = ?"
            params.append(check_stage(stage))
        rows = [dict(r) for r in self.query(sql + " ORDER BY id", params)]
        for r in rows:
            r["metrics"] = json.loads(r["metrics"]) if r["metrics"] else {}
        return rows

    _RUNNABLE = """
        SELECT s.* FROM stages s
        LEFT JOIN stages p ON p.mous_id = s.mous_id
            AND p.stage = CASE s.stage WHEN 'verify' THEN 'download' WHEN 'split' THEN 'verify'
                WHEN 'selfcal' THEN 'split' WHEN 'image' THEN 'selfcal'
                WHEN 'cleanup' THEN 'image' END
            AND p.target = CASE WHEN s.stage IN ('image', 'cleanup') THEN s.target ELSE '' END
        WHERE s.status = 'pending' AND (s.stage = 'download' OR p.status IN ('done', 'skipped'))
          AND NOT (s.stage = 'selfcal' AND EXISTS (
              SELECT 1 FROM stages r WHERE r.mous_id = s.mous_id AND r.stage = 'selfcal'
                  AND r.status = 'running'))
    """
    # selfcal is per target, but auto-selfcal calibrates the whole MOUS in one job that the
    # first target runs and its siblings reuse: a sibling started meanwhile would only hold a
    # slot while it waits, so it is not runnable until that job ends.

    def _runnable_sql(self, stages: Iterable[str] | None, mous: Iterable[str] | None,
                      limit: int | None) -> tuple[str, list[Any]]:
        sql, params = self._RUNNABLE, []
        if stages is not None:
            st = [check_stage(s) for s in stages]
            sql += f" AND s.stage IN ({', '.join('?' * len(st))})"
            params += st
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
        """Pending stages whose prerequisite is finished, oldest first."""
        sql, params = self._runnable_sql(stages, mous, limit)
        return [StageRow.from_row(r) for r in self.query(sql, params)]

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
            " started_at = ?, finished_at = NULL, updated_at = ?, error = NULL, reason = NULL"
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

    def fail(self, stage_id: int, owner: str | None, error: str) -> StageRow:
        """-> failed with the error text; attempts + 1."""
        with self.write() as con:
            return self._end(con, stage_id, owner, "failed", error,
                             lambda row: {"error": error, "attempts": row.attempts + 1})

    def skip(self, stage_id: int, owner: str | None, reason: str) -> StageRow:
        with self.write() as con:
            return self._end(con, stage_id, owner, "skipped", reason, {"reason": reason})

    @contextmanager
    def _tx(self, con: sqlite3.Connection | None) -> Iterator[sqlite3.Connection]:
        """The caller's open transaction, or a new one of our own."""
        if con is not None:
            yield con
        else:
            with self.write() as c:
                yield c

    def block(self, stage_id: int, owner: str | None, reason: str,
              con: sqlite3.Connection | None = None) -> StageRow:
        """-> blocked with ``reason``; ``con`` joins the caller's transaction (e.g. ingest)."""
        with self._tx(con) as con:
            return self._end(con, stage_id, owner, "blocked", reason, {"reason": reason})

    def unblock(self, stage_id: int, reason: str, *, only_reason: str | None = None,
                actor: str = "sails", con: sqlite3.Connection | None = None) -> StageRow | None:
        """blocked -> pending (logging ``reason``); None when the stage is not blocked, or
        (with ``only_reason``) was blocked for another reason, so a person's block stays."""
        with self._tx(con) as con:
            row = self._load(con, stage_id)
            if row.status != "blocked" or (only_reason is not None
                                           and row.reason != only_reason):
                return None
            self._move(con, row, "pending", actor, reason, {"reason": None, "error": None})
            return self._load(con, stage_id)

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
            self._move(con, row, "pending", actor, reason, {"error": None, "reason": None})
            return self._load(con, stage_id)

    def recover_dead_owners(self, actor: str = "recovery") -> list[StageRow]:
        """Running stages whose owner was a process on this host that no longer exists.

        Owners look like ``role@host:pid:nonce`` (see :func:`new_owner`); a lease held by a
        dead local process is recovered at once instead of waiting for it to expire.
        """
        host = socket.gethostname()
        dead = []
        for row in self.stages(status="running"):
            owner = row.lease_owner or ""
            try:
                o_host, o_pid = owner.split("@", 1)[1].split(":")[:2]
                pid = int(o_pid)
            except (IndexError, ValueError):
                continue
            if o_host != host or pid == os.getpid() or _pid_alive(pid):
                continue
            dead.append(row)
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
                self._move(con, row, "pending", actor, "retry requested",
                           {"error": None, "reason": None})
                out.append(self._load(con, row.id))
        return out

    def reset(self, mous_id: str, stage: str, actor: str = "user",
              force: bool = False) -> list[StageRow]:
        """A stage and everything downstream of it back to pending; their products forgotten.

        A running stage is only reset with ``force`` (its lease holder may still be alive).
        """
        mous_id = mous_uri(mous_id)
        self.mous(mous_id)
        check_stage(stage)
        downstream = STAGES[STAGES.index(stage):]
        out = []
        with self.write() as con:
            rows = [StageRow.from_row(r) for r in con.execute(
                f"SELECT * FROM stages WHERE mous_id = ? AND stage IN"
                f" ({', '.join('?' * len(downstream))}) ORDER BY id",
                (mous_id, *downstream))]
            running = [r for r in rows if r.status == "running"]
            if running and not force:
                raise IllegalTransitionError(
                    f"{running[0].label} is running (lease held by {running[0].lease_owner})",
                    hint="wait for it, or pass --force if that process is dead",
                )
            for row in rows:
                if row.status == "pending":
                    continue
                self._move(con, row, "pending", actor, f"reset of {stage} requested",
                           {"error": None, "reason": None, "lease_owner": None,
                            "lease_expires": None, "attempts": 0})
                con.execute("DELETE FROM products WHERE mous_id = ? AND stage = ? AND target = ?",
                            (mous_id, row.stage, row.target))
                out.append(self._load(con, row.id))
        return out

    # ------------------------------------------------------------------ MOUS settings
    def set_mous_field(self, mous_id: str, field_name: str, value: Any,
                       actor: str = "sails", con: sqlite3.Connection | None = None) -> None:
        allowed = {"preferred_datacolumn", "spw_remap", "srdp_url", "num_asdms"}
        if field_name not in allowed:
            raise ValueError(field_name)
        mous_id = mous_uri(mous_id)
        self.mous(mous_id)
        with self._tx(con) as con:
            con.execute(f"UPDATE mous SET {field_name} = ?, updated_at = ? WHERE mous_id = ?",
                        (value, time.time(), mous_id))
            self._event(con, mous_id, "", None, actor, None, None,
                        f"set {field_name} = {value}")

    def spw_remap(self, mous_id: str) -> dict[int, int]:
        raw = self.mous(mous_id).get("spw_remap")
        return {int(k): int(v) for k, v in json.loads(raw).items()} if raw else {}

