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


def test_owner_of_another_pid_space_is_not_judged_by_its_pid(tmp_path):
    """Issue #22: host+pid alone made a live owner in another container (same host name)
    look dead. Only an owner of this host *and* pid space (boot id, pid namespace) whose
    process has ended is recovered at once; others wait for their lease to expire."""
    from sails.catalog.model import new_owner, owner_is_dead, pid_space

    cat = _make(tmp_path / "c.sqlite", 3)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    import socket
    host = socket.gethostname()
    mine_dead = f"run@{host}:{gone.pid}:abcd1234:{pid_space()}"
    other_space = f"run@{host}:{gone.pid}:abcd1234:{'0' * 8}"
    old_format = f"run@{host}:{gone.pid}:abcd1234"
    assert owner_is_dead(mine_dead)
    assert not owner_is_dead(other_space) and not owner_is_dead(old_format)
    assert not owner_is_dead(new_owner())  # this very process
    for owner in (mine_dead, other_space, old_format):
        assert cat.claim_next(owner, lease_seconds=600) is not None
    recovered = cat.recover_dead_owners()
    assert [r.lease_owner for r in recovered] == [None]
    assert {r.lease_owner for r in cat.stages(status="running")} == {other_space, old_format}
