"""Many OS processes against one catalog: claims are exclusive, dead owners are recovered."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sails.catalog import Catalog

WORKER = Path(__file__).with_name("claim_worker.py")


def _make(path: Path, n: int) -> Catalog:
    cat = Catalog(path)
    with cat.write() as con:
        for i in range(n):
            cat.upsert_mous({"mous_id": f"uid://A001/X{i + 1:x}/X1"}, con=con)
    return cat


def _spawn(path, out, lease, hold=0.0):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(path), str(out), str(lease), str(hold)],
        env=env, stderr=subprocess.PIPE, text=True)


def test_eight_processes_claim_each_row_once(tmp_path):
    path = tmp_path / "c.sqlite"
    cat = _make(path, 500)
    procs = [_spawn(path, tmp_path / f"w{i}.txt", 600) for i in range(8)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    assert not any("locked" in e for e in errors)
    claimed = Counter()
    for i in range(8):
        claimed.update(int(x) for x in (tmp_path / f"w{i}.txt").read_text().split())
    rows = cat.stages(stage="download")
    assert len(rows) == 500
    assert all(r.status == "done" for r in rows)
    assert set(claimed) == {r.id for r in rows}
    assert max(claimed.values()) == 1
    starts = Counter(e["mous_id"] for e in cat.events() if e["to_status"] == "running")
    assert set(starts.values()) == {1}
    busy = sum(1 for i in range(8) if (tmp_path / f"w{i}.txt").read_text().strip())
    assert busy >= 2  # the race really was a race


def test_killed_owner_is_recovered_and_nothing_done_is_redone(tmp_path):
    path = tmp_path / "c.sqlite"
    cat = _make(path, 20)
    lease = 3.0
    victim = _spawn(path, tmp_path / "victim.txt", lease, hold=0.4)
    deadline = time.time() + 60
    while time.time() < deadline:
        done = len(cat.stages(stage="download", status="done"))
        if done >= 3:
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    held = cat.stages(stage="download", status="running")
    done_before = {r.id for r in cat.stages(stage="download", status="done")}
    assert len(held) == 1 and done_before  # killed while holding a lease
    # Before expiry nothing is recoverable; after it, the stage goes back to pending.
    assert cat.recover_expired() == []
    time.sleep(max(0.0, held[0].lease_expires - time.time()) + 0.1)
    recovered = cat.recover_expired()
    assert [r.id for r in recovered] == [held[0].id]
    survivor = _spawn(path, tmp_path / "survivor.txt", 600)
    assert survivor.wait(timeout=120) == 0
    rows = cat.stages(stage="download")
    assert all(r.status == "done" for r in rows)
    redone = {int(x) for x in (tmp_path / "survivor.txt").read_text().split()}
    assert held[0].id in redone
    assert not (redone & done_before)  # nothing finished was done again
    completions = Counter(e["mous_id"] for e in cat.events() if e["to_status"] == "done")
    assert set(completions.values()) == {1}
    assert cat.stage(held[0].id).attempts == 1
