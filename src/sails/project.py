"""The project space: a folder holding ``sails.toml``, the catalog and all data.

Found like git finds a repository: ``--project DIR``, else ``SAILS_PROJECT``, else the
nearest ancestor of the current directory holding ``sails.toml``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sails.atomic import write_text_atomic
from sails.config import CONFIG_NAME, DEFAULT_TOML, Settings, load_settings
from sails.errors import ProjectNotFoundError, SailsError
from sails.ids import parse_uid
from sails.names import safe_name

SOURCES_DIR = "sources"  # under datasets/ and logs/: one folder per source (sails.sources)


@dataclass
class Project:
    root: Path
    settings: Settings = field(repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    def _dir(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.root / p

    @property
    def datasets(self) -> Path:
        return self._dir(self.settings.layout.datasets)

    @property
    def datasets_raw(self) -> Path:
        return self._dir(self.settings.layout.datasets_raw)

    @property
    def weblogs(self) -> Path:
        return self._dir(self.settings.layout.srdp_weblogs)

    @property
    def db_dir(self) -> Path:
        return self._dir(self.settings.layout.db)

    @property
    def schemas(self) -> Path:
        return self._dir(self.settings.layout.schemas)

    @property
    def reports(self) -> Path:
        return self._dir(self.settings.layout.reports)

    @property
    def logs(self) -> Path:
        return self._dir(self.settings.layout.logs)

    @property
    def work(self) -> Path:
        return self._dir(self.settings.layout.work)

    @property
    def catalog_path(self) -> Path:
        return self.db_dir / self.settings.layout.catalog_name

    def mous_dir(self, mous: str) -> Path:
        return self.datasets / parse_uid(mous, "MOUS uid").fs

    def mous_logs(self, mous: str) -> Path:
        return self.logs / parse_uid(mous, "MOUS uid").fs

    def source_dir(self, source: str) -> Path:
        """Where a source's combined products go: ``<datasets>/sources/<safe name>``."""
        return self.datasets / SOURCES_DIR / safe_name(source)

    def source_logs(self, source: str) -> Path:
        return self.logs / SOURCES_DIR / safe_name(source)

    @property
    def catalog(self):  # -> Catalog (import kept local: catalog must not import project)
        """This thread's connection to the catalog (sqlite connections are not shared)."""
        cat = getattr(self._local, "catalog", None)
        if cat is None:
            from sails.catalog import Catalog

            cat = self._local.catalog = Catalog(
                self.catalog_path, timeout=self.settings.execution.catalog_busy_seconds)
        return cat

    def layout_dirs(self) -> list[Path]:
        return [
            self.datasets,
            self.datasets_raw,
            self.weblogs,
            self.db_dir,
            self.schemas,
            self.reports,
            self.logs,
            self.work,
        ]


def _walk_up(start: Path) -> Path | None:
    for d in (start, *start.parents):
        if (d / CONFIG_NAME).is_file():
            return d
    return None


def find_project_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        root = Path(explicit).expanduser().resolve()
        if not (root / CONFIG_NAME).is_file():
            raise ProjectNotFoundError(
                f"{root} is not a project space (no {CONFIG_NAME})",
                hint=f"run `sails init {root}` first",
            )
        return root
    env = os.environ.get("SAILS_PROJECT")
    if env:
        return find_project_root(env)
    found = _walk_up(Path.cwd().resolve())
    if found is None:
        raise ProjectNotFoundError(
            f"no project space found (no {CONFIG_NAME} in {Path.cwd()} or its parents)",
            hint="pass --project DIR, set SAILS_PROJECT, or run `sails init DIR`",
        )
    return found


def open_project(explicit: str | os.PathLike | None = None) -> Project:
    root = find_project_root(explicit)
    return Project(root=root, settings=load_settings(root / CONFIG_NAME))


def init_project(root: str | os.PathLike) -> Project:
    """Create (idempotently) the layout, the commented config and the catalog."""
    root = Path(root).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        cfg = root / CONFIG_NAME
        if not cfg.exists():
            write_text_atomic(cfg, DEFAULT_TOML)
        project = Project(root=root, settings=load_settings(cfg))
        for d in project.layout_dirs():
            d.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise SailsError(
            f"cannot create the project space at {root}: permission denied ({exc.filename})",
            hint="choose a writable folder",
        ) from None
    except OSError as exc:
        raise SailsError(f"cannot create the project space at {root}: {exc.strerror}") from None
    cat = project.catalog
    cat.dump_schema(project.schemas / "catalog.sql")
    # Job-side code for platform (CANFAR) jobs, which cannot pip-install our package.
    from sails.execution.runtime import ensure_runtime

    ensure_runtime(project.root)
    return project
