"""The SQLite connection: opening, short write transactions, migrations, the event log.

Rules: every write is one short ``BEGIN IMMEDIATE`` transaction that waits for other
writers instead of failing; every state change writes an event in the same transaction.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sails.atomic import write_text_atomic
from sails.catalog.schema import MIGRATIONS, SCHEMA_VERSION
from sails.errors import CatalogBusyError, CatalogError
from sails.ids import mous_uri

TABLES = frozenset({"projects", "mous", "targets", "files", "stages", "products", "events",
                    "meta", "sources", "source_members", "source_stages"})


class Connection:
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
        self._after_open()

    def _after_open(self) -> None:
        """Hook for the layers above (the state machine adds rows for new stages)."""

    # ------------------------------------------------------------------ plumbing
    def _explain(self, exc: Exception) -> CatalogError:
        msg = str(exc)
        if "not a database" in msg or "malformed" in msg:
            return CatalogError(
                f"{self.path} is not a usable SQLite catalog ({msg})",
                hint="restore it from a backup or move it aside and run `sails init`",
            )
        if "full" in msg or "disk I/O" in msg:
            return CatalogError(f"cannot write the catalog {self.path} ({msg})",
                                hint="free space on its file system, then retry")
        if "readonly" in msg or "unable to open" in msg or "read-only" in msg:
            return CatalogError(
                f"cannot write the catalog {self.path} ({msg})",
                hint="check the permissions of the project space",
            )
        return CatalogError(f"catalog error in {self.path}: {msg}")

    def close(self) -> None:
        self.con.close()

    def __enter__(self):
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
                    raise CatalogBusyError(
                        f"catalog {self.path} stayed locked for {self.timeout:.0f} s",
                        hint="another process holds a long write; try again",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            yield self.con
        except sqlite3.DatabaseError as exc:  # disk full, I/O error ...: say which
            self._rollback()
            raise self._explain(exc) from None
        except BaseException:
            self._rollback()
            raise
        else:
            try:
                self.con.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._rollback()
                raise self._explain(exc) from None

    def _rollback(self) -> None:
        """Roll back unless SQLite already did (it does on disk full and I/O errors; a
        second ROLLBACK would hide the real error behind "no transaction is active")."""
        if self.con.in_transaction:
            self.con.execute("ROLLBACK")

    @contextmanager
    def _tx(self, con: sqlite3.Connection | None) -> Iterator[sqlite3.Connection]:
        """The caller's open transaction, or a new one of our own."""
        if con is not None:
            yield con
        else:
            with self.write() as c:
                yield c

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
        if table not in TABLES:
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
        write_text_atomic(path, text)

    def meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

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
