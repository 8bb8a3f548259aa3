"""Disk admission on hand-made catalogs (no CASA, no network): a new MOUS waits while the
one in progress still has growth ahead (its cleanup not yet done), starts once it is
cleaned up; a stage that failed on a full disk is retried by the next run; the disk is
walked once per catalog change, not on every claim attempt."""

from __future__ import annotations

import os

from sails.catalog import Block, Failure, Product, new_owner
from sails.project import init_project, open_project
from sails.stages import sizing

A, B = "uid://A001/X1/Xa", "uid://A001/X1/Xb"
DELIVERY = 20_000_000  # each MOUS's listed products: 20 MB
OWNER = new_owner("test")


def _project(root, budget_gb: float):
    project = init_project(root)
    (project.root / "sails.toml").write_text(
        f"[storage]\nbudget_gb = {budget_gb}\nfree_floor_gb = 0\n")
    project = open_project(project.root)
    cat = project.catalog
    for m in (A, B):
        cat.upsert_mous({"mous_id": m, "num_asdms": 1})
        cat.upsert_target({"mous_id": m, "alma_source_name": "Src",
                           "obs_id": f"{m}.source.Src.spw.1"})
        cat.add_file(m, f"https://archive.example/{m[-2:]}.ms.tgz", "product",
                     filename=f"{m[-2:]}_calibrated.ms.tgz", size=DELIVERY)
    return project


def _finish(project, mous: str, stages: list[str], products=()) -> None:
    cat = project.catalog
    for stage in stages:
        for row in cat.stages(mous, stage):
            claimed = cat.claim(row.id, OWNER)
            cat.complete(claimed.id, OWNER, list(products) if stage == "download" else [])
            cat.set_sizes(row.id, measured=0)


def _sparse(path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(n)  # st_size n, next to nothing on the disk


def _claim(project):
    return sizing.claim_admitted(project, OWNER, 60, view=sizing.DiskView())


def test_new_mous_waits_for_the_one_in_progress_to_be_cleaned_up(tmp_path):
    # One MOUS's predicted peak: delivery + split (upper bound 1.1x) + self-cal (9.7x that):
    # about 0.25 GB. The budget holds one, not two.
    project = _project(tmp_path / "p", budget_gb=0.4)
    cat = project.catalog
    assert 0.1e9 < sizing.mous_peak(project, A) < 0.4e9 < 2 * sizing.mous_peak(project, A)
    first = _claim(project)
    assert (first.mous_id, first.stage) == (A, "download")
    ms = project.mous_dir(A) / "a.ms"
    ms.mkdir(parents=True)
    _sparse(ms / "table.f0", DELIVERY)
    cat.complete(first.id, OWNER, [Product("ms", str(ms))])
    cat.set_sizes(first.id, measured=DELIVERY)
    second = _claim(project)
    assert (second.mous_id, second.stage) == (A, "restore")
    cat.skip(second.id, OWNER, "an SRDP restore was downloaded")
    second = _claim(project)
    assert (second.mous_id, second.stage) == (A, "verify")
    assert _claim(project) is None  # a free slot, but B's download may not start beside A
    held = cat.find_stage(B, "download")
    assert held.status == "blocked" and held.reason_code == Block.DISK.value
    assert "bytes" in held.reason and "budget" in held.reason, held.reason
    cat.complete(second.id, OWNER, [])
    work = project.mous_dir(A) / "auto_selfcal" / "work.ms"
    _sparse(work, 200_000_000)  # A's intermediates: with them B does not fit
    _finish(project, A, ["split", "findcont", "auto_selfcal", "selfcal", "image"])
    assert _claim(project).stage == "cleanup"
    assert cat.find_stage(B, "download").status == "blocked"
    work.unlink()  # what cleanup removes
    cat.complete(cat.find_stage(A, "cleanup").id, OWNER, [])
    started = _claim(project)
    assert (started.mous_id, started.stage) == (B, "download")


def test_disk_full_failure_is_retried_by_the_next_run(tmp_path):
    project = _project(tmp_path / "p", budget_gb=10)
    cat = project.catalog
    row = _claim(project)
    cat.fail(row.id, OWNER, f"{sizing.DISK_FULL_TEXT}: no space left", Failure.DISK_FULL)
    other = cat.claim(cat.find_stage(B, "download").id, OWNER)
    cat.fail(other.id, OWNER, "HTTP 404")  # an ordinary failure stays failed
    back = sizing.requeue_disk_full(project)
    assert [r.id for r in back] == [row.id]
    assert cat.stage(row.id).status == "pending" and cat.stage(other.id).status == "failed"


def test_disk_is_walked_once_per_catalog_change(tmp_path):
    project = _project(tmp_path / "p", budget_gb=10)
    view = sizing.DiskView()
    cat = project.catalog
    for _ in range(5):
        view.du(cat, project.root)
    assert view.walks == 1
    cat.block(cat.find_stage(A, "download").id, None, Block.USER, "test")  # an event
    view.du(cat, project.root)
    assert view.walks == 2
    assert os.path.isdir(project.root)


def test_a_source_partner_goes_first_or_says_why_it_cannot(tmp_path):
    """A and B observe one source (their source stage reads both), C another sky: A waits
    on disk for B, so B starts before the older C; when B does not fit beside A, its row
    says that A waits for it and what to change (not a silent pending forever)."""
    b, c = "uid://A001/X1/Xb", "uid://A001/X1/Xc"
    project = init_project(tmp_path / "p")
    (project.root / "sails.toml").write_text("[storage]\nbudget_gb = 0.4\nfree_floor_gb = 0\n")
    project = open_project(project.root)
    cat = project.catalog
    for m, name, ra in ((A, "Src", 10.0), (c, "Other", 50.0), (b, "Src", 10.0)):
        cat.upsert_mous({"mous_id": m, "num_asdms": 1})
        cat.upsert_target({"mous_id": m, "alma_source_name": name, "ra": ra, "dec": 5.0,
                           "obs_id": f"{m}.source.{name}.spw.1"})
        cat.add_file(m, f"https://archive.example/{m[-2:]}.ms.tgz", "product",
                     filename=f"{m[-2:]}_calibrated.ms.tgz", size=DELIVERY)
    grouped = cat.regroup_sources()
    assert sorted(sorted(g.keys) for _, g in grouped.sources if len(g.keys) > 1) == [
        [(A, "Src"), (b, "Src")]], grouped
    first = _claim(project)
    assert (first.mous_id, first.stage) == (A, "download")
    work = project.mous_dir(A) / "auto_selfcal" / "work.ms"
    _sparse(work, 200_000_000)  # A's intermediates, kept until the source stage has run
    cat.complete(first.id, OWNER, [])
    cat.set_sizes(first.id, measured=0)
    _finish(project, A, ["restore", "verify", "split", "findcont", "auto_selfcal", "selfcal",
                         "image"])
    assert _claim(project) is None  # A's cleanup waits for the source; B does not fit
    held = cat.find_stage(b, "download")
    assert held.status == "blocked" and held.reason_code == Block.DISK.value
    assert "source 'Src'" in held.reason and A in held.reason, held.reason
    assert "storage.budget_gb" in held.reason, held.reason
    assert cat.find_stage(c, "download").status == "pending"  # C did not jump ahead
    work.unlink()  # room for B beside A
    started = _claim(project)
    assert (started.mous_id, started.stage) == (b, "download")
