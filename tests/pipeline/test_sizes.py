"""Disk awareness end to end on two simulated MOUS, in one shared run under a budget too
small for both at once: they run one after the other and the sampled project space never
exceeds the budget; the size model's predictions beside the measured bytes of every stage
(printed as a table); cleanup leaving little more than the final products and the delivery,
every final product still opening."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline_helpers import ingested_project, sails_cmd, tap_routes
from sails.fakes.archive import ArchiveServer
from sails.stages.sizing import du

pytestmark = pytest.mark.casa

FACTOR = 1.5  # the tolerance: prediction within x1.5 of the measured bytes


BUDGET_GB = 0.25  # one tiny MOUS peaks at 0.14-0.19 GB: two at once would not fit
PROPOSAL = "2023.1.00777.S"


@pytest.fixture(scope="module")
def two_mous(tmp_path_factory):
    """Two tiny simulated MOUS of one project (seconds to build)."""
    from sails.sim import load_truth, simulate_project
    from sails.sim.presets import tiny

    spec = replace(tiny()[0], proposal_id=PROPOSAL)
    # The second MOUS observes other sky: two MOUS of one source must be on disk together
    # (tests/pipeline/test_admission.py), which is not what this budget test is about.
    other = replace(spec, targets=[replace(t, name=f"{t.name} B", dec_deg=t.dec_deg + 1.0)
                                   for t in spec.targets])
    root = tmp_path_factory.mktemp("two-mous")
    return root, [load_truth(p) for p in simulate_project(root, [spec, other], seed=3)]


@pytest.fixture(scope="module")
def archive(two_mous):
    root, _ = two_mous
    with ArchiveServer(root, extra_routes=tap_routes(root / "obscore.xml")) as server:
        yield server


class Sampler(threading.Thread):
    """The project space's bytes, sampled (time, bytes) while a run goes on."""

    def __init__(self, root: Path, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.every_s = root, every_s
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), du(self.root)))
            self.stop.wait(self.every_s)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, archive, two_mous):
    """One run shared by every test here: both MOUS, two slots, a budget too small for two
    MOUS at once, project space sampled throughout."""
    project = ingested_project(tmp_path_factory.mktemp("sizes") / "p", archive,
                               two_mous[1][0])
    assert len(project.catalog.mous_ids()) == 2
    sampler = Sampler(project.root)
    sampler.start()
    env = dict(os.environ, SAILS_STORAGE__BUDGET_GB=str(BUDGET_GB))
    proc = sails_cmd(project.root, "run", "-j", "2", env=env)
    out = proc.communicate(timeout=900)[0]
    sampler.stop.set()
    sampler.join()
    return project, proc.returncode, out, sampler.samples


def test_budget_runs_two_mous_one_after_the_other(full_run):
    project, code, out, samples = full_run
    assert code == 0, out
    cat = project.catalog
    budget = BUDGET_GB * 1e9
    events = cat.events()

    def first(mous: str, stage: str, to: str) -> float:
        return min(e["at"] for e in events if e["mous_id"] == mous and e["stage"] == stage
                   and e["to_status"] == to)

    a, b = sorted(cat.mous_ids(), key=lambda m: first(m, "download", "running"))
    assert all(s.status in ("done", "skipped") for s in cat.stages()), out
    a_done = first(a, "cleanup", "done")
    b_start = first(b, "download", "running")
    assert b_start >= a_done, "the second MOUS started before the first one was cleaned up"
    held = [e for e in events if e["mous_id"] == b and e["stage"] == "download"
            and e["to_status"] == "blocked"]
    assert held and "bytes" in held[0]["reason"] and "budget" in held[0]["reason"], held
    peak_a = max(n for t, n in samples if t < b_start)
    peak = max(n for _, n in samples)
    print(f"\nbudget {budget:.0f} bytes; peak of the first MOUS alone {peak_a}; "
          f"peak of the whole run {peak} ({peak / budget:.2f} of the budget); "
          f"{len(samples)} samples; held: {held[0]['reason']}")
    assert 2 * peak_a > budget  # the two MOUS at once would not have fitted
    assert peak <= budget


def test_predictions_within_a_factor_of_the_measured_sizes(full_run):
    project, code, out, _ = full_run
    assert code == 0, out
    rows = project.catalog.stages()
    print(f"\n{'stage':<13} {'target':<18} {'predicted peak':>15} {'predicted':>12} "
          f"{'measured':>12} {'ratio':>6}")
    bad = []
    for r in rows:
        ratio = (r.predicted_bytes / r.measured_bytes) if r.measured_bytes else None
        print(f"{r.stage:<13} {r.target[:18]:<18} {r.predicted_peak_bytes or 0:>15} "
              f"{r.predicted_bytes or 0:>12} {r.measured_bytes or 0:>12} "
              f"{'-' if ratio is None else f'{ratio:.2f}':>6}")
        assert r.status == "done" or r.status == "skipped", (r.label, r.status, r.error)
        if r.status != "done":
            continue
        assert r.predicted_bytes is not None and r.measured_bytes is not None, r.label
        if r.measured_bytes == 0 or r.predicted_bytes == 0:
            if r.measured_bytes != r.predicted_bytes:
                bad.append((r.label, r.predicted_bytes, r.measured_bytes))
        elif not 1 / FACTOR <= ratio <= FACTOR:
            bad.append((r.label, r.predicted_bytes, r.measured_bytes))
    assert not bad, bad
    show = _cli(project.root, "show", rows[0].mous_id)
    assert "predicted" in show.stdout and "measured" in show.stdout, show.stdout
    split = next(r for r in rows if r.stage == "split")
    assert f"{split.predicted_bytes / 1e6:.1f}" in show.stdout
    assert f"{split.measured_bytes / 1e6:.1f}" in show.stdout


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    proc = sails_cmd(root, *args)
    out = proc.communicate(timeout=120)[0]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def _product_files(p: dict) -> Path:
    """A product's bytes on disk: a self-cal weblog page comes with its folder of plots."""
    path = Path(p["path"])
    return path.parent if p["kind"] == "selfcal_weblog" else path


def _final(project) -> list[dict]:
    return [p for p in project.catalog.products() if not p.get("removed_at")]


def test_cleanup_leaves_products_and_delivery_and_they_open(full_run):
    project, code, out, samples = full_run
    assert code == 0, out
    final = _final(project)
    removed = [p for p in project.catalog.products() if p.get("removed_at")]
    assert {p["kind"] for p in removed} >= {"split_ms", "selfcal_ms"}, removed
    for p in removed:
        assert not Path(p["path"]).exists(), p["path"]
    for p in final:  # the catalog and the disk agree
        assert Path(p["path"]).exists(), p["path"]
    paths = {_product_files(p) for p in final}
    kept = sum(du(q) for q in paths if not any(q != o and q.is_relative_to(o) for o in paths))
    space = du(project.root)
    print(f"\nproject space {space} bytes; final products + delivery {kept} bytes; "
          f"ratio {space / kept:.3f}; peak during the run {max(n for _, n in samples)} bytes")
    assert space <= 1.3 * kept
    from astropy.io import fits

    opened = 0
    for p in final:
        if p["path"].endswith(".fits"):
            with fits.open(p["path"]) as hdul:
                assert hdul[0].data is not None and hdul[0].data.size > 0
            opened += 1
    assert opened >= 6
    dry = _cli(project.root, "cleanup", "--dry-run")
    assert dry.returncode == 0 and "would free 0 GB" in dry.stdout, dry.stdout
    du_out = _cli(project.root, "du")
    assert du_out.returncode == 0 and "project space" in du_out.stdout, du_out.stdout
