"""The whole query -> catalog path through the real client code (pyvo) against a loopback
archive that speaks TAP sync and DataLink: recorded ALMA answers plus synthetic MOUS,
filters, hostile names, and every kind of service failure."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from sails.archive import QueryFilters, ingest_query, query_archive
from sails.archive.tables import read_obscore_file
from sails.catalog import Catalog
from sails.config import Archive
from sails.errors import IngestError
from sails.fakes.tap import (
    RECORDED_MOUS,
    Link,
    ObsCoreTable,
    recorded_datalink_index,
    serve_fake_archive,
    shared_testdata_dir,
)
from sails.sim.archive_rows import mous_uid, synthetic_rows

ARCHIVE_DIR = shared_testdata_dir() / "alma-archive"
M83 = "uid://A001/X1295/X35"
HOSTILE = "O'Neil'); DROP TABLE obscore; --"
RAW_SUM = 9_984_396_288
TABLES = ("projects", "mous", "targets", "files", "stages", "events")


def archive_rows() -> list[dict]:
    """The recorded M83 row, 6 synthetic MOUS, the recorded-DataLink MOUS, hostile names."""
    rows = list(read_obscore_file(ARCHIVE_DIR / "alma-onerow.txt").rows)
    rows += synthetic_rows(6, 2)
    rec = synthetic_rows(1, 1, spws=[25, 27], start=100)
    for r in rec:
        r.update(member_ous_uid=RECORDED_MOUS, proposal_id="2017.1.01185.S",
                 target_name="50_kms_cloud", group_ous_uid="uid://A001/X12a3/Xe8",
                 obs_id=f"{RECORDED_MOUS}.source.50_kms_cloud.spw.{r['obs_id'][-2:]}")
    rows += rec
    rows += synthetic_rows(1, 2, spws=[25], start=200, names=[HOSTILE, "NGC 1333 IRAS 4A"])
    return rows


def datalink_index() -> dict:
    index: dict = dict(recorded_datalink_index())
    for i in range(6):
        mous = mous_uid(i)
        fs = mous.replace("uid://", "uid___").replace("/", "_")
        links = [Link(f"https://fake.archive/{fs}.README.txt", "#documentation", "text/plain",
                      1200),
                 *(Link(f"https://fake.archive/2019.1_uid___A002_X{i}_X{k}.asdm.sdm.tar",
                        "#progenitor", "application/x-tar", 1_000_000 * (k + 1))
                   for k in range(2))]
        if i == 0:
            links.append(Link(f"https://fake.archive/{fs}_001_of_001.tar", "#this",
                              "application/x-tar", 3000, listing=f"{fs}_001_of_001.tar"))
            index[f"{fs}_001_of_001.tar"] = [
                Link(f"https://fake.archive/{fs}.cont.I.pbcor.fits", "#this",
                     "application/octet-stream", 1000),
                Link(f"https://fake.archive/{fs}.cube.I.pbcor.fits", "#this",
                     "application/octet-stream", 2000)]
        index[mous] = links
    return index


@pytest.fixture(scope="module")
def server():
    srv = serve_fake_archive(ObsCoreTable(archive_rows()), datalink_index())
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def urls(server):
    server.faults = {}
    host, port = server.server_address[:2]
    yield {"tap": f"http://{host}:{port}/tap", "datalink": f"http://{host}:{port}/datalink/sync"}
    server.faults = {}


@pytest.fixture
def archive(urls):
    return Archive(tap_url=urls["tap"], datalink_url=urls["datalink"], timeout_seconds=5)


@pytest.fixture
def cat(tmp_path):
    c = Catalog(tmp_path / "cat.sqlite")
    yield c
    c.close()


def snapshot(cat):
    return {t: [tuple(r) for r in cat.query(f"SELECT * FROM {t} ORDER BY 1")] for t in TABLES}


# ---------------------------------------------------------------------- happy paths
def test_m83_by_name_through_pyvo(cat, archive):
    adql, rs, s = ingest_query(cat, QueryFilters(names=["m83"]), archive)
    assert "LOWER(target_name) LIKE '%m83%'" in adql
    assert (s.projects.added, s.mous.added, s.targets.added) == (1, 1, 1)
    (t,) = cat.targets(M83)
    assert (t["alma_source_name"], t["asdm_uid"], t["band_list"]) == (
        "M83", "uid://A002/Xd74c3f/Xcf20", "3")
    assert (round(t["min_freq_ghz"], 2), round(t["max_freq_ghz"], 2)) == (112.35, 114.23)
    assert t["ang_res_arcsec"] == pytest.approx(1.5779, abs=1e-4)
    assert cat.mous(M83)["project_code"] == "2017.1.00079.S"
    # The archive has no DataLink entry for it: said, not fatal.
    assert any("NotFoundFault" in w for w in s.warnings)
    assert s.plans[0].source == "none"


def test_recorded_datalink_through_pyvo(cat, archive):
    _, rs, s = ingest_query(cat, QueryFilters(projects=["2017.1.01185.S"]), archive)
    assert (s.mous.added, s.targets.added) == (1, 2)
    assert sorted(t["spw_id"] for t in cat.targets(RECORDED_MOUS)) == [25, 27]
    files = cat.files(RECORDED_MOUS)
    raw = [f for f in files if f["kind"] == "raw"]
    assert len(raw) == 4 and sum(f["size"] for f in raw) == RAW_SUM
    products = [f for f in files if f["kind"] == "product"]
    # The product tarball was replaced by the six files its listing names.
    assert len(products) == 6 and not any(f["filename"].endswith(".tar") for f in products)
    assert {f["kind"] for f in files} == {"readme", "auxiliary", "raw", "product"}
    assert cat.mous(RECORDED_MOUS)["num_asdms"] == 4
    assert s.raw_only == [RECORDED_MOUS]
    assert cat.find_stage(RECORDED_MOUS, "verify").status == "pending"
    assert cat.find_stage(RECORDED_MOUS, "download").status == "pending"
    # Same query again: nothing changes.
    before = snapshot(cat)
    _, _, again = ingest_query(cat, QueryFilters(projects=["2017.1.01185.S"]), archive)
    assert (again.mous.unchanged, again.targets.unchanged, again.files.unchanged) == (1, 2, 12)
    assert snapshot(cat) == before


def test_synthetic_listing_is_followed_through_our_own_datalink(cat, archive):
    _, _, s = ingest_query(cat, QueryFilters(names=["SRC-00000"]), archive)
    files = {f["filename"]: f for f in cat.files(mous_uid(0))}
    assert {f["kind"] for f in files.values()} == {"readme", "raw", "product"}
    assert files[f"{mous_uid(0).replace('uid://', 'uid___').replace('/', '_')}"
                 ".cube.I.pbcor.fits"]["size"] == 2000
    assert s.plans[0].total_bytes == 1200 + 1_000_000 + 2_000_000


def test_hostile_name_is_one_literal(cat, archive, server):
    n_rows = len(server.rows_table)
    _, rs, s = ingest_query(cat, QueryFilters(names=[HOSTILE]), archive, datalink=False)
    assert {r.target["alma_source_name"] for r in rs.records} == {HOSTILE}
    assert s.targets.added == 1
    assert len(server.rows_table) == n_rows
    assert HOSTILE in cat.target_names(mous_uid(200))


@pytest.mark.parametrize("filters, expected", [
    (QueryFilters(position=(204.2471, -29.8689), radius_deg=0.5 / 60), {M83}),
    (QueryFilters(bands=[3]), {M83}),
    (QueryFilters(bands=[6], public_only=True, names=["SRC"]),
     {mous_uid(i) for i in range(6) if i != 4}),
    (QueryFilters(max_resolution=0.35, names=["SRC"]), {mous_uid(0), mous_uid(1)}),
    (QueryFilters(min_resolution=0.65, names=["SRC"]), {mous_uid(5)}),
    (QueryFilters(keywords=["DISKS AROUND"], names=["SRC"]),
     {mous_uid(0), mous_uid(2), mous_uid(4)}),
    (QueryFilters(names=["NoSuchSource"]), set()),
])
def test_filters_select_the_right_mous(archive, filters, expected):
    _, table = query_archive(filters, archive)
    assert {r.mous["mous_id"] for r in table.records().records} == expected


def test_empty_answer_ingests_nothing(cat, archive):
    _, rs, s = ingest_query(cat, QueryFilters(names=["NoSuchSource"]), archive)
    assert rs.records == [] and s.mous.total == 0
    assert all(rows == [] for rows in snapshot(cat).values())


def test_recorded_shapes_answer_through_pyvo(tmp_path):
    """The recorded VOTable, served verbatim, parses through pyvo; it lacks MOUS columns."""
    srv = serve_fake_archive((ARCHIVE_DIR / "alma-shapes.xml").read_bytes())
    try:
        host, port = srv.server_address[:2]
        _, table = query_archive("SELECT obs_publisher_did, s_ra, s_dec, frequency, s_region"
                                 " FROM ivoa.obscore", Archive(), f"http://{host}:{port}/tap")
    finally:
        srv.shutdown()
        srv.server_close()
    assert len(table.rows) == 5
    assert table.rows[3]["s_region"].startswith("Polygon ICRS 53.095155")
    with pytest.raises(IngestError, match="lacks required columns"):
        table.records()


# ---------------------------------------------------------------------- failures
@pytest.mark.parametrize("service, fault, message", [
    ("tap", "500", "failed with HTTP 500"),
    ("tap", "malformed", "unreadable answer"),
    ("tap", "error", "rejected the query: simulated service failure"),
    ("tap", "sleep:3", "did not answer within 1 s"),
])
def test_service_failures_leave_the_catalog_unchanged(cat, urls, server, service, fault,
                                                      message):
    archive = Archive(tap_url=urls["tap"], datalink_url=urls["datalink"], timeout_seconds=1)
    ingest_query(cat, QueryFilters(names=["M83"]), archive)
    before = snapshot(cat)
    server.faults = {service: fault}
    with pytest.raises(IngestError, match=message):
        ingest_query(cat, QueryFilters(projects=["2017.1.01185.S"]), archive)
    assert snapshot(cat) == before


@pytest.mark.parametrize("fault, message", [
    ("500", "failed with HTTP 500"), ("malformed", "unreadable answer"),
    ("sleep:3", "did not answer within 1 s")])
def test_one_unreachable_file_list_blocks_no_metadata(cat, urls, server, fault, message):
    """Issue #22 defect 6: file lists are resolved per MOUS; a MOUS whose DataLink call
    fails still lands (metadata, targets, stages), with a warning and an event, and the
    others get their files."""
    archive = Archive(tap_url=urls["tap"], datalink_url=urls["datalink"], timeout_seconds=1)
    _adql, records, _s = ingest_query(cat, QueryFilters(projects=["2019.1.00000.S"]), archive,
                                      dry_run=True)
    mous_ids = sorted({r.mous["mous_id"] for r in records.records})
    assert len(mous_ids) >= 2
    bad, good = mous_ids[0], mous_ids[1:]
    server.faults = {f"datalink:{bad}": fault}
    _adql, _r, summary = ingest_query(cat, QueryFilters(projects=["2019.1.00000.S"]), archive)
    assert set(cat.mous_ids()) == set(mous_ids)  # every MOUS's metadata landed
    assert not cat.files(bad) and all(cat.files(m) for m in good)
    warned = [w for w in summary.warnings if w.startswith(bad)]
    assert warned and message in warned[0] and "download stage resolves it" in warned[0]
    assert any("file list not resolved" in (e["reason"] or "") for e in cat.events(bad))
    assert cat.find_stage(bad, "download").status == "pending"


def test_download_stage_resolves_a_missing_file_list(tmp_path, urls, server, monkeypatch):
    """The download stage gets a file list ingest could not: an archive still down is a
    transient failure (retried with backoff), a reachable one fills the list in."""
    from sails.errors import SailsError, TransientError
    from sails.project import init_project
    from sails.stages.download import download_mous

    monkeypatch.setenv("SAILS_ARCHIVE__DATALINK_URL", urls["datalink"])
    monkeypatch.setenv("SAILS_ARCHIVE__TIMEOUT_SECONDS", "2")
    project = init_project(tmp_path / "p")
    archive = project.settings.archive
    server.faults = {"datalink": "500"}
    ingest_query(project.catalog, QueryFilters(projects=["2019.1.00000.S"]), Archive(
        tap_url=urls["tap"], datalink_url=urls["datalink"], timeout_seconds=2))
    mous = mous_uid(0)
    assert not project.catalog.files(mous)
    with pytest.raises(TransientError, match="HTTP 500"):
        download_mous(project, project.catalog, mous)
    server.faults = {}
    with pytest.raises(SailsError) as err:  # the files themselves are not served here
        download_mous(project, project.catalog, mous)
    assert "file list" not in str(err.value)
    assert project.catalog.files(mous), archive
    assert any("file list resolved" in (e["reason"] or "")
               for e in project.catalog.events(mous))


def test_unreachable_service(cat):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the query: nothing listens
    archive = Archive(tap_url=f"http://127.0.0.1:{port}/tap", timeout_seconds=2)
    with pytest.raises(IngestError, match="cannot reach the TAP service"):
        ingest_query(cat, QueryFilters(names=["M83"]), archive)


def test_truncated_answer_is_refused(cat, urls):
    archive = Archive(tap_url=urls["tap"], datalink_url=urls["datalink"], max_rows=5)
    with pytest.raises(IngestError, match="returned only the first 5 rows"):
        ingest_query(cat, QueryFilters(names=["SRC"]), archive)
    assert all(rows == [] for rows in snapshot(cat).values())


# ---------------------------------------------------------------------- the CLI
def run_cli(*args, env=None):
    from sails.cli import main

    old = sys.argv
    sys.argv = ["sails", *args]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    finally:
        sys.argv = old
    return code


@pytest.fixture
def project(tmp_path, urls, monkeypatch):
    from sails.project import init_project

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("SAILS_ARCHIVE__TAP_URL", urls["tap"])
    monkeypatch.setenv("SAILS_ARCHIVE__DATALINK_URL", urls["datalink"])
    monkeypatch.delenv("SAILS_PROJECT", raising=False)
    root = tmp_path / "proj"
    init_project(root)
    return root


def test_cli_query_dry_run_then_ingest_then_srdp(project, capsys):
    p = ["-p", str(project)]
    assert run_cli(*p, "ingest", "query", "--project", "2017.1.01185.S", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "50_kms_cloud" in out and "dry run: nothing written" in out
    cat = Catalog(project / "db" / "sails.sqlite")
    assert cat.mous_ids() == []
    assert run_cli(*p, "ingest", "query", "--project", "2017.1.01185.S", "--no-datalink") == 0
    out = capsys.readouterr().out
    assert "nothing resolved yet" in out and cat.files(RECORDED_MOUS) == []
    assert run_cli(*p, "ingest", "datalink") == 0  # every MOUS without files
    out = capsys.readouterr().out
    assert "1 MOUS has only raw ASDMs" in out and "raw: 4 ASDMs" in out
    assert "10.12 GB" in out
    assert run_cli(*p, "ingest", "query", "--project", "2017.1.01185.S") == 0
    out = capsys.readouterr().out
    assert cat.find_stage(RECORDED_MOUS, "verify").status == "pending"
    assert run_cli(*p, "ingest", "srdp", RECORDED_MOUS, "https://example.org/restore.tar") == 0
    out = capsys.readouterr().out
    assert "SRDP restore" in out
    assert run_cli(*p, "mous", "set-spw-remap", RECORDED_MOUS, '{"25": 0, "27": 1}') == 0
    assert cat.spw_remap(RECORDED_MOUS) == {25: 0, 27: 1}
    assert run_cli(*p, "ingest", "query", "--name", "@" + str(_names(project)),
                   "--no-datalink", "--json") == 0
    out = capsys.readouterr().out
    assert '"added": 1' in out
    cat.close()


def _names(project):
    path = project / "names.txt"
    path.write_text("# my targets\nM83\n\n")
    return path


@pytest.mark.parametrize("args, message", [
    (["ingest", "query"], "no search filter"),
    (["ingest", "query", "--band", "12"], "ALMA band must be an integer 1..10"),
    (["ingest", "query", "--position", "abc", "10"], "RA 'abc' is not an angle"),
    (["ingest", "query", "--position", "10", "-29", "--radius", "wide"], "radius 'wide'"),
    (["ingest", "query", "--project", "2017'; --"], "malformed project code"),
    (["ingest", "query", "--name", "@/no/such/file"], "cannot read the names file"),
    (["ingest", "csv", "/no/such.csv"], "no such file"),
    (["ingest", "srdp", "uid://A001/X1/X2", "https://x.org/a.tar"], "not in the catalog"),
    (["ingest", "srdp", "uid://bad", "https://x.org/a.tar"], "malformed MOUS uid"),
    (["mous", "set-spw-remap", "uid://A001/X1/X2", "{bad"], "not valid JSON"),
])
def test_cli_bad_input_is_one_clear_line(project, capsys, args, message):
    code = run_cli("-p", str(project), *args)
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 2, text
    assert message in text and "Traceback" not in text
    assert text.strip().count("\n") == 0, text


def test_cli_bad_csv_and_service_error_in_a_real_process(project, tmp_path, server):
    bad = tmp_path / "bad.csv"
    bad.write_text("MOUS_id,ALMA_source_name,RAJ2000,DEJ2000,project_code,obs_id\n"
                   "uid://A001/X1/X2,A,ten,-5,2019.1.00001.S,o1\n"
                   "uid://A001/X1,B,10,-5,2019.1.00001.S,o2\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "sails.cli.entry", "-p", str(project)]
    r = subprocess.run([*cmd, "ingest", "csv", str(bad)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr
    assert "2 bad rows" in r.stdout and "line 2: RAJ2000 'ten' is not a number" in r.stdout
    server.faults = {"tap": "500"}
    r = subprocess.run([*cmd, "ingest", "query", "--name", "M83"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr
    assert "failed with HTTP 500" in r.stdout
