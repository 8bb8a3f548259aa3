"""The job's record of its CASA work: file operations between calls that a later call depends
on are recorded in order (a replay of casa_calls.json / casa_calls.py in a fresh folder must
wipe what the healing ladder wiped), and nothing is recorded for what did not exist."""

from __future__ import annotations

import json
import subprocess
import sys

from sails.casa import calls
from sails.casa.runner import JobContext
from sails.casa.steps import healing


def _ctx(tmp_path):
    out = tmp_path / "staging"
    out.mkdir()
    return JobContext({"output_dir": str(tmp_path / "final")}, out, None)


def test_wipe_and_copy_are_recorded_and_the_script_replays_them(tmp_path):
    ctx = _ctx(tmp_path)
    name = ctx.out / "casa" / "t.cube.I"
    for ext in ("image", "residual", "mask"):
        (ctx.out / "casa" / f"t.cube.I.{ext}").mkdir(parents=True)
        (ctx.out / "casa" / f"t.cube.I.{ext}" / "table.dat").write_text("x")
    ms = tmp_path / "member.ms"
    ms.mkdir()
    (ms / "table.dat").write_text("vis")
    calls.remove(ctx, ctx.out / "casa" / "absent.image")  # nothing there: no record
    healing.wipe(ctx, str(name))
    calls.copy_tree(ctx, ms, ctx.out / "casa" / "member.statwt.ms")
    assert not list((ctx.out / "casa").glob("t.cube.I.*"))
    rec = json.loads((ctx.out / calls.CALLS_NAME).read_text())
    assert [r["task"] for r in rec] == ["shutil.rmtree"] * 3 + ["shutil.copytree"]
    assert [r["args"]["path"] for r in rec[:3]] == [
        f"{{out}}/casa/t.cube.I.{e}" for e in ("image", "mask", "residual")]
    assert rec[3]["args"] == {"src": str(ms), "dst": "{out}/casa/member.statwt.ms",
                              "symlinks": True}
    assert all("wall_s" in r for r in rec)
    # the paste-ready script does the same in another folder (no CASA task in it to run)
    script = (ctx.out / calls.CALLS_SCRIPT).read_text()
    assert ("shutil.rmtree(path='{out}/casa/t.cube.I.image'.replace('{out}', OUT), "
            "ignore_errors=True)") in script
    other = tmp_path / "other"
    (other / "casa" / "t.cube.I.image").mkdir(parents=True)
    script = script.replace("import casatasks\n", "").replace(
        f"OUT = {str(tmp_path / 'final')!r}", f"OUT = {str(other)!r}")
    subprocess.run([sys.executable, "-c", script], check=True)
    assert not (other / "casa" / "t.cube.I.image").exists()
    assert (other / "casa" / "member.statwt.ms" / "table.dat").read_text() == "vis"
    # the benchmarks' replay of the record does the same in a third folder
    third = tmp_path / "third"
    (third / "casa" / "t.cube.I.mask").mkdir(parents=True)
    walls = calls.replay(rec, third)
    assert len(walls) == len(rec)
    assert not (third / "casa" / "t.cube.I.mask").exists()
    assert (third / "casa" / "member.statwt.ms" / "table.dat").read_text() == "vis"
