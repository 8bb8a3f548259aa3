"""The cleanup stage on a hand-made MOUS (no CASA): what it removes and keeps, its dry run,
and crash safety (SIGKILL in the middle of removing, rerun: catalog and disk agree)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from sails.catalog import Product, new_owner
from sails.project import init_project
from sails.stages.cleanup import PLAN_NAME, plan

MOUS = "uid://A001/X1/X2"


def _file(path: Path, n: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * n)
    return str(path)


def _dir(path: Path, n: int) -> str:
    _file(path / "table.f0", n)
    return str(path)


def _project(root: Path, raw: bool = False):
    project = init_project(root)
    cat = project.catalog
    cat.upsert_mous({"mous_id": MOUS, "num_asdms": 1})
    cat.upsert_target({"mous_id": MOUS, "alma_source_name": "Src A",
                       "obs_id": f"{MOUS}.source.Src_A.spw.1"})
    d = project.mous_dir(MOUS)
    made = {
        "download": [Product("ms", _dir(d / "eb.ms", 5000))],
        "split": [Product("split_ms", _dir(d / "splits" / "eb_targets.ms", 4000)),
                  Product("listobs", _file(d / "splits" / "eb_targets.listobs.txt", 10))],
        "verify": [],
        "findcont": [],
        "auto_selfcal": [],
        "selfcal": [Product("selfcal_ms", _dir(d / "auto_selfcal" / "a.selfcal.ms", 3000),
                            "Src A"),
                    Product("gaintable", _dir(d / "auto_selfcal" / "a.g", 20), "Src A")],
        "image": [Product("cont_image", _file(d / "products" / "Src_A" / "c.pbcor.fits", 100),
                          "Src A")],
    }
    if raw:  # a raw delivery, restored into eb.ms
        r = project.datasets_raw / d.name
        made["download"] = [Product("raw_asdm", _dir(r / "raw" / "eb.asdm.sdm", 3000)),
                            Product("file", _file(r / "calibration" / "eb.ms.calapply.txt", 9))]
        made["restore"] = [Product("ms", str(d / "eb.ms"))]
    _file(d / "auto_selfcal" / "eb_targets.ms" / "f", 4000)  # working copy, not a product
    _file(d / "auto_selfcal" / "result.json", 5)
    _file(d / "products" / "Src_A" / "casa" / "c.image" / "f", 2000)
    owner = new_owner("test")
    for stage, products in made.items():
        for row in cat.stages(MOUS, stage):
            claimed = cat.claim(row.id, owner)
            cat.complete(claimed.id, owner, [p for p in products
                                             if p.target == row.target])
    return project


def _agree(project) -> None:
    for p in project.catalog.products(MOUS):
        assert Path(p["path"]).exists() == (p["removed_at"] is None), p


def test_cleanup_removes_intermediates_keeps_products(tmp_path):
    project = _project(tmp_path / "p")
    would = {r.path.name for r in plan(project, MOUS)}
    assert would == {"eb_targets.ms", "a.selfcal.ms", "casa"}, would
    out = subprocess.run([sys.executable, "-m", "sails.cli.entry", "-p", str(project.root),
                          "cleanup", "--dry-run"], capture_output=True, text=True)
    assert out.returncode == 0 and "would free" in out.stdout and "casa" in out.stdout
    assert all(r.path.exists() for r in plan(project, MOUS))  # a dry run removes nothing
    out = subprocess.run([sys.executable, "-m", "sails.cli.entry", "-p", str(project.root),
                          "cleanup"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    d = project.mous_dir(MOUS)
    assert (d / "eb.ms").exists() and (d / "auto_selfcal" / "a.g").exists()
    assert (d / "auto_selfcal" / "result.json").exists()
    assert (d / "products" / "Src_A" / "c.pbcor.fits").exists()
    assert not (d / "products" / "Src_A" / "casa").exists()
    assert not (d / "auto_selfcal" / "eb_targets.ms").exists()
    assert project.catalog.find_stage(MOUS, "cleanup").status == "done"
    _agree(project)


def test_cleanup_removes_a_restored_raw_delivery_and_keeps_the_restored_ms(tmp_path):
    project = _project(tmp_path / "p", raw=True)
    raw = project.datasets_raw / project.mous_dir(MOUS).name
    would = {r.path for r in plan(project, MOUS)}
    assert raw in would and project.mous_dir(MOUS) / "eb.ms" not in would, would
    out = subprocess.run([sys.executable, "-m", "sails.cli.entry", "-p", str(project.root),
                          "cleanup"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not raw.exists() and (project.mous_dir(MOUS) / "eb.ms" / "table.f0").is_file()
    _agree(project)


def test_sigkill_during_cleanup_then_rerun_agrees(tmp_path):
    project = _project(tmp_path / "p")
    script = textwrap.dedent(f"""
        import os, shutil, signal, sys
        real = shutil.rmtree
        def rmtree_then_die(path, *a, **k):
            real(path, *a, **k)
            os.kill(os.getpid(), signal.SIGKILL)  # after the first removal
        shutil.rmtree = rmtree_then_die
        from sails.cli.entry import main
        sys.argv = ["sails", "-p", {str(project.root)!r}, "cleanup"]
        main()
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    d = project.mous_dir(MOUS)
    assert (d / PLAN_NAME).is_file()  # the list was written before anything went
    assert project.catalog.find_stage(MOUS, "cleanup").status == "running"
    rerun = subprocess.run([sys.executable, "-m", "sails.cli.entry", "-p", str(project.root),
                            "run"], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert project.catalog.find_stage(MOUS, "cleanup").status == "done"
    assert not (d / PLAN_NAME).exists()
    removed = {Path(p["path"]).name for p in project.catalog.products(MOUS)
               if p["removed_at"]}
    assert removed == {"eb_targets.ms", "a.selfcal.ms"}, removed
    _agree(project)
