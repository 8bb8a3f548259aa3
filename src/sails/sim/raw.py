"""A simulated raw ALMA delivery: the ASDMs, calibration tables and scripts of a MOUS that
has no SRDP restore.

``simulate_raw_mous(out_root, spec, seed)`` simulates the MOUS's calibrated EBs (as
:func:`sails.sim.generate.simulate_mous` does, ``DATA`` calibrated), then a CASA child
(:mod:`sails.sim._rawjob`) corrupts them with known per-antenna gains, exports them as ASDMs
and writes the tables that undo the gains. ``out_root/<mous_fs>/`` then holds what the
archive serves for such a MOUS::

    <eb>.asdm.sdm/                    (served as #progenitor tarballs, raw/ inside)
    calibration/<eb>.ms.calapply.txt, <eb>.ms.flagversions.tgz, <mous>.session_1.caltables.tgz
    script/<mous>.scriptForPI.py      a stand-in for ALMA's restore script
    qa/<mous>.qa2_report.txt
    README                            names the CASA and pipeline version
    truth.json, obscore.xml, alminer.csv   (the truth has the gains under "raw")

With ``srdp_root`` the EBs stay there as the equivalent SRDP restore (the same MOUS and
visibilities: the corrupted DATA and the calibrated CORRECTED_DATA, as a restore holds
them), so a test can compare the two routes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sails.sim.generate import (
    TRUTH_NAME,
    check_output_dir,
    run_casa_job,
    simulate_mous,
)
from sails.sim.spec import MousSpec

# The versions the simulated README names (an ALMA Cycle 10 pipeline release).
CASA_VERSION = "6.5.4-9"
PIPELINE_VERSION = "2023.1.0.124"
GAIN_AMP_RANGE = (0.6, 1.4)

README_TEXT = """\
This is the README file for the delivery of member OUS {mous}.

Delivered data: raw ASDMs (raw/), calibration tables and flag versions (calibration/),
the restore script (script/) and the QA reports (qa/).

The data were calibrated with the ALMA Science Pipeline.
Pipeline version: {pipeline}
CASA version: {casa}

To restore the calibrated measurement sets, run in the script/ folder:
    casa --pipeline -c {script}
"""

SCRIPT_TEXT = '''\
"""scriptForPI stand-in (sails.sim): restore the calibrated MS of {mous} from the raw ASDMs.

ALMA's script calls hifa_restoredata; this one does the same with plain CASA tasks:
importasdm, flagmanager restore, applycal as calibration/*.calapply.txt lists. Run it in the
script/ folder; the measurement sets land in ../calibrated/.
"""
import glob
import os
import tarfile

try:
    from casatasks import applycal, flagmanager, importasdm  # modular CASA
except ImportError:  # monolithic CASA: the tasks are already defined
    pass

import shutil

os.makedirs("../calibrated", exist_ok=True)
os.chdir("../calibrated")
for tgz in sorted(glob.glob("../calibration/*caltables.tgz")):
    with tarfile.open(tgz) as tf:
        tf.extractall(".", filter="data")
for asdm in sorted(glob.glob("../raw/*.asdm.sdm") + glob.glob("../*.asdm.sdm")):
    vis = os.path.basename(asdm)[:-len(".asdm.sdm")] + ".ms"
    importasdm(asdm=asdm, vis=vis, asis="{asis}", bdfflags=False,
               process_caldevice=False, with_pointing_correction=False, ocorr_mode="ca")
    shutil.rmtree(vis + ".flagversions", ignore_errors=True)
    with tarfile.open("../calibration/" + vis + ".flagversions.tgz") as tf:
        tf.extractall(".", filter="data")
    flagmanager(vis=vis, mode="restore", versionname="{flagversion}")
for txt in sorted(glob.glob("../calibration/*.calapply.txt")):
    exec(open(txt).read())
'''


def gains_for(n_antennas: int, seed: int) -> tuple[list[float], list[float]]:
    """Known per-antenna gains: amplitudes in GAIN_AMP_RANGE, phases -180..180 deg."""
    rng = np.random.default_rng([seed, 21])
    amp = rng.uniform(*GAIN_AMP_RANGE, size=n_antennas)
    phase = rng.uniform(-180.0, 180.0, size=n_antennas)
    return [round(float(a), 6) for a in amp], [round(float(p), 4) for p in phase]


def write_delivery_text(root: Path, mous_uri: str, mous_fs: str, casa: str | None) -> None:
    """README, the scriptForPI stand-in and a QA report (the parts that are plain text)."""
    from sails.sim._rawjob import FLAG_VERSION, IMPORT_OPTIONS

    script = f"member.{mous_fs}.scriptForPI.py"
    (root / "script").mkdir(parents=True, exist_ok=True)
    (root / "script" / script).write_text(SCRIPT_TEXT.format(
        mous=mous_uri, asis=IMPORT_OPTIONS["asis"], flagversion=FLAG_VERSION))
    (root / "qa").mkdir(parents=True, exist_ok=True)
    (root / "qa" / f"{mous_fs}.qa2_report.txt").write_text(
        f"QA2 report for {mous_uri}: PASS (simulated)\n")
    text = README_TEXT.format(mous=mous_uri, pipeline=PIPELINE_VERSION, casa=casa or "",
                              script=script)
    if casa is None:
        text = "\n".join(ln for ln in text.splitlines() if "CASA version" not in ln) + "\n"
    (root / "README").write_text(text)


def simulate_raw_mous(out_root: str | Path, spec: MousSpec, seed: int = 1, *,
                      srdp_root: str | Path | None = None, overwrite: bool = False,
                      casa_version: str | None = CASA_VERSION,
                      timeout_s: float = 900.0) -> Path:
    """Simulate one MOUS as a raw delivery under ``out_root``; return its folder."""
    out_root = check_output_dir(Path(out_root))
    # DATA holds the calibrated visibilities; no WVR window (exportasdm refuses an EB whose
    # spws span two receiver bands, and the 183 GHz WVR window counts as one)
    spec = replace(spec, datacolumn="data", wvr=False)
    tmp_root = None
    if srdp_root is None:
        tmp_root = Path(tempfile.mkdtemp(prefix=".sim-srdp-", dir=out_root))
        srdp_root = tmp_root
    srdp = simulate_mous(srdp_root, spec, seed, overwrite=overwrite, timeout_s=timeout_s)
    truth = json.loads((srdp / TRUTH_NAME).read_text())
    final = out_root / truth["mous_fs"]
    if final.exists():
        if not overwrite:
            from sails.errors import UserInputError
            raise UserInputError(f"{final} already exists", hint="use overwrite / --force")
        shutil.rmtree(final)
    work = Path(tempfile.mkdtemp(prefix=f".raw-{truth['mous_fs']}-", dir=out_root))
    stage = work / truth["mous_fs"]
    ebs = []
    for i, eb in enumerate(truth["ebs"]):
        amp, phase = gains_for(len(truth["antennas"]), seed * 100 + i)
        ebs.append({"name": Path(eb["ms"]).stem, "cal_ms": str(srdp / eb["ms"]),
                    "amp": amp, "phase_deg": phase, "srdp_twin": tmp_root is None})
    result = run_casa_job({"ebs": ebs, "mous_fs": truth["mous_fs"], "out_dir": str(stage),
                           "work": str(work), "result": str(work / "result.json"),
                           "casa_log": str(work / "casa.log")}, work, timeout_s,
                          module="sails.sim._rawjob")
    for eb in result["ebs"]:  # the archive serves ASDMs from the MOUS folder's top level
        os.replace(eb["asdm"], stage / Path(eb["asdm"]).name)
    (stage / "raw").rmdir()
    write_delivery_text(stage, truth["mous_uid"], truth["mous_fs"], casa_version)
    for name in ("obscore.xml", "alminer.csv"):
        if (srdp / name).exists():
            shutil.copy2(srdp / name, stage / name)
    truth["raw"] = {"casa_version": casa_version, "pipeline_version": PIPELINE_VERSION,
                    "gains": {eb["name"]: {"amp": eb["amp"], "phase_deg": eb["phase_deg"]}
                              for eb in ebs},
                    "calibrated_ms": {eb["name"]: eb["cal_ms"] for eb in ebs}
                    if tmp_root is None else {},
                    "casa_version_used": result["casa_version"], "seconds": result["seconds"]}
    (stage / TRUTH_NAME).write_text(json.dumps(truth, indent=1))
    os.replace(stage, final)
    shutil.rmtree(work, ignore_errors=True)
    if tmp_root is not None:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final


def raw_summary(mous_dir: Path) -> dict[str, Any]:
    return json.loads((Path(mous_dir) / TRUTH_NAME).read_text()).get("raw", {})
