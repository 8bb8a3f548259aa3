"""The main job: a whole survey in miniature, through the real code paths.

Simulates two MOUS (three targets, 60 deg phase errors on one), serves them on 127.0.0.1 as
the archive would (ObsCore TAP, DataLink, SRDP restore trees), ingests them with the real
ingest path, runs every stage through the orchestration engine, and writes the report.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sails.errors import UserInputError
from sails.execution.names import check_backend

MARKER = ".sails-demo"
# Any of these means "a real CANFAR is configured here": the demo then uses it as is.
CANFAR_ENV = ("CANFAR_URL", "CANFAR_TOKEN", "CANFAR_CERTIFICATE")


@dataclass
class DemoResult:
    project_root: Path
    report: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    summary: object = None
    mous: list[str] = field(default_factory=list)


def prepare_dir(directory: Path) -> Path:
    """A fresh demo folder; an earlier demo there is replaced, anything else refused."""
    root = directory.expanduser().resolve()
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise UserInputError(
                f"{root} exists and is not a sails demo folder",
                hint="choose an empty or new folder with --dir",
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("created by `sails demo`; safe to delete\n")
    return root


def tap_routes(obscore_file: Path) -> dict:
    """Mount a TAP sync service over an ObsCore table on an :class:`ArchiveServer`."""
    from sails.fakes.tap import ObsCoreTable, handle_tap_sync

    table = ObsCoreTable.from_file(obscore_file)
    return {"/tap/sync": lambda handler, params: handle_tap_sync(handler, params, table)}


def ingest_from_server(project, server, proposal_ids: list[str], actor: str = "demo",
                       srdp: bool = True) -> list[str]:
    """Ingest a served archive the way a user would: TAP query by project code, DataLink,
    then (``srdp``) the SRDP restore URL of every MOUS; a raw survey (preset ``raw``) has
    none, and its restore stage restores the raw deliveries. Returns the MOUS ids."""
    from sails.archive import QueryFilters, ingest_query, register_srdp
    from sails.ids import parse_uid

    _adql, records, _summary = ingest_query(
        project.catalog, QueryFilters(projects=sorted(proposal_ids)), project.settings.archive,
        tap_url=f"{server.url}/tap", datalink_url=f"{server.url}/datalink/sync")
    mous_ids = sorted({r.mous["mous_id"] for r in records.records})
    for mous in mous_ids if srdp else []:
        register_srdp(project.catalog, mous, f"{server.url}/srdp/{parse_uid(mous).fs}/",
                      actor=actor)
    return mous_ids


def canfar_configured() -> bool:
    """True when the environment names a CANFAR service or credentials for one.

    A saved ``canfar login`` alone does not count: the demo folder lives on this machine,
    so a real platform could only run its jobs with CANFAR_URL and the SAILS_PLATFORM__*
    path mapping set on purpose.
    """
    return any(os.environ.get(k) for k in CANFAR_ENV)


@contextlib.contextmanager
def fake_canfar_for_demo(root: Path, project_root: Path,
                         log: Callable[[str], None]) -> Iterator[dict[str, str]]:
    """Serve the local fake CANFAR for the demo project; its env is set for the duration.

    Jobs see the project through a symlink ``<demo>/arc/projects/demo`` (the platform
    path, as /arc/projects/<name> on CANFAR). The fake and the env go away on exit.
    """
    from sails.fakes.canfar import serve_for_project

    fake, env = serve_for_project(project_root,  # a random token
                                  platform_prefix=root / "arc" / "projects" / "demo")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    log(f"NOTE: backend canfar with no CANFAR_URL or credentials set: this demo starts a "
        f"LOCAL FAKE of the CANFAR session service at {fake.url}. Each CASA job becomes a "
        f"headless session that the fake runs on this machine, seeing the project as "
        f"{env['SAILS_PLATFORM__PLATFORM_PREFIX']}; downloads stay in this process. "
        f"Nothing is sent to CANFAR.")
    try:
        yield env
    finally:
        fake.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        log("local fake CANFAR service stopped")


def run_demo(directory: Path, *, preset: str = "demo", seed: int = 1,
             max_parallel: int | None = None, backend: str | None = None,
             log: Callable[[str], None] = print,
             run: Callable | None = None) -> DemoResult:
    from sails.project import init_project, open_project

    check_backend(backend)
    t_all = time.time()
    root = prepare_dir(directory)
    project = init_project(root / "project")
    log(f"project space: {project.root}")
    with contextlib.ExitStack() as stack:
        if backend == "canfar" and not canfar_configured():
            stack.enter_context(fake_canfar_for_demo(root, project.root, log))
            project = open_project(project.root)  # settings now see the fake's env
        elif backend == "canfar":
            log("CANFAR backend: using the CANFAR service configured in the environment")
        return _run(project, archive_dir=root / "archive", preset=preset, seed=seed,
                    max_parallel=max_parallel, backend=backend, log=log, run=run,
                    t_all=t_all)


def _run(project, *, archive_dir: Path, preset: str, seed: int, max_parallel: int | None,
         backend: str | None, log: Callable[[str], None], run: Callable | None,
         t_all: float) -> DemoResult:
    from sails.fakes.archive import ArchiveServer
    from sails.flows.engine import run_pipeline
    from sails.sim import load_truth, simulate_project
    from sails.sim.presets import RAW_PRESETS

    timings: dict[str, float] = {}

    t = time.time()
    log(f"simulating the '{preset}' survey (real CASA simulator) ...")
    paths = simulate_project(archive_dir, preset=preset, seed=seed)
    timings["simulate"] = time.time() - t
    truths = [load_truth(p) for p in paths]
    codes = sorted({tr["proposal_id"] for tr in truths})
    log(f"  {len(paths)} MOUS, {sum(len(tr['targets']) for tr in truths)} targets "
        f"in {timings['simulate']:.0f} s")

    with ArchiveServer(archive_dir, extra_routes=tap_routes(archive_dir / "obscore.xml")) as server:
        log(f"archive served at {server.url} (TAP, DataLink, SRDP restores)")
        t = time.time()
        raw = preset in RAW_PRESETS
        mous_ids = ingest_from_server(project, server, codes, srdp=not raw)
        timings["ingest"] = time.time() - t
        log(f"ingested {len(mous_ids)} MOUS via TAP + DataLink; "
            + ("raw deliveries: the restore stage restores them" if raw
               else "SRDP restores registered"))
        t = time.time()
        runner = run or run_pipeline
        pipeline = runner(project, max_parallel=max_parallel, backend=backend)
        timings["pipeline"] = time.time() - t
    report = None
    try:
        from sails.report import build_report

        t = time.time()
        report = build_report(project)
        timings["report"] = time.time() - t
    except ImportError:
        log("report: not available in this version")
    timings["total"] = time.time() - t_all
    return DemoResult(project.root, report, timings, pipeline, mous_ids)
