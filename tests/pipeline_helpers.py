"""Helpers for the end-to-end pipeline tests: a project ingested from a served sim archive."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from sails.archive import QueryFilters, ingest_query, register_srdp
from sails.ids import parse_uid
from sails.project import init_project
from sails.sim.tap import ObsCoreTable, handle_tap_sync


def tap_routes(obscore_file: Path) -> dict:
    table = ObsCoreTable.from_file(obscore_file)
    return {"/tap/sync": lambda handler, params: handle_tap_sync(handler, params, table)}


def ingested_project(root: Path, server, truth: dict, extra_bad_mous: str | None = None):
    """Init a project and ingest the served MOUS through TAP + DataLink + SRDP URL."""
    project = init_project(root)
    ingest_query(project.catalog, QueryFilters(projects=[truth["proposal_id"]]),
                 project.settings.archive, tap_url=f"{server.url}/tap",
                 datalink_url=f"{server.url}/datalink/sync")
    mous = truth["mous_uid"]
    register_srdp(project.catalog, mous, f"{server.url}/srdp/{parse_uid(mous).fs}/")
    if extra_bad_mous:
        project.catalog.upsert_mous({"mous_id": extra_bad_mous, "num_asdms": 1})
        project.catalog.upsert_target({"mous_id": extra_bad_mous, "alma_source_name": "Ghost",
                                       "obs_id": f"{extra_bad_mous}.source.Ghost.spw.1"})
        register_srdp(project.catalog, extra_bad_mous,
                      f"{server.url}/srdp/{parse_uid(extra_bad_mous).fs}/")
    return project


def sails_cmd(project_root: Path, *args: str, extra_env: dict[str, str] | None = None,
              **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), NO_COLOR="1",
               COLUMNS="200", **(extra_env or {}))
    return subprocess.Popen([sys.executable, "-m", "sails.cli.entry", "-p", str(project_root),
                             *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def starts_per_stage(catalog) -> Counter:
    """How many times each stage row was started (pending -> running events)."""
    return Counter((e["mous_id"], e["stage"], e["target"]) for e in catalog.events()
                   if e["from_status"] == "pending" and e["to_status"] == "running")


def final_products(project) -> set[tuple[str, str, str, str]]:
    """Products as (stage, target, kind, path relative to the project)."""
    out = set()
    for p in project.catalog.products():
        path = Path(p["path"])
        if path.is_relative_to(project.root):
            path = path.relative_to(project.root)
        out.add((p["stage"], p["target"], p["kind"], str(path)))
    return out
