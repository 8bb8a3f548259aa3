"""Chunked cube imaging against the unchunked cube of the same data (real CASA, real SQLite).

The line MOUS of the imaging tests is imaged three times: unchunked, in 2 channel chunks,
and in 2 chunks with the orchestrator SIGKILLed after the first chunk finished (the rerun
must reuse the main job, the continuum job and that chunk, and give the uninterrupted run's
cube).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from imaging_data import LINE_TARGET, line_mous, register, simulate_split
from sails.casa import chunking
from sails.project import init_project, open_project
from sails.stages.execute import run_one

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

BASE_TOML = """
[execution]
casa_slots = {slots}

[imaging]
systemic_velocity_kms = 6.0
velocity_window_kms = 8.0
line_free_margin_kms = 3.0
previews = false
chunk_min_channels = {min_channels}
chunks = 2
"""


def _project(root: Path, data: dict, min_channels: int, slots: int = 2):
    proj = init_project(root)
    (proj.root / "sails.toml").write_text(BASE_TOML.format(min_channels=min_channels,
                                                           slots=slots))
    proj = open_project(proj.root)
    register(proj, data)
    return proj


def _cli(project, mous: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), COLUMNS="200", NO_COLOR="1")
    return subprocess.Popen([sys.executable, "-m", "sails.cli.entry", "-p", str(project.root),
                             "image", mous], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def cubes(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunked")
    data = simulate_split(root, line_mous(), seed=11)
    mous = data["mous_id"]
    out = {"data": data}
    for key, min_channels in (("whole", 0), ("chunked", 2)):
        proj = _project(root / key, data, min_channels)
        out[key] = (proj, run_one(proj, stages=["image"], mous=[mous]))

    # SIGKILL the orchestrator (its jobs die with it) once the first chunk has finished; one
    # slot, so the second chunk is running then.
    proj = _project(root / "killed", data, 2, slots=1)
    cli = _cli(proj, mous)
    deadline = time.time() + 900
    killed = False
    while time.time() < deadline and cli.poll() is None:
        done = [e for e in proj.catalog.events(mous) if e["reason"]
                and e["reason"].endswith("#00: finished")]
        if done:
            os.killpg(cli.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.2)
    cli.wait()
    mark = len(proj.catalog.events(mous))
    out["killed"] = (proj, killed, mark, cli.stdout.read().decode(errors="replace"))
    proj = open_project(proj.root)
    proj.catalog.recover_dead_owners()  # as `sails run` / `sails image` do first
    out["rerun"] = (proj, run_one(proj, stages=["image"], mous=[mous]))
    return out


def _cube(project, mous: str) -> dict:
    found = [p for p in project.catalog.products(mous, stage="image") if p["kind"] == "cube"]
    assert len(found) == 1, [p["kind"] for p in project.catalog.products(mous)]
    return found[0]


def test_the_chunk_plan_covers_every_channel_once():
    assert chunking.chunk_count(40, 0, 4) == 1 and chunking.chunk_count(40, 50, 4) == 1
    assert chunking.chunk_count(40, 20, 4) == 4 and chunking.chunk_count(5, 2, 4) == 2
    blocks = chunking.split_channels(11, 3)
    assert blocks == [(0, 4), (4, 4), (8, 3)]
    plan = chunking.chunk_plan({"nchan": 11, "start_kms": 2.0, "width_kms": 0.5,
                                "imagename": "x.cube.I"}, 3)
    assert [c["start_kms"] for c in plan] == [2.0, 4.0, 6.0]
    with pytest.raises(ValueError):
        chunking.split_channels(2, 3)


@pytest.mark.casa
def test_chunked_and_unchunked_cubes_agree(cubes):
    mous = cubes["data"]["mous_id"]
    for key in ("whole", "chunked"):
        assert cubes[key][1].status == "done", cubes[key][1].message
    whole, chunked = _cube(cubes["whole"][0], mous), _cube(cubes["chunked"][0], mous)
    assert "chunks" not in whole["metrics"]
    assert chunked["metrics"]["chunks"]["k"] == 2
    # the line was seen before the chunks (visibility power spectra), and the split balances
    # its cost: not the even split
    meta = chunked["metrics"]["chunks"]
    assert any(s > 0 for s in meta["cost_model"]["line_snr"])
    n = sum(c[1] for c in meta["channels"])
    assert meta["channels"] != [list(b) for b in chunking.split_channels(n, 2)]
    jobs = chunked["metrics"]["chunks"]["jobs"]  # each chunk job has its own record
    assert len({j["job_id"] for j in jobs}) == 2 and all(j["cpu_s"] > 0 for j in jobs)
    # assembled: the chunks' images are in the cube, their folder is gone
    assert not (cubes["chunked"][0].mous_dir(mous) / "work" / "chunks").exists() or not any(
        (cubes["chunked"][0].mous_dir(mous) / "work" / "chunks").iterdir())
    with fits.open(whole["path"]) as a, fits.open(chunked["path"]) as b:
        ha, hb = a[0].header, b[0].header
        for k in ("BMAJ", "BMIN", "BPA"):
            assert ha[k] == pytest.approx(hb[k], rel=1e-6), k
        for k in [k for k in ha if k.startswith(("NAXIS", "CTYPE", "CRVAL", "CDELT",
                                                  "CRPIX", "CUNIT", "RESTFRQ", "SPECSYS"))]:
            assert ha[k] == hb[k], k
        da, db = a[0].data.squeeze(), b[0].data.squeeze()
    assert da.shape == db.shape and da.ndim == 3
    assert np.array_equal(np.isfinite(da), np.isfinite(db))

    def rms(cube: np.ndarray) -> np.ndarray:  # per channel, robust (MAD)
        flat = cube.reshape(cube.shape[0], -1)
        med = np.nanmedian(flat, axis=1, keepdims=True)
        return 1.4826 * np.nanmedian(np.abs(flat - med), axis=1)

    ra, rb = rms(da), rms(db)
    assert np.all(np.abs(rb / ra - 1) < 0.05), np.round(rb / ra, 3)
    fa, fb = whole["metrics"]["line_flux_jykms"], chunked["metrics"]["line_flux_jykms"]
    assert fa > 0 and abs(fb / fa - 1) < 0.02, (fa, fb)
    assert whole["metrics"]["beam"] == pytest.approx(chunked["metrics"]["beam"], rel=1e-6)
    # the continuum, a job of its own beside the chunks, is the unchunked run's continuum
    conts = [[p for p in cubes[k][0].catalog.products(mous, stage="image")
              if p["kind"] == "cont_image"] for k in ("whole", "chunked")]
    assert [len(c) for c in conts] == [1, 1] and Path(conts[1][0]["path"]).is_file()
    assert conts[1][0]["metrics"]["rms"] == pytest.approx(conts[0][0]["metrics"]["rms"],
                                                          rel=1e-4)
    assert chunked["metrics"]["chunks"]["continuum_job"]["cpu_s"] > 0


@pytest.mark.casa
def test_a_sigkill_during_the_chunks_reruns_only_the_unfinished_ones(cubes):
    mous = cubes["data"]["mous_id"]
    proj, killed, mark, output = cubes["killed"]
    assert killed, f"the first chunk never finished: {output[-2000:]}"
    rerun_proj, report = cubes["rerun"]
    assert report.status == "done", report.message
    after = [e["reason"] or "" for e in rerun_proj.catalog.events(mous)[mark:]]
    assert "main imaging job: reused (finished in an earlier run)" in after, after
    assert "imaging plan job: reused (finished in an earlier run)" in after, after
    # one slot: the continuum job ran first, before the chunks
    assert "continuum job: reused (finished in an earlier run)" in after, after
    assert any(r.endswith("#00: reused (finished in an earlier run)") for r in after), after
    assert not any("#00: job" in r for r in after), after  # chunk 0 not run again
    assert any("#01: job" in r and r.endswith("started") for r in after), after
    assert any(r.endswith("#01: finished") for r in after), after
    got, ref = _cube(rerun_proj, mous), _cube(cubes["chunked"][0], mous)
    with fits.open(got["path"]) as a, fits.open(ref["path"]) as b:
        assert a[0].header["BMAJ"] == b[0].header["BMAJ"]
        np.testing.assert_allclose(a[0].data, b[0].data, rtol=1e-5, atol=1e-7)
    assert json.loads(json.dumps(got["metrics"]["line_flux_jykms"])) == pytest.approx(
        ref["metrics"]["line_flux_jykms"], rel=1e-5)
    assert Path(got["path"]).name == Path(ref["path"]).name and LINE_TARGET


@pytest.mark.casa
def test_cleanup_removes_chunk_jobs_an_unfinished_stage_left(cubes):
    from sails.stages import cleanup
    from sails.stages.image_chunks import CHUNKS_SUBDIR

    proj = cubes["chunked"][0]
    mous = cubes["data"]["mous_id"]
    left = proj.mous_dir(mous) / CHUNKS_SUBDIR / "T" / "x.chunk01"
    left.mkdir(parents=True)
    (left / "result.json").write_text("{}")
    assert proj.mous_dir(mous) / CHUNKS_SUBDIR in {r.path for r in cleanup.plan(proj, mous)}


REPLAY = r"""
import json, sys
import casatools
from sails.casa.calls import replay
calls, out, ref, name = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
replay(calls, out)
ia = casatools.image()
ia.open(f"{out}/casa/{name}.image"); got = ia.getchunk(); ia.close()
ia.open(f"{ref}/casa/{name}.image"); want = ia.getchunk(); ia.close()
print(json.dumps({"diff": float(abs(got - want).max()), "peak": float(abs(want).max()),
                  "shape": list(got.shape) == list(want.shape)}))
"""


@pytest.mark.casa
def test_the_chunked_cubes_record_replays_to_its_cube(cubes, tmp_path):
    """The chunked target's ``casa_calls.json`` is its whole CASA work (the main job's, the
    continuum job's, every chunk job's tclean calls, the concatenation and restoration), so
    a replay in a fresh folder gives the product's cube, as it does for an unchunked one."""
    from sails.casa import calls
    from sails.casaenv import casa_env

    proj = cubes["chunked"][0]
    mous = cubes["data"]["mous_id"]
    folder = Path(_cube(proj, mous)["path"]).parent
    record = json.loads((folder / calls.CALLS_NAME).read_text())
    tasks = [c["task"] for c in record]
    chunk_cleans = {c["args"]["imagename"] for c in record
                    if c["task"] == "tclean" and ".chunk" in c["args"]["imagename"]}
    assert len(chunk_cleans) == 2, tasks
    assert tasks.count("sails.casa.restoration.restore_cube") == 1, tasks
    assert "sails.casa.restoration.concat_images" in tasks
    # no path into the chunk or main job folders (gone once the cube is assembled)
    assert str(proj.mous_dir(mous) / "work") not in json.dumps(record)
    script = (folder / calls.CALLS_SCRIPT).read_text()
    assert "import sails.casa.restoration\n" in script
    assert "sails.casa.restoration.restore_cube(name='{out}/casa/" in script
    upto = tasks.index("sails.casa.restoration.restore_cube") + 1
    name = Path(record[upto - 1]["args"]["name"]).name
    (tmp_path / "casa").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "calls.json").write_text(json.dumps(record[:upto]))
    res = subprocess.run([sys.executable, "-c", REPLAY, str(tmp_path / "calls.json"),
                          str(tmp_path), str(folder), name], env=casa_env(),
                         capture_output=True, text=True, cwd=str(tmp_path), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["shape"] and got["peak"] > 0
    assert got["diff"] <= 1e-5 * got["peak"], got
