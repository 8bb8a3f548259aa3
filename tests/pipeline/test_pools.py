"""Separate pools: a download never waits for (or holds) a CASA slot.

Two MOUS, one CASA slot, one download slot. MOUS A is downloaded; its job stage (a real
local CASA-runner child process) holds the only CASA slot and waits for a flag file. MOUS
B's download writes that flag only once it sees A's job running: with separate pools both
finish; with one pool for every stage, whichever is claimed first waits for the other in
vain (the job fails when its wait runs out, the download says it never saw the job).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pipeline_helpers import toy_module
from sails.catalog import new_owner
from sails.flows.engine import pool_slots, run_pipeline
from sails.pipeline import PIPELINE, Pool, Runs, Scope, Stage, StageTable
from sails.project import init_project, open_project

MOUS_A = "uid://A001/X77/X1"
MOUS_B = "uid://A001/X77/X2"
WAIT_S = 30.0  # generous: a CASA job starts slowly on a loaded machine

FETCH = '''
"""A toy download: waits (up to WAIT_S) until another MOUS's job is running, then says so
with a flag file that job waits for."""
import os
import time
from dataclasses import replace
from pathlib import Path

from sails.stages.base import Outcome

def run(ctx):
    if ctx.row.mous_id.endswith("X1"):
        return Outcome.done(reason="nothing to fetch")
    flag = ctx.project.root / "flag"
    deadline = time.monotonic() + float(os.environ["TOY_WAIT_S"])
    while time.monotonic() < deadline:
        if list(ctx.project.root.rglob(".nap.tmp-*")):  # the other MOUS's job is running
            flag.write_text("downloaded")
            return Outcome.done(reason="fetched while a CASA job held the slot")
        time.sleep(0.05)
    return Outcome.done(reason="never saw a CASA job running")
'''

NAP = '''
"""A toy CASA job stage: waits for the flag file the other MOUS's download writes."""
import os

from sails.stages.base import Outcome

def run(ctx):
    flag = ctx.project.root / "flag"
    ctx.run_casa([{"op": "wait_for_file", "name": "wait",
                   "args": {"path": str(flag), "timeout_s": float(os.environ["TOY_WAIT_S"])}}],
                 ctx.mous_dir / "nap")
    return Outcome.done(reason="the flag came")
'''


def _table(tmp_path: Path, monkeypatch) -> None:
    toy_module(tmp_path, monkeypatch, "toy_fetch", FETCH)
    toy_module(tmp_path, monkeypatch, "toy_nap", NAP)
    rows = list(PIPELINE.stages)
    rows[0] = replace(rows[0], module="toy_fetch")  # the real row (its pool) with a toy body
    rows.insert(1, Stage("nap", Scope.MOUS, ("download",), Runs.JOB, "toy_nap",
                         "Wait in a job."))
    monkeypatch.setattr(PIPELINE, "stages", StageTable(tuple(rows)).stages)


def _project(root: Path, separate: bool):
    project = init_project(root)
    for m in (MOUS_A, MOUS_B):
        project.catalog.upsert_mous({"mous_id": m})
    owner = new_owner("test")
    row = project.catalog.claim(project.catalog.find_stage(MOUS_A, "download").id, owner)
    project.catalog.complete(row.id, owner)
    (root / "sails.toml").write_text(
        (root / "sails.toml").read_text()
        .replace("casa_slots = 0", "casa_slots = 1")
        .replace("separate_pools = true", f"separate_pools = {str(separate).lower()}")
        .replace("parallel_mous = 2", "parallel_mous = 1"))
    return open_project(root)


def test_the_stage_table_puts_downloads_in_the_network_pool(monkeypatch):
    assert PIPELINE.get("download").pool == Pool.NETWORK
    assert all(st.pool == Pool.CPU for st in PIPELINE if st.name != "download")


@pytest.mark.casa
@pytest.mark.parametrize("separate", [True, False])
def test_a_download_proceeds_while_a_casa_job_holds_the_only_slot(tmp_path, monkeypatch,
                                                                  separate):
    _table(tmp_path, monkeypatch)
    # without separate pools the waits run out (short ones: the outcome is the same)
    monkeypatch.setenv("TOY_WAIT_S", str(WAIT_S if separate else 3.0))
    project = _project(tmp_path / "p", separate)
    pools = pool_slots(project.settings, 1, ["download", "nap"])
    summary = run_pipeline(project, until="nap")
    cat = project.catalog
    fetched = cat.find_stage(MOUS_B, "download")
    nap_a = cat.find_stage(MOUS_A, "nap")
    if separate:
        assert pools == {"network": (1, ["download"]), "cpu": (1, ["nap"])}
        assert fetched.status == "done"
        events = [e for e in cat.events(MOUS_B) if e["to_status"] == "done"]
        assert events[0]["reason"] == "fetched while a CASA job held the slot"
        assert nap_a.status == "done", nap_a.error
        assert summary.failed == 0
    else:  # the old behaviour, kept behind the switch: one pool for both, so they deadlock
        assert pools == {"all": (1, ["download", "nap"])}
        reasons = [e["reason"] for e in cat.events(MOUS_B) if e["to_status"] == "done"]
        assert reasons[:1] != ["fetched while a CASA job held the slot"] or (
            nap_a.status != "done")


BORROW = '''
"""A toy CPU stage that borrows a second CPU slot (as a chunked cube does for its chunks):
it tries for a while (never blocking the stage: two of them holding one slot each would wait
for each other), holds it a moment, gives it back."""
import time

from sails.execution import slots
from sails.stages.base import Outcome

def run(ctx):
    pool = slots.current(1)
    t0 = time.time()
    deadline = time.monotonic() + 2
    while not pool.try_acquire():
        if time.monotonic() > deadline:
            return Outcome.done(reason=f"{t0} 0 0 {time.time()} 0")
        time.sleep(0.01)
    tb, used = time.time(), pool.used
    time.sleep(0.3)
    tr = time.time()
    pool.release()
    return Outcome.done(reason=f"{t0} {tb} {tr} {time.time()} {used}")
'''


def _toy_cpu_stage(tmp_path: Path, monkeypatch, name: str, source: str, n_mous: int):
    """A project of ``n_mous`` downloaded MOUS and a toy orchestrator stage ``name`` (module
    ``source``) after the download: (project, MOUS ids)."""
    toy_module(tmp_path, monkeypatch, f"toy_{name}", source)
    rows = list(PIPELINE.stages)
    rows.insert(1, Stage(name, Scope.MOUS, ("download",), Runs.ORCHESTRATOR, f"toy_{name}",
                         f"Toy stage {name}."))
    monkeypatch.setattr(PIPELINE, "stages", StageTable(tuple(rows)).stages)
    project = init_project(tmp_path / "p")
    owner = new_owner("test")
    mous = [f"uid://A001/X77/X{i}" for i in range(1, n_mous + 1)]
    for m in mous:
        project.catalog.upsert_mous({"mous_id": m})
        row = project.catalog.claim(project.catalog.find_stage(m, "download").id, owner)
        project.catalog.complete(row.id, owner)
    return project, mous


def test_borrowed_cpu_slots_count_against_casa_slots(tmp_path, monkeypatch):
    project, mous = _toy_cpu_stage(tmp_path, monkeypatch, "borrow", BORROW, 3)
    summary = run_pipeline(project, until="borrow", max_parallel=2)
    assert summary.failed == 0
    runs = []
    for m in mous:
        done = [e for e in project.catalog.events(m)
                if e["stage"] == "borrow" and e["to_status"] == "done"]
        t0, tb, tr, t1, used = (float(x) for x in done[-1]["reason"].split())
        if tb:
            assert used == 2  # its own and the borrowed one: never more than casa_slots
        runs.append((t0, tb, tr, t1))
    # the last one runs alone for a while: it gets the second slot
    assert any(tb for _, tb, _, _ in runs), runs
    # while a stage holds a borrowed slot no other stage runs (the engine counts it)
    for i, (_, tb, tr, _) in enumerate(runs):
        for j, (u0, _, _, u1) in enumerate(runs):
            if i != j and tb:
                assert tr <= u0 or u1 <= tb, runs


RELEASE = '''
"""A toy CPU stage whose slot work ends early: it gives its slot back (as the image stages
do before drawing previews) and goes on a while without one."""
import time

from sails.execution import slots
from sails.stages.base import Outcome

def run(ctx):
    t0 = time.time()
    time.sleep(0.3)  # the CASA work
    slots.release_own()
    tr = time.time()
    time.sleep(1.5)  # the previews
    return Outcome.done(reason=f"{t0} {tr} {time.time()}")
'''


def test_a_stage_that_gives_its_slot_back_lets_the_next_one_start(tmp_path, monkeypatch):
    project, mous = _toy_cpu_stage(tmp_path, monkeypatch, "release", RELEASE, 2)
    summary = run_pipeline(project, until="release", max_parallel=1)
    assert summary.failed == 0
    runs = sorted(tuple(float(x) for x in [e for e in project.catalog.events(m)
                                           if e["stage"] == "release"
                                           and e["to_status"] == "done"][-1]["reason"].split())
                  for m in mous)
    (a0, a_rel, a1), (b0, b_rel, _b1) = runs
    # one slot: the second starts only once the first gave it back, and before it ended
    assert a_rel <= b0 < a1, runs
    # both held the slot's work one after another, never together
    assert b_rel > a_rel
