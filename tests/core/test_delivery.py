"""Raw deliveries parsed without CASA: README versions, calapply.txt (applycal calls only),
caltables present, complete ASDMs, and the choice of a pinned CASA installation."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from sails.casa.delivery import DeliveryError, parse_calapply, read_delivery, read_versions
from sails.stages.restore import choose_install, import_options

EB = "uid___A002_Xe1_X2"
CALL = (f"applycal(vis='{EB}.ms', field='', spw='17,19', intent='', "
        f"gaintable=['{EB}.ms.tsys.tbl', '{EB}.ms.phase.tbl'], gainfield=['', '1'], "
        "interp=['linear,linear', 'linear'], spwmap=[[17, 17], []], calwt=[True, False], "
        "parang=False, applymode='calflagstrict', flagbackup=False)\n")


def make_delivery(root: Path, *, readme: str = "Pipeline version: 2023.1.0.124\n"
                  "CASA version: 6.5.4-9\n", calapply: str = CALL,
                  tables: tuple[str, ...] = (f"{EB}.ms.tsys.tbl", f"{EB}.ms.phase.tbl")) -> Path:
    asdm = root / "raw" / f"{EB}.asdm.sdm"
    (asdm / "ASDMBinary").mkdir(parents=True)
    (asdm / "ASDM.xml").write_text("<ASDM/>")
    (asdm / "Main.xml").write_text("<MainTable>\n</MainTable>\n")
    (asdm / "ASDMBinary" / "uid___A002_Xe1_X3").write_bytes(b"x" * 100 + b"\n--MIME_boundary--\n")
    (root / "README").write_text(readme)
    calib = root / "calibration"
    calib.mkdir()
    (calib / f"{EB}.ms.calapply.txt").write_text(calapply)
    stage = root / ".tables"
    for t in tables:
        (stage / t).mkdir(parents=True)
        (stage / t / "table.dat").write_bytes(b"t")
    with tarfile.open(calib / "uid___A001_X1_X2.session_1.caltables.tgz", "w:gz") as tf:
        for t in tables:
            tf.add(stage / t, arcname=t)
    (root / "script").mkdir()
    (root / "script" / "member.uid___A001_X1_X2.scriptForPI.py").write_text(
        "hifa_restoredata(vis=['x'], asis='Antenna Station', bdfflags=True, lazy=eval('1'))\n")
    return root


def test_a_complete_delivery_is_read(tmp_path):
    d = read_delivery(make_delivery(tmp_path))
    assert (d.casa_version, d.pipeline_version) == ("6.5.4-9", "2023.1.0.124")
    assert d.eb_names() == [EB]
    (call,) = d.applycals
    assert call.line == 1 and call.kwargs["spwmap"] == [[17, 17], []]
    assert call.gaintables == [f"{EB}.ms.tsys.tbl", f"{EB}.ms.phase.tbl"]
    # import options come from the script's literal arguments; a non-literal is ignored
    opts = import_options(d)
    assert (opts["asis"], opts["bdfflags"]) == ("Antenna Station", True)
    assert "lazy" not in opts


def test_readme_versions_in_the_shapes_alma_writes():
    assert read_versions("CASA version 6.4.1-12\nPipeline version 2022.2.0.64") == \
        ("6.4.1-12", "2022.2.0.64")
    assert read_versions("casa-6.5.4-9-pipeline-2023.1.0.124") == ("6.5.4-9", "2023.1.0.124")
    assert read_versions("Calibrated manually.") == (None, None)


def test_readme_without_a_version_is_refused(tmp_path):
    with pytest.raises(DeliveryError, match="names no CASA version"):
        read_delivery(make_delivery(tmp_path, readme="Calibrated by the ALMA pipeline.\n"))


@pytest.mark.parametrize("line, why", [
    ("import os", "line 2 is not an applycal call"),
    ("__import__('os').system('touch /tmp/pwned')", "line 2 is not an applycal call"),
    ("applycal(vis=f'{x}.ms')", "line 2: the value of 'vis' is not a literal"),
    ("applycal('x.ms')", "line 2: applycal with positional arguments"),
    ("applycal(vis='x.ms', **opts)", "line 2: applycal"),
    ("applycal(vis='x.ms', gaintable=open('t').read())", "not a literal"),
    ("applycal(vis='x.ms', rm_rf=True)", "unknown applycal argument"),
    ("applycal(vis='x.ms'", "line 2: not Python syntax"),
])
def test_calapply_lines_other_than_applycal_calls_are_refused(line, why):
    with pytest.raises(DeliveryError, match=why.replace("(", r"\(").replace("*", r"\*")):
        parse_calapply(f"# a comment\n{line}\n")


def test_calapply_not_an_applycal_call_refuses_the_delivery(tmp_path):
    with pytest.raises(DeliveryError, match=r"calapply.txt line 2 is not an applycal call"):
        read_delivery(make_delivery(tmp_path, calapply=CALL + "os.system('rm -rf ~')\n"))


def test_a_caltable_missing_from_the_delivery_is_named(tmp_path):
    with pytest.raises(DeliveryError, match=rf"missing from the delivery: {EB}.ms.phase.tbl"):
        read_delivery(make_delivery(tmp_path, tables=(f"{EB}.ms.tsys.tbl",)))


def test_a_truncated_asdm_is_refused(tmp_path):
    root = make_delivery(tmp_path)
    bdf = root / "raw" / f"{EB}.asdm.sdm" / "ASDMBinary" / "uid___A002_Xe1_X3"
    bdf.write_bytes(bdf.read_bytes()[:50])
    with pytest.raises(DeliveryError, match="truncated"):
        read_delivery(root)
    main = root / "raw" / f"{EB}.asdm.sdm" / "Main.xml"
    main.write_text("<MainTable>\n<row>")
    with pytest.raises(DeliveryError, match="Main.xml is truncated"):
        read_delivery(root)


def test_choose_install_exact_nearest_or_a_reason_naming_what_is_installed():
    installs = {"6.4.1": ["casa-641"], "6.5.4": ["apptainer", "exec", "casa-6.5.4.sif", "casa"],
                "6.6.1": ["casa-661"]}
    assert choose_install(installs, "6.5.4-9") == ("6.5.4", installs["6.5.4"], None)
    version, argv, warn = choose_install({"6.4.1": ["a"], "6.6.1": ["b"], "6.7.0": ["c"]},
                                         "6.5.4-9")
    assert version in ("6.4.1", "6.6.1") and "nearest compatible" in warn and "6.5.4-9" in warn
    with pytest.raises(DeliveryError, match=r"no CASA installation for version 6.5.4-9.*"
                                            r"installs has: 4.7.2, 5.8.0"):
        choose_install({"5.8.0": ["x"], "4.7.2": ["y"]}, "6.5.4-9")
    with pytest.raises(DeliveryError, match="installs has: none"):
        choose_install({}, "6.5.4-9")
