"""Catalog records: what the archive says exists (projects, MOUS, targets, files) and what
the pipeline produced (products), with the read side of stage rows. No state changes here:
those live in :mod:`sails.catalog.states`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from sails.catalog.model import STATUSES, StageRow, check_stage, check_status
from sails.errors import NotFoundError, UserInputError
from sails.ids import mous_uri
from sails.pipeline import PIPELINE


class Records:
    """Upserts and reads (a mixin of :class:`sails.catalog.Catalog`)."""

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
        self._ensure_stages(con, row["mous_id"], "")
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
        self._ensure_stages(con, row["mous_id"], row["alma_source_name"])
        return result

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
        """stage -> status -> rows, stages in table order (then any unknown to it)."""
        out: dict[str, dict[str, int]] = {s: dict.fromkeys(STATUSES, 0) for s in PIPELINE.names}
        for r in self.query("SELECT stage, status, COUNT(*) n FROM stages GROUP BY 1, 2"):
            out.setdefault(r["stage"], dict.fromkeys(STATUSES, 0))[r["status"]] = r["n"]
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

    # ------------------------------------------------------------------ sizes
    def set_sizes(self, stage_id: int, *, predicted_peak: int | None = None,
                  predicted: int | None = None, basis: str | None = None,
                  measured: int | None = None) -> None:
        """Record the size model's prediction (before the stage) or the measured bytes
        (after it) on a stage row; None leaves a column as it is."""
        sets = {k: v for k, v in (("predicted_peak_bytes", predicted_peak),
                                  ("predicted_bytes", predicted), ("size_basis", basis),
                                  ("measured_bytes", measured)) if v is not None}
        if not sets:
            return
        with self.write() as con:
            con.execute(f"UPDATE stages SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                        (*sets.values(), stage_id))

    def mark_removed(self, paths: list[str], actor: str = "cleanup") -> int:
        """Products whose files cleanup removed keep their rows, stamped ``removed_at``."""
        now = time.time()
        with self.write() as con:
            n = 0
            for p in paths:
                n += con.execute("UPDATE products SET removed_at = ? WHERE path = ?"
                                 " AND removed_at IS NULL", (now, str(p))).rowcount
            return n

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

