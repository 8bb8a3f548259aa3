"""Helpers for the end-to-end pipeline tests: a project ingested from a served sim archive."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from sails.archive import register_srdp
from sails.demo import ingest_from_server, tap_routes  # noqa: F401 (re-exported for tests)
from sails.ids import parse_uid
from sails.project import init_project


def toy_module(tmp_path: Path, monkeypatch, name: str, text: str) -> str:
    """Write ``text`` as module ``name`` on the import path for this test only. Any module of
    that name imported by an earlier test goes from ``sys.modules`` (another test's toy stage
    of the same name would otherwise run in its place)."""
    folder = tmp_path / "toy_modules"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def ingested_project(root: Path, server, truth: dict, extra_bad_mous: str | None = None):
    """Init a project and ingest the served MOUS through TAP + DataLink + SRDP URL (as the
    demo does), plus optionally a MOUS whose restore URL will answer 404."""
    project = init_project(root)
    ingest_from_server(project, server, [truth["proposal_id"]], actor="test")
    if extra_bad_mous:
        project.catalog.upsert_mous({"mous_id": extra_bad_mous, "num_asdms": 1})
        project.catalog.upsert_target({"mous_id": extra_bad_mous, "alma_source_name": "Ghost",
                                       "obs_id": f"{extra_bad_mous}.source.Ghost.spw.1"})
        register_srdp(project.catalog, extra_bad_mous,
                      f"{server.url}/srdp/{parse_uid(extra_bad_mous).fs}/")
    return project


def sails_cmd(project_root: Path, *args: str, env: dict | None = None,
              **kw) -> subprocess.Popen:
    env = dict(env if env is not None else os.environ,
               PYTHONPATH=os.pathsep.join(sys.path), NO_COLOR="1", COLUMNS="200")
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
