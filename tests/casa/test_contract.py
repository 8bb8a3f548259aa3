"""The job contract (sails.casa.contract): manifest schema and reader, path mapping, error
kinds as the runner and the local backend record them, cancellation, import boundaries.

Jobs run as real child processes through the local backend; none of these steps needs CASA
(no CASA log is set, so the runner does not import casatasks)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sails.casa import contract
from sails.config import Platform
from sails.execution.base import JobSpec
from sails.execution.local import LocalBackend
from sails.execution.paths import vm_mapper
from sails.project import init_project

SRC = Path(__file__).resolve().parents[2] / "src" / "sails"
pytestmark = pytest.mark.timeout(120)


# ----------------------------------------------------------------------------- schema
def test_manifest_round_trips_and_keeps_unknown_keys():
    m = contract.Manifest(job_id="j", ok=True, steps={"a": {"x": 1}}, timings={"a": 0.5},
                          warnings=["w"], started=1.0, finished=2.0, wall_s=1.0, host="h",
                          pid=7, log_path="/l", versions={"python": "3"},
                          extra={"future_field": [1, 2]})
    d = m.to_dict()
    assert d["future_field"] == [1, 2] and d["error_kind"] is None
    assert contract.Manifest.from_dict(json.loads(json.dumps(d))) == m


def test_old_manifests_are_still_read(tmp_path):
    # What the runner wrote before error_kind: an error text only, no versions on failure.
    (tmp_path / contract.MANIFEST_NAME).write_text(json.dumps({
        "job_id": "old", "ok": False, "steps": {}, "timings": {}, "warnings": [],
        "started": 1.0, "host": "h", "pid": 3, "log_path": None,
        "error": "RuntimeError: boom", "traceback": "Traceback ...", "wall_s": 0.1,
        "finished": 1.1}))
    m = contract.read_manifest(tmp_path)
    assert m is not None and not m.ok and m.error_kind == contract.CRASH
    assert contract.error_message(m.error) == "boom"
    # Missing keys take defaults; a non-dict file or garbage is no manifest.
    (tmp_path / contract.MANIFEST_NAME).write_text(json.dumps({"ok": True, "steps": None}))
    m = contract.read_manifest(tmp_path)
    assert m is not None and m.ok and m.steps == {} and m.error_kind is None
    (tmp_path / contract.MANIFEST_NAME).write_text("[1, 2]")
    assert contract.read_manifest(tmp_path) is None
    (tmp_path / contract.MANIFEST_NAME).write_text("{not json")
    assert contract.read_manifest(tmp_path) is None
    assert contract.read_manifest(tmp_path / "missing") is None


def test_step_outputs_and_their_paths(tmp_path):
    m = contract.Manifest(ok=True, steps={"plan": {"cubes": []}, "none": None})
    assert m.step("plan") == {"cubes": []} and m.step("none") is None
    assert contract.step_output(m.to_dict(), "plan") == {"cubes": []}
    assert contract.step_output(None, "plan") is None and m.step("nope") is None
    assert contract.output_path(tmp_path, "a/b.fits") == tmp_path / "a" / "b.fits"
    # An absolute path is the job's own view of its folder: only the name is kept.
    assert contract.output_path(tmp_path, "/arc/x/products/c.fits") == tmp_path / "c.fits"


def test_platform_paths_are_mapped_to_this_machine(tmp_path):
    plat = Platform(vm_prefix="/mnt/arc/projects/x", platform_prefix="/arc/projects/x")
    (tmp_path / contract.MANIFEST_NAME).write_text(json.dumps({
        "ok": True, "log_path": "/arc/projects/x/logs/j.casa.log",
        "steps": {"s": {"inputs": [{"source": "/arc/projects/x/a.ms", "name": "a.ms"}],
                        "elsewhere": "/arc/projects/x2/b", "rel": "c.fits"}}}))
    m = contract.read_manifest(tmp_path, vm_mapper(plat))
    assert m is not None and m.log_path == "/mnt/arc/projects/x/logs/j.casa.log"
    step = m.step("s")
    assert step["inputs"][0] == {"source": "/mnt/arc/projects/x/a.ms", "name": "a.ms"}
    assert step["elsewhere"] == "/arc/projects/x2/b" and step["rel"] == "c.fits"
    assert vm_mapper(Platform()) is None  # not mapped: the reader leaves paths alone


def test_fingerprints_live_in_the_contract(tmp_path):
    from sails.casa.steps.selfcal import input_fingerprint

    assert input_fingerprint is contract.input_fingerprint
    ms = tmp_path / "a.ms"
    ms.mkdir()
    (ms / "table.dat").write_bytes(b"x" * 10)
    fp = contract.input_fingerprint(ms)
    assert fp["table_bytes"] == 10 and contract.same_inputs([fp], [fp])
    assert contract.same_inputs([dict(fp, table_mtime=fp["table_mtime"] + 0.6)], [fp])
    assert not contract.same_inputs([dict(fp, table_mtime=fp["table_mtime"] + 1.5)], [fp])
    assert not contract.same_inputs([dict(fp, table_bytes=11)], [fp])
    assert not contract.same_inputs(None, [fp])


def test_error_kinds_of_exceptions():
    assert contract.error_kind_of(MemoryError()) == contract.OOM
    assert contract.error_kind_of(RuntimeError("std::bad_alloc")) == contract.OOM
    assert contract.error_kind_of(contract.BadInput("x")) == contract.BAD_INPUT
    assert contract.error_kind_of(contract.Diverged("x")) == contract.DIVERGED
    assert contract.error_kind_of(contract.Diverged("x", kind=contract.OOM)) == contract.OOM
    assert contract.error_kind_of(ValueError("x")) == contract.CRASH
    with pytest.raises(ValueError):
        contract.JobFailure("x", kind="nonsense")
    from sails.casa.imaging_plan import PlanError
    from sails.casa.steps.imaging import ImagingFailed

    assert contract.error_kind_of(PlanError("no spw")) == contract.BAD_INPUT
    assert contract.error_kind_of(ImagingFailed("diverged")) == contract.DIVERGED


# ----------------------------------------------------------------------------- real jobs
@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return init_project(tmp_path_factory.mktemp("contract") / "proj")


_n = 0


def make_job(project, steps, out: Path, timeout_s: float | None = 60) -> JobSpec:
    global _n
    _n += 1
    jid = f"test-contract-{_n}"
    payload = {"job_id": jid, "output_dir": str(out), "log_path": None, "cwd": None,
               "steps": steps}
    return JobSpec(job_id=jid, mous_id="uid://A001/X1/X1", stage="verify", target="",
                   payload=payload, output_dir=out, log_dir=project.logs / "contract",
                   timeout_s=timeout_s)


@pytest.mark.parametrize(("error", "kind"), [
    ("MemoryError", contract.OOM), ("BadInput", contract.BAD_INPUT),
    ("Diverged", contract.DIVERGED), ("RuntimeError", contract.CRASH)])
def test_runner_records_the_error_kind(project, tmp_path, error, kind):
    out = tmp_path / "out"
    res = LocalBackend(project).run(make_job(
        project, [{"op": "fail", "args": {"message": "no luck", "error": error}}], out))
    assert not res.ok and res.error_kind == kind
    assert res.error.startswith(f"{error}: no luck")
    # A failed job's folder lands beside its destination, never over it.
    assert not out.exists()
    m = contract.read_manifest(contract.failed_dir(out))
    assert m is not None and m.error_kind == kind and res.manifest == m.to_dict()


def test_killed_job_is_oom_and_timeout_is_timeout(project, tmp_path):
    res = LocalBackend(project).run(make_job(project, [{"op": "kill_self", "args": {}}],
                                             tmp_path / "k"))
    assert not res.ok and res.manifest is None and res.error_kind == contract.OOM
    res = LocalBackend(project).run(make_job(
        project, [{"op": "kill_self", "args": {"sig": int(signal.SIGTERM)}}], tmp_path / "t"))
    assert not res.ok and res.manifest is None and res.error_kind == contract.NO_MANIFEST
    t0 = time.monotonic()
    res = LocalBackend(project).run(make_job(
        project, [{"op": "sleep", "args": {"seconds": 30}}], tmp_path / "s", timeout_s=1.5))
    assert not res.ok and res.error_kind == contract.TIMEOUT and "timed out" in res.error
    assert time.monotonic() - t0 < 15


def test_cancel_kills_a_local_job_at_once(project, tmp_path):
    cancel = threading.Event()
    pids: list[int] = []

    def started(ref: str) -> None:
        pids.append(int(ref.split(":")[1]))
        threading.Timer(1.0, cancel.set).start()

    t0 = time.monotonic()
    res = LocalBackend(project).run(
        make_job(project, [{"op": "sleep", "args": {"seconds": 60}}], tmp_path / "c",
                 timeout_s=None), on_started=started, cancel=cancel)
    took = time.monotonic() - t0
    assert not res.ok and res.error_kind == contract.CANCELLED and res.manifest is None
    assert took < 3.0, took
    with pytest.raises(ProcessLookupError):
        os.killpg(pids[0], 0)  # the whole process group is gone
    assert not (tmp_path / "c").exists()
