"""Fault injection on a small simulated run (issue #22, "must show").

* Catalog chaos: while `sails run` has stages running, a second process holds the catalog's
  write lock for longer than the busy timeout. No stage is dispatched twice, and the runs
  (two at once, up to split) finish after the lock is released.
* Random SIGKILLs of `sails run` and of its CASA children, each followed by `sails run`
  (after `sails retry` when a killed child left a stage failed): at the end every stage is
  done, no finished stage was redone or lost its products, and no stage ever had two CASA
  jobs at once (job processes sampled from /proc while the runs go, and the start/finish
  times of every manifest left).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from pipeline_helpers import ingested_project, sails_cmd, starts_per_stage, tap_routes
from sails.fakes.archive import ArchiveServer

pytestmark = [pytest.mark.casa, pytest.mark.timeout(900)]

BUSY_S = 2.0  # execution.catalog_busy_seconds for these runs
FAST = {"SAILS_EXECUTION__CATALOG_BUSY_SECONDS": str(BUSY_S),
        "SAILS_EXECUTION__RETRY_BACKOFF_SECONDS": "0.5",
        "SAILS_EXECUTION__LEASE_SECONDS": "60",
        "SAILS_IMAGING__MAKE_CUBES": "false"}
KILLS = int(os.environ.get("FAULT_KILLS", "8"))


@pytest.fixture(scope="module")
def archive(sim_tiny):
    with ArchiveServer(sim_tiny.path.parent,
                       extra_routes=tap_routes(sim_tiny.path / "obscore.xml")) as server:
        yield server


def _env() -> dict:
    return {**os.environ, **FAST}


def _finished(cat) -> bool:
    return all(s.status in ("done", "skipped") for s in cat.stages())


class JobWatch:
    """Samples /proc for CASA job processes and keeps, per stage row (the job id without
    its time stamp), every pid seen and when. A job process writes its stdout into its
    ``<job id>.stdout.log`` under the project, whether the local backend started it as
    ``python -m sails.casa <job file>`` or forked it from the warm CASA launcher."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)  # only this project's jobs (other tests may run the same MOUS)
        self.seen: dict[str, dict[int, list[float]]] = defaultdict(dict)
        self.overlaps: list[tuple[str, list[int]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def jobs(self) -> dict[int, str]:
        """Job processes (pid -> job key); a process a job forked (same stdout, its
        parent a job) is part of that job, not another one."""
        out, parents = {}, {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stdout = os.readlink(d / "fd" / "1")
                # state and parent from one read: a short-lived child of a job (auto-selfcal's
                # os.system) can end between two reads, and would then seem parentless
                state, ppid = (d / "stat").read_text().rsplit(") ", 1)[1].split()[:2]
            except (OSError, IndexError, ValueError):
                continue
            if state == "Z" or not stdout.endswith(".stdout.log"):
                continue
            if not stdout.startswith(self.root):
                continue
            out[int(d.name)] = Path(stdout).name.removesuffix(".stdout.log").rsplit("-", 1)[0]
            parents[int(d.name)] = int(ppid)
        return {pid: key for pid, key in out.items() if parents[pid] not in out}

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            now = time.time()
            by_key: dict[str, list[int]] = defaultdict(list)
            for pid, key in self.jobs().items():
                span = self.seen[key].setdefault(pid, [now, now])
                span[1] = now
                by_key[key].append(pid)
            self.overlaps += [(k, [(p, _ppid(p), _cmd(_ppid(p))) for p in pids])
                              for k, pids in by_key.items() if len(pids) > 1]

    def __enter__(self) -> JobWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def _manifest_spans(root: Path) -> dict[str, list[tuple[float, float]]]:
    """(started, finished) of every manifest in the project, per job key."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for f in root.rglob("result.json"):
        try:
            m = json.loads(f.read_text())
        except ValueError:
            continue
        if m.get("job_id") and m.get("started") and m.get("finished"):
            spans[m["job_id"].rsplit("-", 1)[0]].append((m["started"], m["finished"]))
    return spans


def test_catalog_held_past_busy_timeout_neither_double_dispatches_nor_stops(
        tmp_path, archive, sim_tiny):
    project = ingested_project(tmp_path / "p", archive, sim_tiny.truth)
    cat = project.catalog
    # Up to split: the dispatch is what is tested, not auto-selfcal (the slow part).
    procs = [sails_cmd(project.root, "run", "-j", "2", "--until", "split", env=_env())
             for _ in range(2)]
    deadline = time.time() + 300
    while time.time() < deadline and not cat.stages(stage="verify", status="running"):
        time.sleep(0.1)
    assert cat.stages(stage="verify", status="running"), "the runs never reached verify"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE'); print('held', flush=True)\n"
         "time.sleep(float(sys.argv[2])); c.execute('ROLLBACK')",
         str(project.catalog_path), str(BUSY_S * 4)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    t_held = time.time()
    holder.wait(timeout=60)
    t_released = time.time()
    assert t_released - t_held >= BUSY_S * 3  # the lock really outlasted the busy timeout
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-1500:] for o in outs]
    upto = [s for s in cat.stages() if s.stage in ("download", "restore", "verify", "split")]
    assert all(s.status in ("done", "skipped") for s in upto), [
        (s.label, s.status, s.error) for s in upto]
    # No double dispatch: a stage row is never claimed again while it runs (a stage whose
    # own catalog call met the lock is failed as transient and retried: sequentially).
    running: set[tuple] = set()
    for e in sorted(cat.events(), key=lambda e: e["id"]):
        key = (e["mous_id"], e["stage"], e["target"])
        if e["to_status"] == "running":
            assert key not in running, ("claimed twice at once", key)
            running.add(key)
        elif e["from_status"] == "running":
            running.discard(key)
    ends = [e["at"] for e in cat.events() if e["to_status"] in ("done", "skipped")]
    assert max(ends) > t_released  # the runs carried on after the release


def _kill(proc: subprocess.Popen, watch: JobWatch, rng: random.Random) -> str:
    """SIGKILL the run or (when one is running) one of its CASA jobs (its child, or its
    warm launcher's); what was killed."""
    children = [pid for pid in watch.jobs() if proc.pid in (_ppid(pid), _ppid(_ppid(pid)))]
    if children and rng.random() < 0.5:
        os.kill(rng.choice(children), signal.SIGKILL)
        return "job"
    proc.send_signal(signal.SIGKILL)
    return "run"


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[-80:]
    except OSError:
        return "?"


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_random_sigkills_lose_and_redo_nothing(tmp_path, archive, sim_tiny):
    project = ingested_project(tmp_path / "p", archive, sim_tiny.truth)
    cat = project.catalog
    rng = random.Random(22)
    killed: list[str] = []
    launched: list[int] = []
    done_seen: dict[int, int] = {}  # stage id -> its start count when first seen done
    products_seen: dict[int, set[str]] = {}
    t0 = time.time()
    with JobWatch(project.root) as watch:
        while len(killed) < KILLS and not _finished(cat):
            proc = sails_cmd(project.root, "run", "-j", "2", env=_env())
            launched.append(proc.pid)
            # Kill jobs of this run (it carries on) until the run itself is killed.
            while len(killed) < KILLS:
                time.sleep(rng.uniform(1.0, 6.0))
                if proc.poll() is not None:
                    break
                killed.append(_kill(proc, watch, rng))
                if killed[-1] == "run":
                    break
            proc.communicate(timeout=600)
            for s in cat.stages(status="failed"):  # a killed job: the astronomer retries
                assert "SIGKILL" in (s.error or ""), s.error
                cat.retry(s.mous_id, s.stage)
            starts = starts_per_stage(cat)
            for s in cat.stages():
                key = (s.mous_id, s.stage, s.target)
                if s.id in done_seen:  # finished once: never redone, products kept
                    assert s.status in ("done", "skipped") and starts[key] == done_seen[s.id]
                    assert products_seen[s.id] <= {p["path"] for p in cat.products(
                        s.mous_id, target=s.target, stage=s.stage)}
                elif s.status in ("done", "skipped"):
                    done_seen[s.id] = starts[key]
                    products_seen[s.id] = {p["path"] for p in cat.products(
                        s.mous_id, target=s.target, stage=s.stage)}
        final = sails_cmd(project.root, "run", "-j", "2", env=_env())
        out = final.communicate(timeout=600)[0]
    print(f"fault injection: {len(killed)} SIGKILLs ({killed.count('run')} of sails run, "
          f"{killed.count('job')} of CASA jobs) in {time.time() - t0:.0f} s")
    assert final.returncode == 0, out
    assert len(killed) == KILLS and "run" in killed and "job" in killed, killed
    stages = cat.stages()
    assert all(s.status in ("done", "skipped") for s in stages), [
        (s.label, s.status, s.error) for s in stages]
    for s in stages:
        for p in cat.products(s.mous_id, target=s.target, stage=s.stage):
            if p.get("removed_at") is None:  # cleanup removes intermediates on purpose
                assert Path(p["path"]).exists(), p["path"]  # no finished product lost
    # never two jobs of one stage at once
    assert not watch.overlaps, (watch.overlaps[:2], launched)
    for key, pids in watch.seen.items():
        spans = sorted(pids.values())
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), (key, spans)
    for key, spans in _manifest_spans(project.root).items():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), (key, spans)
