"""CANFAR backend pieces that need no service: path mapping, names, the shipped runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from sails.config import Platform
from sails.errors import ConfigError
from sails.execution.base import JobSpec
from sails.execution.canfar import check_env, check_wire_args, session_name
from sails.execution.paths import (
    job_payload_for_platform,
    to_platform_path,
    to_vm_path,
    tree_to_platform,
    tree_to_vm,
)
from sails.execution.runtime import (
    ENTRY_NAME,
    JOB_SIDE_ALLOWED,
    STAMP_NAME,
    ensure_runtime,
    job_side_imports,
    runtime_sources,
    runtime_version,
)

PLAT = Platform(vm_prefix="/mnt/arc/projects/x", platform_prefix="/arc/projects/x")
HOSTILE = ["Serp 15; rm -rf ~", "O\"Brien's $(whoami) `id`", "Ünïcødé ☃ 星", "a/../../b", ""]


def test_paths_map_whole_components_both_ways():
    assert to_platform_path("/mnt/arc/projects/x/datasets/a.ms", PLAT) == \
        "/arc/projects/x/datasets/a.ms"
    assert to_platform_path("/mnt/arc/projects/x", PLAT) == "/arc/projects/x"
    assert to_vm_path("/arc/projects/x/logs/j.casa.log", PLAT) == \
        "/mnt/arc/projects/x/logs/j.casa.log"
    # Not under the prefix: a job cannot see it; a path a job reports elsewhere stays.
    with pytest.raises(ConfigError, match="outside"):
        to_platform_path("/mnt/arc/projects/x2/a", PLAT)
    assert to_vm_path("/scratch/tmp", PLAT) == "/scratch/tmp"
    # No mapping configured: identity.
    assert to_platform_path("/any/where", Platform()) == "/any/where"
    # A half mapping is refused when the settings are read, not when a job is submitted.
    with pytest.raises(ValidationError, match="both"):
        Platform(vm_prefix="/a")


def test_job_payload_and_trees_map_paths_but_not_names():
    payload = {
        "job_id": "split-uid___A001_X1_X2-20260101T000000",
        "output_dir": "/mnt/arc/projects/x/datasets/uid___A001_X1_X2/splits",
        "log_path": "/mnt/arc/projects/x/logs/uid___A001_X1_X2/j.casa.log",
        "cwd": None,
        "steps": [{"op": "split", "name": "s", "args": {
            "vis": ["/mnt/arc/projects/x/datasets/uid___A001_X1_X2/eb1.ms"],
            "field": HOSTILE[0], "other": "/mnt/arc/projects/x2/keep", "n": 3}}],
    }
    out = job_payload_for_platform(payload, PLAT)
    assert out["output_dir"] == "/arc/projects/x/datasets/uid___A001_X1_X2/splits"
    assert out["log_path"].startswith("/arc/projects/x/logs/")
    args = out["steps"][0]["args"]
    assert args["vis"] == ["/arc/projects/x/datasets/uid___A001_X1_X2/eb1.ms"]
    assert args["field"] == HOSTILE[0] and args["other"] == "/mnt/arc/projects/x2/keep"
    assert args["n"] == 3
    assert payload["output_dir"].startswith("/mnt/")  # input untouched
    assert tree_to_vm(tree_to_platform(payload, PLAT), PLAT) == payload
    with pytest.raises(ConfigError):
        job_payload_for_platform({**payload, "output_dir": "/elsewhere/out"}, PLAT)


def _job(target: str, stamp: str = "20260101T000000", stage: str = "image") -> JobSpec:
    from sails.stages.base import safe_name

    job_id = "-".join(p for p in [stage, "uid___A001_X1465_X15b",
                                  safe_name(target, 40) if target else ""] if p) + f"-{stamp}"
    return JobSpec(job_id=job_id, mous_id="uid://A001/X1465/X15b", stage=stage, target=target,
                   payload={}, output_dir=Path("/o"), log_dir=Path("/l"))


def test_session_names_are_safe_bounded_and_deterministic():
    names = set()
    for target in HOSTILE + ["x" * 500, "A B", "A_B"]:
        name = session_name(_job(target))
        assert len(name) <= 50
        assert all(c.islower() or c.isdigit() or c == "-" for c in name), name
        assert name[0].isalpha() and name[-1] != "-"
        # Same job, later attempt (new timestamp): same name, so it can be found again.
        assert session_name(_job(target, stamp="20270202T121212")) == name
        names.add(name)
    assert len(names) == len(HOSTILE) + 3  # "A B" and "A_B" slug alike but differ
    assert session_name(_job("t", stage="selfcal")) != session_name(_job("t"))


def test_wire_checks_reject_what_the_service_would_mangle():
    check_wire_args(["python3", "/arc/projects/x/.sails/runtime/0.1.0-abc/run_job.py"])
    for bad in ["/arc/my project/run.py", 'a"b', "a\\b", "x;y", ""]:
        with pytest.raises(ConfigError):
            check_wire_args(["python3", bad])
    check_env({"PYTHONPATH": "/arc/projects/x/.sails/runtime/v", "A": "b c"})
    for key, value in [("A", "x=y"), ("A", 'q"'), ("1A", "v"), ("A", "l1\nl2")]:
        with pytest.raises(ConfigError):
            check_env({key: value})


def test_runtime_is_shipped_once_per_version(tmp_path):
    rt = ensure_runtime(tmp_path)
    assert rt.name == runtime_version()
    assert rt.parent == tmp_path / ".sails" / "runtime"
    stamp = json.loads((rt / STAMP_NAME).read_text())
    assert stamp["version"] == rt.name
    for rel in runtime_sources():
        assert (rt / rel).is_file(), rel
    assert (rt / ENTRY_NAME).is_file() and (rt / "sails" / "__init__.py").is_file()
    # auto-selfcal is not in a CASA container: the selfcal step's import is shipped with it.
    assert (rt / "auto_selfcal" / "__init__.py").is_file()
    mtime = (rt / STAMP_NAME).stat().st_mtime_ns
    assert ensure_runtime(tmp_path) == rt
    assert (rt / STAMP_NAME).stat().st_mtime_ns == mtime  # not rewritten
    # A stale copy (no stamp: interrupted) is replaced... by a fresh folder of that version.
    (rt / STAMP_NAME).unlink()
    import shutil

    shutil.rmtree(rt)
    assert (ensure_runtime(tmp_path) / STAMP_NAME).is_file()


def test_job_side_code_imports_only_stdlib_numpy_and_casa():
    offending = {rel: names - JOB_SIDE_ALLOWED for rel, names in job_side_imports().items()
                 if names - JOB_SIDE_ALLOWED}
    assert not offending, (
        f"job-side modules import what a CASA container lacks: {offending}; "
        "import it in the orchestrator instead, or ship it in the runtime")


# Orchestrator-side packages that must never be needed by a job (sqlite3: jobs never
# touch the catalog).
BLOCKED = ["pydantic", "pydantic_settings", "prefect", "typer", "rich", "httpx", "httpx2",
           "canfar", "astroquery", "pyvo", "astropy", "sqlite3", "yaml", "auto_selfcal"]

RESTRICTED = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    runtime, blocked = sys.argv[1], set(json.loads(sys.argv[2]))
    # Nothing named sails but the shipped copy: drop every path holding another one.
    sys.path[:] = [p for p in sys.path if p and not __import__("os").path.isdir(
        __import__("os").path.join(p, "sails"))]
    sys.path.insert(0, runtime)

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ImportError(f"job side imported {name}")
            return None
    sys.meta_path.insert(0, Block())
    import sails, sails.casa
    from sails.casa.runner import load_steps
    steps = load_steps()
    for info in pkgutil.walk_packages(sails.__path__, "sails."):
        importlib.import_module(info.name)
    bad = [m.__name__ for n, m in list(sys.modules.items())
           if n.startswith("sails") and not (getattr(m, "__file__", "") or "").startswith(runtime)]
    print(json.dumps({"steps": sorted(steps), "outside": bad,
                      "mods": sorted(n for n in sys.modules if n.startswith("sails"))}))
""")


@pytest.mark.casa
def test_shipped_runtime_imports_with_a_restricted_path(tmp_path):
    from sails.casaenv import casa_env

    rt = ensure_runtime(tmp_path)
    env = casa_env()
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, "-c", RESTRICTED, str(rt), json.dumps(BLOCKED)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["outside"] == []
    assert {"write_text", "casa_versions"} <= set(data["steps"])
    assert "sails.casa.runner" in data["mods"]


def test_init_ships_the_runtime(tmp_path):
    from sails.project import init_project

    project = init_project(tmp_path / "p")
    rt = project.root / ".sails" / "runtime" / runtime_version()
    assert (rt / STAMP_NAME).is_file()
    assert os.access(rt / ENTRY_NAME, os.R_OK)


def test_job_side_code_parses_as_python_3_8():
    """Monolithic CASA 6.6 containers may ship Python 3.8: no newer syntax job-side."""
    import ast

    for rel, path in runtime_sources().items():
        ast.parse(path.read_text(), filename=rel, feature_version=(3, 8))


def test_selfcal_result_of_a_platform_job_is_reused(tmp_path):
    """auto-selfcal run as a platform job named its inputs by platform paths (and the
    platform's mtimes): a re-run of the MOUS stage must still recognise it and not rerun."""
    from sails.casa.contract import input_fingerprint
    from sails.stages.auto_selfcal import reusable_result
    from sails.stages.selfcal import STEP_NAME

    vm, plat = tmp_path / "vm" / "p", "/arc/projects/p"
    ms = vm / "datasets" / "m" / "splits" / "eb_targets.ms"
    ms.mkdir(parents=True)
    (ms / "table.dat").write_bytes(b"x" * 10)
    platform = Platform(vm_prefix=str(vm), platform_prefix=plat)
    seen = input_fingerprint(ms)
    seen["source"] = to_platform_path(ms, platform)
    seen["table_mtime"] = float(int(seen["table_mtime"])) + 0.5  # another filesystem's clock
    workdir = vm / "datasets" / "m" / "auto_selfcal"
    workdir.mkdir(parents=True)
    step = {"options": {"a": 1}, "inputs": [seen], "targets": {}}
    (workdir / "result.json").write_text(json.dumps({"ok": True, "steps": {STEP_NAME: step}}))
    assert reusable_result(workdir, [ms], {"a": 1}, platform) is not None
    assert reusable_result(workdir, [ms], {"a": 1}, Platform()) is None  # unmapped: other path
    assert reusable_result(workdir, [ms], {"a": 2}, platform) is None
    (ms / "table.dat").write_bytes(b"y" * 11)  # the split was redone: size differs
    assert reusable_result(workdir, [ms], {"a": 1}, platform) is None
