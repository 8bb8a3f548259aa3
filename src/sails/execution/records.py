"""Per-job records of the remote backends (CANFAR, SLURM): one JSON file per job name under
``work/jobs/<backend>/``, written before the job is submitted and updated with its id, so
a restarted orchestrator finds (and never resubmits) a job it started."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sails.atomic import write_json_atomic


class JobRecordStore:
    """Mixin: ``RECORD_TYPE`` (a dataclass with a ``name``) and ``RECORDS_NAME`` (the
    backend's folder under ``work/jobs``) are set by the backend; ``self.project`` too."""

    RECORD_TYPE: type
    RECORDS_NAME: str
    project: Any

    def _records_dir(self) -> Path:
        return self.project.work / "jobs" / self.RECORDS_NAME

    def _record_path(self, name: str) -> Path:
        return self._records_dir() / f"{name}.json"

    def _load_record(self, name: str) -> Any | None:
        try:
            return self.RECORD_TYPE(**json.loads(self._record_path(name).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _save_record(self, rec: Any) -> None:
        path = self._record_path(rec.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, asdict(rec), indent=2)

    def _drop_record(self, name: str) -> None:
        self._record_path(name).unlink(missing_ok=True)
