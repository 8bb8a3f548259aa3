"""Archive ingest into a real SQLite catalog: idempotent upserts, one transaction per ingest,
the raw-only policy, SRDP registration, spw remaps, bad input and a 50,000-row CSV."""

from __future__ import annotations

import csv
import json

import pytest

from sails.archive import (
    download_plan,
    ingest_records,
    parse_datalink,
    parse_spw_remap,
    read_csv,
    read_obscore_file,
    register_srdp,
    set_spw_remap,
)
from sails.archive.rows import map_rows
from sails.catalog import Block, Catalog, new_owner
from sails.errors import IllegalTransitionError, IngestError, NotFoundError, UserInputError
from sails.fakes.tap import RECORDED_MOUS, shared_testdata_dir
from sails.pipeline import PIPELINE, Scope
from sails.sim.archive_rows import synthetic_rows, write_alminer_csv

ARCHIVE = shared_testdata_dir() / "alma-archive"
M83 = "uid://A001/X1295/X35"
TABLES = ("projects", "mous", "targets", "files", "stages", "events")


@pytest.fixture
def cat(tmp_path):
    c = Catalog(tmp_path / "cat.sqlite")
    yield c
    c.close()


def snapshot(cat: Catalog) -> dict[str, list[tuple]]:
    """Every row of every table (timestamps included): equal snapshots = nothing changed."""
    return {t: [tuple(r) for r in cat.query(f"SELECT * FROM {t} ORDER BY 1")] for t in TABLES}


def recorded_files():
    listing = parse_datalink((ARCHIVE / "alma-datalink.xml").read_bytes())
    return listing.files, listing.errors


def recorded_mous_rows():
    """ObsCore rows for the MOUS of the recorded DataLink answer (2017.1.01185.S)."""
    rows = synthetic_rows(1, 1, spws=[25, 27])
    for r in rows:
        r.update(member_ous_uid=RECORDED_MOUS, proposal_id="2017.1.01185.S",
                 target_name="50_kms_cloud",
                 obs_id=f"{RECORDED_MOUS}.source.50_kms_cloud.spw.{r['obs_id'][-2:]}",
                 group_ous_uid="uid://A001/X12a3/Xe8")
    return map_rows(list(rows[0]), rows, "recorded MOUS rows")


# ---------------------------------------------------------------------- the M83 row
def test_m83_row_lands_in_the_catalog(cat):
    summary = ingest_records(cat, read_obscore_file(ARCHIVE / "alma-onerow.txt").records())
    assert (summary.projects.added, summary.mous.added, summary.targets.added) == (1, 1, 1)
    m = cat.mous(M83)
    assert m["project_code"] == "2017.1.00079.S"
    assert m["group_ous_uid"] == "uid://A001/X1295/X34"
    assert m["obs_title"] == "Mapping Molecular ISM in the Whole Disk of M83"
    (t,) = cat.targets(M83)
    assert t["alma_source_name"] == "M83"
    assert t["asdm_uid"] == "uid://A002/Xd74c3f/Xcf20"
    assert t["band_list"] == "3"
    assert t["ang_res_arcsec"] == pytest.approx(1.578, abs=1e-3)
    assert (round(t["min_freq_ghz"], 2), round(t["max_freq_ghz"], 2)) == (112.35, 114.23)
    assert t["freq_res_khz"] == pytest.approx(1952.95)
    assert t["spw_id"] is None  # this obs_id names no spw
    assert "[113.81..115.79GHz" in t["frequency_support"]
    p = cat.query("SELECT * FROM projects")[0]
    assert (p["project_code"], p["pi_name"]) == ("2017.1.00079.S", "Koda, Jin")
    assert {(s.stage, s.target, s.status) for s in cat.stages(M83)} == {
        ("download", "", "pending"), ("restore", "", "pending"), ("verify", "", "pending"),
        ("split", "", "pending"), ("findcont", "", "pending"), ("auto_selfcal", "", "pending"),
        ("cleanup", "", "pending"),
        ("selfcal", "M83", "pending"), ("image", "M83", "pending")}


def test_reingesting_the_same_rows_changes_nothing(cat):
    rs = read_obscore_file(ARCHIVE / "alma-onerow.txt").records()
    ingest_records(cat, rs)
    before = snapshot(cat)
    again = ingest_records(cat, read_obscore_file(ARCHIVE / "alma-onerow.txt").records())
    assert (again.projects.unchanged, again.mous.unchanged, again.targets.unchanged) == (1, 1, 1)
    assert again.mous.added == again.mous.updated == 0
    assert snapshot(cat) == before


def test_empty_response_ingests_nothing(cat):
    summary = ingest_records(cat, read_obscore_file(ARCHIVE / "alma-empty.txt").records())
    assert summary.projects.total == summary.mous.total == summary.targets.total == 0
    assert summary.plans == []
    assert all(rows == [] for rows in snapshot(cat).values())


def test_newer_row_updates_metadata_but_not_stage_states(cat):
    rows = synthetic_rows(1, 1, spws=[25, 27])
    ingest_records(cat, map_rows(list(rows[0]), rows, "v1"))
    mous = rows[0]["member_ous_uid"]
    owner = new_owner()
    dl = cat.claim(cat.find_stage(mous, "download").id, owner)
    cat.complete(dl.id, owner)
    states = [(s.stage, s.target, s.status, s.attempts) for s in cat.stages(mous)]
    newer = [dict(r, obs_title="Re-reduced survey", pwv=0.7,
                  lastModified="2023-02-02T00:00:00.000") for r in rows]
    s = ingest_records(cat, map_rows(list(rows[0]), newer, "v2"))
    assert (s.mous.updated, s.targets.updated, s.projects.unchanged) == (1, 2, 1)
    assert cat.mous(mous)["obs_title"] == "Re-reduced survey"
    assert {t["pwv"] for t in cat.targets(mous)} == {0.7}
    assert [(s.stage, s.target, s.status, s.attempts) for s in cat.stages(mous)] == states


def test_a_poorer_table_never_blanks_richer_metadata(cat, tmp_path):
    ingest_records(cat, read_obscore_file(ARCHIVE / "alma-onerow.txt").records())
    path = tmp_path / "few.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["MOUS_id", "ALMA_source_name", "RAJ2000", "DEJ2000", "project_code",
                    "obs_id"])
        w.writerow([M83, "M83", "204.24712522989094", "-29.868853678162907",
                    "2017.1.00079.S", M83])
    s = ingest_records(cat, read_csv(path).records())
    assert (s.mous.unchanged, s.targets.unchanged) == (1, 1)
    assert cat.mous(M83)["obs_title"].startswith("Mapping Molecular ISM")


def test_dry_run_writes_nothing_but_counts(cat):
    rows = synthetic_rows(2, 2)
    s = ingest_records(cat, map_rows(list(rows[0]), rows, "x"), dry_run=True)
    assert (s.projects.added, s.mous.added, s.targets.added) == (1, 2, 16)
    assert s.dry_run and len(s.plans) == 2
    assert all(rows == [] for rows in snapshot(cat).values())


# ---------------------------------------------------------------------- bad input
def test_bad_rows_leave_the_catalog_unchanged(cat, tmp_path):
    rows = synthetic_rows(3, 1, spws=[25])
    rows[1]["member_ous_uid"] = "uid://A001/X2001"  # malformed
    rows[2]["s_dec"] = "south"
    path = write_alminer_csv(rows, tmp_path / "bad.csv")
    rows_ok = synthetic_rows(1, 1, spws=[25], start=10)
    ingest_records(cat, map_rows(list(rows_ok[0]), rows_ok, "ok"))
    before = snapshot(cat)
    with pytest.raises(IngestError, match="2 bad rows"):
        ingest_records(cat, read_csv(path).records())
    assert snapshot(cat) == before
    s = ingest_records(cat, read_csv(path).records(), skip_bad=True)
    assert (s.mous.added, len(s.skipped)) == (1, 2)


def test_a_failure_mid_ingest_rolls_everything_back(cat):
    rows = synthetic_rows(2, 1, spws=[25])
    rs = map_rows(list(rows[0]), rows, "x")
    rs.records[1].target["alma_source_name"] = ""  # the catalog refuses this row
    with pytest.raises(UserInputError):
        ingest_records(cat, rs)
    assert all(r == [] for r in snapshot(cat).values())


def test_fifty_thousand_row_csv(cat, tmp_path):
    """Correctness at scale (the time is measured in benchmarks/ingest_scale.py)."""
    rows = synthetic_rows(6250, 2)  # 6250 MOUS x 2 sources x 4 spws
    path = write_alminer_csv(rows, tmp_path / "big.csv")
    rs = read_csv(path).records()
    assert (rs.rows_read, len(rs.records), rs.problems) == (50_000, 50_000, [])
    s = ingest_records(cat, rs)
    assert (s.mous.added, s.targets.added) == (6250, 50_000)
    per_mous, per_target = (len(PIPELINE.at_scope(sc)) for sc in (Scope.MOUS, Scope.TARGET))
    assert cat.query("SELECT COUNT(*) FROM stages")[0][0] == \
        6250 * per_mous + 6250 * 2 * per_target
    assert cat.query("SELECT COUNT(DISTINCT spw_id) FROM targets")[0][0] == 4


# ---------------------------------------------------------------------- raw-only policy
def test_raw_only_mous_goes_to_restore_and_keeps_download_pending(cat):
    s = ingest_records(cat, recorded_mous_rows(), {RECORDED_MOUS: recorded_files()})
    assert s.raw_only == [RECORDED_MOUS] and s.files.added == 7
    # the restore stage restores the delivery before verify: nothing is blocked
    for stage in ("restore", "verify"):
        assert cat.find_stage(RECORDED_MOUS, stage).status == "pending"
    assert cat.find_stage(RECORDED_MOUS, "download").status == "pending"
    assert cat.mous(RECORDED_MOUS)["num_asdms"] == 4
    raw = [f for f in cat.files(RECORDED_MOUS) if f["kind"] == "raw"]
    assert sum(f["size"] for f in raw) == 9_984_396_288
    plan = download_plan(cat, RECORDED_MOUS)
    assert (plan.source, plan.needs_restore) == ("raw", True)
    assert sorted(f["kind"] for f in plan.files) == ["auxiliary", "raw", "raw", "raw", "raw",
                                                     "readme"]
    assert plan.total_bytes == 9_984_396_288 + 135_479_296 + 3523
    # Re-ingesting the same rows and files changes nothing, not even an event.
    before = snapshot(cat)
    again = ingest_records(cat, recorded_mous_rows(), {RECORDED_MOUS: recorded_files()})
    assert again.raw_only == [RECORDED_MOUS] and again.files.unchanged == 7
    assert snapshot(cat) == before


def test_srdp_url_takes_precedence_and_unblocks_verify(cat):
    ingest_records(cat, recorded_mous_rows(), {RECORDED_MOUS: recorded_files()})
    url = "https://almascience.org/dataPortal/requests/anonymous/123/restore.tar"
    res = register_srdp(cat, RECORDED_MOUS, url)
    assert res.changed and not res.unblocked and not res.download_reset
    assert cat.find_stage(RECORDED_MOUS, "verify").status == "pending"
    assert cat.mous(RECORDED_MOUS)["srdp_url"] == url
    srdp = [f for f in cat.files(RECORDED_MOUS) if f["kind"] == "srdp"]
    assert [(f["url"], f["filename"]) for f in srdp] == [(url, "restore.tar")]
    plan = download_plan(cat, RECORDED_MOUS)
    assert plan.source == "srdp" and not plan.needs_restore
    assert sorted(f["kind"] for f in plan.files) == ["readme", "srdp"]
    # Registering again changes nothing; a later ingest does not re-block verify.
    before = snapshot(cat)
    again = register_srdp(cat, RECORDED_MOUS, url)
    assert not again.changed and not again.unblocked
    assert snapshot(cat) == before
    s = ingest_records(cat, recorded_mous_rows(), {RECORDED_MOUS: recorded_files()})
    assert s.raw_only == [] and cat.find_stage(RECORDED_MOUS, "verify").status == "pending"


def test_srdp_after_a_raw_download_sends_the_download_back(cat):
    ingest_records(cat, recorded_mous_rows(), {RECORDED_MOUS: recorded_files()})
    owner = new_owner()
    dl = cat.claim(cat.find_stage(RECORDED_MOUS, "download").id, owner)
    with pytest.raises(IllegalTransitionError, match="download is running"):
        register_srdp(cat, RECORDED_MOUS, "https://example.org/restore.tar")
    cat.complete(dl.id, owner)
    res = register_srdp(cat, RECORDED_MOUS, "https://example.org/restore.tar")
    assert res.download_reset
    assert cat.find_stage(RECORDED_MOUS, "download").status == "pending"
    assert cat.find_stage(RECORDED_MOUS, "restore").status == "pending"
    assert cat.find_stage(RECORDED_MOUS, "verify").status == "pending"


def test_a_block_set_by_a_person_is_not_lifted_by_srdp(cat):
    rows = synthetic_rows(1, 1, spws=[25])
    ingest_records(cat, map_rows(list(rows[0]), rows, "x"))
    mous = rows[0]["member_ous_uid"]
    verify = cat.find_stage(mous, "verify")
    cat.block(verify.id, None, Block.USER, "QA2 semi-pass: check by hand")
    res = register_srdp(cat, mous, "https://example.org/r.tar")
    assert not res.unblocked
    assert cat.find_stage(mous, "verify").reason == "QA2 semi-pass: check by hand"


@pytest.mark.parametrize("mous, url, error", [
    ("uid://A001/X1", "https://x.org/a.tar", UserInputError),
    ("uid://A001/X9999/X1", "https://x.org/a.tar", NotFoundError),
    (M83, "ftp://x.org/a.tar", UserInputError),
    (M83, "https://x.org/a b.tar", UserInputError),
    (M83, "not a url", UserInputError),
])
def test_srdp_bad_input(cat, mous, url, error):
    ingest_records(cat, read_obscore_file(ARCHIVE / "alma-onerow.txt").records())
    with pytest.raises(error):
        register_srdp(cat, mous, url)


# ---------------------------------------------------------------------- spw remap
def test_spw_remap_is_validated_and_stored(cat):
    rows = synthetic_rows(1, 1)
    ingest_records(cat, map_rows(list(rows[0]), rows, "x"))
    mous = rows[0]["member_ous_uid"]
    mapping, unknown = set_spw_remap(cat, mous, '{"31": 3, "25": 0, "27": 1, "29": 2}')
    assert mapping == {31: 3, 25: 0, 27: 1, 29: 2} and unknown == []
    assert json.loads(cat.mous(mous)["spw_remap"]) == {"25": 0, "27": 1, "29": 2, "31": 3}
    assert cat.spw_remap(mous) == {25: 0, 27: 1, 29: 2, 31: 3}
    _, unknown = set_spw_remap(cat, mous, '{"17": 0}')
    assert unknown == [17]
    set_spw_remap(cat, mous, "{}")
    assert cat.mous(mous)["spw_remap"] is None


@pytest.mark.parametrize("text, message", [
    ("{bad", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"a": 0}', "not an integer spw id"),
    ('{"25": "0"}', "must be an integer"),
    ('{"25": 0.5}', "must be an integer"),
    ('{"25": true}', "must be an integer"),
    ('{"25": -1}', "non-negative"),
    ('{"25": 0, "25": 1}', "given twice"),
    ('{"25": 0, "27": 0}', "several spws"),
    ('{"25": {"x": 1}}', "must be an integer"),
])
def test_spw_remap_bad_input(text, message):
    with pytest.raises(UserInputError, match=message):
        parse_spw_remap(text)
