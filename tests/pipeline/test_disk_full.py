"""A file system that fills anyway: the datasets folder on a small tmpfs that the admission
(which sees the project space's own disk) cannot know about. The split fills it: the stage
ends ``failed`` with "disk full" (code ``disk_full``), the downloaded delivery is intact;
once the tmpfs is made bigger, ``sails run`` retries the split and completes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline_helpers import ingested_project, sails_cmd, tap_routes
from sails.catalog import Failure
from sails.fakes.archive import ArchiveServer
from sails.stages.sizing import DISK_FULL_TEXT

pytestmark = pytest.mark.casa

SMALL, BIG = "14m", "96m"  # the tiny delivery fits in 14 MiB, delivery + split do not


def _mount(folder: Path, size: str, remount: bool = False) -> None:
    opts = f"remount,size={size}" if remount else f"size={size}"
    cmd = ["mount", "-o", opts, str(folder)] if remount else [
        "mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)]
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture()
def small_datasets(tmp_path, sim_tiny):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with ArchiveServer(sim_tiny.path.parent,
                       extra_routes=tap_routes(sim_tiny.path / "obscore.xml")) as server:
        project = ingested_project(tmp_path / "p", server, sim_tiny.truth)
        folder = project.datasets
        folder.mkdir(parents=True, exist_ok=True)
        _mount(folder, SMALL)
        try:
            yield project, folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _run(project) -> tuple[int, str]:
    proc = sails_cmd(project.root, "run", "--until", "split", "-j", "1")
    out = proc.communicate(timeout=600)[0]
    return proc.returncode, out


def test_disk_full_fails_the_stage_keeps_products_and_resumes(small_datasets, sim_tiny):
    project, folder = small_datasets
    cat = project.catalog
    code, out = _run(project)
    assert code == 1, out
    split = cat.find_stage(sim_tiny.mous_uid, "split")
    assert split.status == "failed", (split.status, split.error, out)
    assert split.error.startswith(DISK_FULL_TEXT), split.error
    print(f"\nsplit on a full tmpfs: {split.error}")
    assert split.reason_code == Failure.DISK_FULL.value
    assert "disk full" in out
    assert cat.find_stage(sim_tiny.mous_uid, "download").status == "done"
    delivered = cat.products(sim_tiny.mous_uid, stage="download")
    ms = [p for p in delivered if p["kind"] == "ms"]
    assert ms and all(Path(p["path"]).is_relative_to(folder) for p in ms)

    def intact() -> None:
        from sails.catalog import Product

        for p in delivered:
            assert Path(p["path"]).exists(), p["path"]
            if p["bytes"] is not None:
                assert Product.measure(Path(p["path"])) == p["bytes"], p["path"]

    intact()
    _mount(folder, BIG, remount=True)
    code, out = _run(project)
    assert code == 0, out
    split = cat.find_stage(sim_tiny.mous_uid, "split")
    assert split.status == "done", (split.status, split.error)
    assert any("disk space freed" in (e["reason"] or "") for e in cat.events(
        sim_tiny.mous_uid) if e["stage"] == "split")
    intact()
    assert cat.products(sim_tiny.mous_uid, stage="split")
