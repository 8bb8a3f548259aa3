"""The restore stage on a simulated raw delivery (real CASA, real HTTP, real catalog).

The ``raw`` preset is served by the fake archive as DataLink tarballs; ingest (TAP +
DataLink, no SRDP URL) and download fetch it; restore importasdm's the ASDM, restores the
flag version and applycal's calapply.txt. Checked: the restored CORRECTED_DATA against the
simulated calibrated visibilities per antenna, the pipeline's fluxes against the same MOUS
delivered as an SRDP restore, the pinned-CASA path with stand-in ``casa`` launchers, and bad
deliveries blocking with their reason while nothing from the delivery runs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import sys
from pathlib import Path

import pytest

from sails.archive import QueryFilters, ingest_query, register_srdp
from sails.demo import tap_routes
from sails.fakes.archive import ArchiveServer
from sails.flows.engine import run_pipeline
from sails.project import init_project, open_project
from sails.sizes import RESTORE_FACTOR
from sails.stages.execute import run_one
from sails.stages.restore import REPORT_NAME, RESTORE_DIR

pytestmark = [pytest.mark.casa,
              pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")]
TOML = """
[imaging]
make_cubes = false
[storage]
cleanup = false
"""


@pytest.fixture(scope="module")
def raw_archive(sim_raw):
    with ArchiveServer(sim_raw.raw.path.parent,
                       extra_routes=tap_routes(sim_raw.raw.path / "obscore.xml")) as server:
        yield server


@pytest.fixture(scope="module")
def srdp_archive(sim_raw):
    with ArchiveServer(sim_raw.srdp.path.parent,
                       extra_routes=tap_routes(sim_raw.srdp.path / "obscore.xml")) as server:
        yield server


def _project(root: Path, server, truth: dict, *, srdp: bool = False, toml: str = TOML):
    project = init_project(root)
    (project.root / "sails.toml").write_text(toml)
    project = open_project(project.root)
    ingest_query(project.catalog, QueryFilters(projects=[truth["proposal_id"]]),
                 project.settings.archive, tap_url=f"{server.url}/tap",
                 datalink_url=f"{server.url}/datalink/sync")
    if srdp:
        register_srdp(project.catalog, truth["mous_uid"],
                      f"{server.url}/srdp/{truth['mous_fs']}/")
    return project


def _downloaded(root: Path, server, sim, **kw):
    project = _project(root, server, sim.truth, **kw)
    assert run_one(project, stages=["download"]).status == "done"
    return project


@pytest.fixture(scope="module")
def restored(tmp_path_factory, raw_archive, sim_raw):
    project = _downloaded(tmp_path_factory.mktemp("restore") / "p", raw_archive, sim_raw.raw)
    report = run_one(project, stages=["restore"])
    return project, report


def test_download_puts_the_delivery_in_datasets_raw(restored, sim_raw):
    project, _ = restored
    root = project.datasets_raw / sim_raw.raw.mous_fs
    names = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*")
                   if not p.is_relative_to(root / "raw" / "x"))
    assert any(n.startswith("raw/") and n.endswith(".asdm.sdm") for n in names), names
    assert any(n.endswith(".calapply.txt") for n in names)
    assert any(n.endswith(".scriptForPI.py") for n in names)


def test_restore_writes_corrected_data_equal_to_the_simulated_calibration(
        restored, sim_raw, casa_check, tmp_path):
    project, report = restored
    mous = sim_raw.raw.mous_uid
    assert report.status == "done", report.message
    assert "calibrated with CASA 6.5.4-9" in report.message
    rep = json.loads((project.mous_dir(mous) / RESTORE_DIR / REPORT_NAME).read_text())
    assert rep["method"] == "casa-wheels" and rep["different_casa"] is True
    assert rep["delivery"]["casa_version"] == "6.5.4-9"
    assert rep["delivery"]["pipeline_version"] == "2023.1.0.124"
    assert [c["task"] for c in rep["commands"]] == ["importasdm", "flagmanager", "applycal"]
    assert "asis='Antenna Station Receiver Source CalAtmosphere CalWVR'" in \
        rep["commands"][0]["command"]
    assert any("not the CASA 6.5.4-9" in w for w in rep["warnings"])
    (eb,) = rep["ebs"]
    assert eb["flag_version"] == "Pipeline_Final" and eb["bytes"] > 0
    factor = rep["ms_bytes"] / rep["asdm_bytes"]
    print(f"restored MS / ASDM bytes: {factor:.3f} (size model: {RESTORE_FACTOR})")
    assert factor == pytest.approx(RESTORE_FACTOR, rel=0.25)
    row = project.catalog.find_stage(mous, "restore")  # the size model, as sails du shows it
    print(f"restore predicted {row.predicted_bytes} B, measured {row.measured_bytes} B")
    assert 1 / 1.5 <= row.predicted_bytes / row.measured_bytes <= 1.5
    ms = project.mous_dir(mous) / f"{eb['eb']}.ms"
    assert Path(eb["ms"]) == ms and (ms / "table.dat").is_file()
    truth_ms = sim_raw.srdp.ms[0]
    got = casa_check("restored_vs_truth", tmp_path, restored=str(ms), truth=str(truth_ms),
                     truth_column="CORRECTED_DATA")
    amp, ph, rms = got["amp_ratio_median"], got["phase_mean_deg"], got["phase_rms_deg"]
    print(f"per-antenna amplitude ratio {min(amp):.6f}..{max(amp):.6f}, mean phase "
          f"{min(ph):+.5f}..{max(ph):+.5f} deg, phase rms <= {max(rms):.5f} deg, "
          f"{got['n_rows_matched']} rows")
    assert got["n_rows_matched"] == sim_raw.srdp.truth["ebs"][0]["n_rows"]
    assert len(amp) == len(sim_raw.raw.truth["antennas"])
    # The raw DATA had gains of amplitude 0.6-1.4 and any phase: undone to within float32
    # precision (the simulated noise is the same realisation on both sides).
    assert all(abs(a - 1) < 1e-3 for a in amp), amp
    assert all(abs(p) < 0.05 for p in ph) and all(r < 0.1 for r in rms), (ph, rms)
    # and nothing from the delivery was run (the scriptForPI stand-in would have made this)
    assert not (project.datasets_raw / sim_raw.raw.mous_fs / "calibrated").exists()


def test_restored_ms_keeps_the_archive_structure(restored, sim_raw, casa_check, tmp_path):
    """exportasdm writes one OBSERVE_TARGET scan per ExecBlock and no window names; the
    simulated ASDM carries them as ALMA's do, so importasdm gives the archive's scans,
    intents, fields and windows (what split and auto-selfcal select on)."""
    project, _ = restored
    ms = next(project.mous_dir(sim_raw.raw.mous_uid).glob("*.ms"))
    got = casa_check("summary", tmp_path / "r", ms=str(ms), listfile=str(tmp_path / "r.txt"))
    want = casa_check("summary", tmp_path / "t", ms=str(sim_raw.srdp.ms[0]),
                      listfile=str(tmp_path / "t.txt"))
    keys = ("scans", "intents_per_scan", "fields_per_scan", "field_names", "spw_names",
            "nchan", "antennas", "fields_for_name", "field_source_ids", "bbc_no", "intents")
    assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
    assert "CALIBRATE_PHASE#ON_SOURCE" in got["intents"]
    print(f"restored: {len(got['scans'])} scans, intents {got['intents']}")


def test_restore_then_verify_uses_corrected_data_and_a_rerun_is_not_redone(restored,
                                                                           sim_raw):
    project, _ = restored
    mous = sim_raw.raw.mous_uid
    verify = run_one(project, stages=["verify"])
    assert verify.status == "done", verify.message
    assert "calibrated column CORRECTED_DATA" in verify.message
    project.catalog.reset(mous, "restore", actor="test")
    again = run_one(project, stages=["restore"])
    assert again.status == "done" and again.message.startswith("already restored"), \
        again.message


def _fluxes(project, mous: str) -> dict[tuple[str, str], float | None]:
    """(target, measure) -> Jy: the continuum image's primary-beam-corrected peak and the
    imfit flux of its brightest source (None when imfit found none)."""
    out: dict[tuple[str, str], float | None] = {}
    for p in project.catalog.products(mous, stage="image"):
        if p["kind"] == "cont_image":
            out[(p["target"], "peak")] = p["metrics"]["peak"]
            out[(p["target"], "imfit")] = p["metrics"]["flux_imfit"]
    return out


# Small: no findcont (the catalogue's line-free ranges), phase-only self-cal, one target
# imaged (auto-selfcal still runs on the MOUS's split data, both targets).
FLUX_TOML = TOML.replace("[imaging]\n", "[imaging]\nfindcont = false\n") + (
    "[selfcal]\nweblog = false\nexport_fits = false\ndo_amp_selfcal = false\n")
FLUX_TARGET = "G34.43+0.24 MM'1"  # the extended one (peak and imfit differ)


def test_pipeline_from_the_raw_delivery_matches_the_srdp_restore(
        tmp_path_factory, raw_archive, srdp_archive, sim_raw):
    """The must-show: the same MOUS as a raw delivery (restored with the CASA wheels) and as
    an SRDP restore, each run through the whole pipeline (real auto-selfcal) to the image
    stage, give the same continuum fluxes within 2%."""
    mous = sim_raw.raw.mous_uid
    fluxes, selfcal = {}, {}
    for name, server, sim, srdp in (("raw", raw_archive, sim_raw.raw, False),
                                    ("srdp", srdp_archive, sim_raw.srdp, True)):
        project = _project(tmp_path_factory.mktemp(f"flux-{name}") / "p", server, sim.truth,
                           srdp=srdp, toml=FLUX_TOML)
        for target in project.catalog.target_names(mous):
            if target != FLUX_TARGET:
                project.catalog.skip(project.catalog.find_stage(mous, "image", target).id,
                                     None, "one target is enough for this test")
        summary = run_pipeline(project, max_parallel=1, until="image")
        assert all(r.status in ("done", "skipped") for r in summary.reports), \
            [(r.row.stage, r.status, r.message) for r in summary.reports]
        restore = project.catalog.find_stage(mous, "restore")
        assert restore.status == ("skipped" if srdp else "done"), restore.reason
        assert project.catalog.find_stage(mous, "auto_selfcal").status == "done"
        selfcal[name] = {t: project.catalog.find_stage(mous, "selfcal", t).status
                         for t in project.catalog.target_names(mous)}
        fluxes[name] = _fluxes(project, mous)
    print(f"selfcal per target: {selfcal}")
    assert selfcal["raw"] == selfcal["srdp"]
    assert fluxes["raw"] and set(fluxes["raw"]) == set(fluxes["srdp"])
    compared = []
    for key, f in sorted(fluxes["raw"].items()):
        other = fluxes["srdp"][key]
        assert (f is None) == (other is None), (key, f, other)
        if f is None:
            continue
        ratio = f / other
        print(f"{key[0]} {key[1]}: raw {f:.5f} Jy, SRDP {other:.5f} Jy, ratio {ratio:.4f}")
        assert ratio == pytest.approx(1.0, abs=0.02), key
        compared.append(key)
    assert {k[0] for k in compared} == {FLUX_TARGET}
    assert any(k[1] == "imfit" for k in compared)


# ----------------------------------------------------------------------------- pinned CASA
def _launcher(path: Path, record: Path) -> Path:
    """A stand-in ``casa``: records its arguments and folder, then runs the script given to
    ``-c`` with this Python (which has the CASA wheels) and its CASA data settings, as
    monolithic CASA would (it carries its own data, also in a bare container)."""
    from sails.casaenv import casa_env

    env = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in casa_env().items()
                  if k.startswith("CASA"))
    path.write_text(f"#!/bin/sh\necho \"$(basename \"$0\") $PWD $*\" >> {record}\n{env}"
                    f"shift 2\nexec {sys.executable} \"$1\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_pinned_casa_runs_the_script_for_pi_with_the_readmes_version(
        tmp_path, raw_archive, sim_raw):
    record = tmp_path / "record.txt"
    l654 = _launcher(tmp_path / "casa-6.5.4", record)
    l641 = _launcher(tmp_path / "casa-6.4.1", record)
    toml = TOML + ("[casa]\nallow_delivery_scripts = true\n"
                   f"installs = {{ \"6.4.1\" = [\"{l641}\"], \"6.5.4\" = [\"{l654}\"] }}\n")
    project = _downloaded(tmp_path / "p", raw_archive, sim_raw.raw, toml=toml)
    report = run_one(project, stages=["restore"])
    assert report.status == "done", report.message
    (line,) = record.read_text().splitlines()
    name, cwd, *args = line.split()
    script_dir = project.datasets_raw / sim_raw.raw.mous_fs / "script"
    assert name == "casa-6.5.4" and Path(cwd) == script_dir
    assert args == ["--pipeline", "-c", f"member.{sim_raw.raw.mous_fs}.scriptForPI.py"]
    rep = json.loads((project.mous_dir(sim_raw.raw.mous_uid) / RESTORE_DIR / REPORT_NAME)
                     .read_text())
    assert rep["method"] == "pinned-casa" and rep["casa_restore"] == "6.5.4"
    assert rep["different_casa"] is False
    ms = project.mous_dir(sim_raw.raw.mous_uid) / f"{rep['ebs'][0]['eb']}.ms"
    assert (ms / "table.dat").is_file()
    assert run_one(project, stages=["verify"]).status == "done"


def test_pinned_casa_without_a_compatible_install_blocks_naming_what_is_installed(
        tmp_path, raw_archive, sim_raw):
    record = tmp_path / "record.txt"
    l58 = _launcher(tmp_path / "casa-5.8", record)
    toml = TOML + ("[casa]\nallow_delivery_scripts = true\n"
                   f"installs = {{ \"5.8.0\" = [\"{l58}\"] }}\n")
    project = _downloaded(tmp_path / "p", raw_archive, sim_raw.raw, toml=toml)
    report = run_one(project, stages=["restore"])
    row = project.catalog.find_stage(sim_raw.raw.mous_uid, "restore")
    assert report.status == row.status == "blocked"
    assert "no CASA installation for version 6.5.4-9" in row.reason
    assert "installs has: 5.8.0" in row.reason
    assert not record.exists()


BACKEND_TOML = {
    "slurm": "[slurm]\npoll_initial_seconds = 0.5\npoll_max_seconds = 2\n"
             "manifest_grace_seconds = 2\n",
    # the pinned restore runs in the CASA-pipeline image (casa-pipeline:6.5.4-9)
    "canfar": "[canfar]\nstage_images = { restore = \"pipeline\" }\n",
}


@pytest.mark.parametrize("backend", [pytest.param("slurm", marks=pytest.mark.slurm),
                                     "canfar"])
def test_pinned_casa_restore_runs_as_a_batch_job_with_the_chosen_install(
        tmp_path, raw_archive, sim_raw, backend, monkeypatch):
    """On SLURM (a real one-node cluster) and CANFAR (the fake session service) the restore
    job runs the README version's install, in the delivery's script/ folder as the job
    sees it (CANFAR: through the platform path)."""
    record = tmp_path / "record.txt"
    l654 = _launcher(tmp_path / "casa-6.5.4", record)
    l66 = _launcher(tmp_path / "casa-6.6", record)
    toml = TOML + ("[resources.restore]\ncores = 1\nram_gb = 2\n"
                   "[casa]\nallow_delivery_scripts = true\n"
                   f"installs = {{ \"6.6\" = [\"{l66}\"], \"6.5.4\" = [\"{l654}\"] }}\n"
                   + BACKEND_TOML[backend])
    project = _downloaded(tmp_path / "p", raw_archive, sim_raw.raw, toml=toml)
    script_dir = project.datasets_raw / sim_raw.raw.mous_fs / "script"
    fake = None
    if backend == "canfar":
        from sails.fakes.canfar import serve_for_project

        plat = tmp_path / "arc" / "projects" / "p"
        fake, env = serve_for_project(project.root, platform_prefix=plat)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        project = open_project(project.root)
        script_dir = plat / script_dir.relative_to(project.root)
    try:
        report = run_one(project, stages=["restore"], backend_name=backend)
    finally:
        if fake is not None:
            fake.stop()
    row = project.catalog.find_stage(sim_raw.raw.mous_uid, "restore")
    assert report.status == row.status == "done", (row.reason, row.error)
    assert row.job_ref.startswith(f"{backend}:"), row.job_ref
    (line,) = record.read_text().splitlines()
    name, cwd, *args = line.split()
    assert name == "casa-6.5.4" and Path(cwd).resolve() == script_dir.resolve(), line
    assert args == ["--pipeline", "-c", f"member.{sim_raw.raw.mous_fs}.scriptForPI.py"]
    if fake is not None:
        (session,) = fake.sessions.values()
        assert session.image == project.settings.images.pipeline, session.image
    rep = json.loads((project.mous_dir(sim_raw.raw.mous_uid) / RESTORE_DIR / REPORT_NAME)
                     .read_text())
    assert rep["method"] == "pinned-casa" and rep["casa_restore"] == "6.5.4"
    assert (Path(rep["ebs"][0]["ms"]) / "table.dat").is_file()


# ----------------------------------------------------------------------------- bad deliveries
@pytest.fixture(scope="module")
def downloaded_raw(tmp_path_factory, raw_archive, sim_raw):
    """One download of the raw delivery; each bad-delivery test damages a copy of it."""
    return _downloaded(tmp_path_factory.mktemp("bad") / "p", raw_archive, sim_raw.raw)


def _damage(project, sim, tmp_path: Path, damage) -> tuple[str, str]:
    """Copy the downloaded project, damage its delivery, run restore: (status, reason)."""
    copy = tmp_path / "p"
    shutil.copytree(project.root, copy, symlinks=True)
    proj = open_project(copy)
    root = proj.datasets_raw / sim.mous_fs
    # the catalog's product paths name the original project: point them at the copy
    with proj.catalog.write() as con:
        con.execute("UPDATE products SET path = replace(path, ?, ?)",
                    (str(project.root), str(copy)))
    damage(root)
    marker = Path(os.environ.get("TMPDIR", "/tmp")) / f"sails-pwned-{os.getpid()}"
    marker.unlink(missing_ok=True)
    report = run_one(proj, stages=["restore"])
    row = proj.catalog.find_stage(sim.mous_uid, "restore")
    assert report.status == row.status
    assert not marker.exists(), "something from the delivery was executed"
    return row.status, row.reason or row.error or ""


def _calapply(root: Path) -> Path:
    return next(root.glob("calibration/*.calapply.txt"))


@pytest.mark.parametrize("what, damage, expect", [
    ("truncated ASDM", lambda r: [p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
                                  for p in sorted(r.glob("raw/*/ASDMBinary/*"))[-1:]],
     "truncated"),
    ("missing caltable", lambda r: _calapply(r).write_text(
        _calapply(r).read_text().replace(".sim.phase.tbl", ".sim.bandpass.tbl")),
     "missing from the delivery"),
    ("README without a version", lambda r: [
        p.write_text("\n".join(ln for ln in p.read_text().splitlines() if "CASA" not in ln))
        for p in r.parent.parent.glob("datasets/*/archive/*README*")],
     "names no CASA version"),
    ("calapply line not an applycal call", lambda r: _calapply(r).write_text(
        _calapply(r).read_text() + "import os; os.system('touch $TMPDIR/sails-pwned')\n"),
     "line 2 is not an applycal call"),
])
def test_bad_deliveries_block_with_their_reason(downloaded_raw, sim_raw, tmp_path, what,
                                                damage, expect):
    status, reason = _damage(downloaded_raw, sim_raw.raw, tmp_path, damage)
    assert status in ("blocked", "failed") and expect in reason, (what, status, reason)
    assert "cannot restore the raw delivery" in reason


def _garble_caltables(root: Path) -> None:
    """The caltables tarball keeps its names, but each table's table.dat is cut short: the
    delivery looks complete, CASA cannot read the tables."""
    import tarfile

    tgz = next(root.glob("calibration/*caltables.tgz"))
    work = tgz.parent / ".garble"
    with tarfile.open(tgz) as tf:
        tf.extractall(work, filter="data")
    for dat in work.glob("*/table.dat"):
        dat.write_bytes(dat.read_bytes()[:16])
    with tarfile.open(tgz, "w:gz") as tf:
        for table in sorted(work.iterdir()):
            tf.add(str(table), arcname=table.name)
    shutil.rmtree(work)


def test_unreadable_caltable_fails_the_restore_with_casas_reason(downloaded_raw, sim_raw,
                                                                 tmp_path):
    """Past the delivery checks, CASA's own failure (applycal cannot open a delivered table)
    fails the stage with the job's error; no measurement set is installed."""
    status, reason = _damage(downloaded_raw, sim_raw.raw, tmp_path, _garble_caltables)
    print(f"unreadable caltable: {status}: {reason[:300]}")
    assert status == "failed", (status, reason)
    assert "restore-" in reason and ".sim.amp.tbl" in reason, reason  # names the table
    mous_dir = open_project(tmp_path / "p").mous_dir(sim_raw.raw.mous_uid)
    assert not list(mous_dir.glob("*.ms")), "a half-restored MS was installed"
