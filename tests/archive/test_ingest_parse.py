"""Archive ingest, pure parts: ADQL building, frequency_support, row mapping, input tables,
DataLink documents — against the recorded real ALMA responses and synthetic rows."""

from __future__ import annotations

import csv

import pytest

from sails.archive import (
    QueryFilters,
    adql_string,
    build_query,
    parse_datalink,
    parse_frequency_support,
    read_csv,
    read_obscore_file,
    spw_from_obs_id,
)
from sails.archive.fsupport import matching_window
from sails.archive.rows import map_rows
from sails.errors import IngestError, UserInputError
from sails.fakes.tap import AdqlError, ObsCoreTable, shared_testdata_dir, translate
from sails.sim.archive_rows import synthetic_rows, write_alminer_csv

ARCHIVE = shared_testdata_dir() / "alma-archive"
M83_FSUPPORT = (
    "[112.35..114.23GHz,1952.95kHz,8mJy/beam@10km/s,360.2uJy/beam@native, XX YY] U "
    "[113.81..115.79GHz,31247.16kHz,9.9mJy/beam@10km/s,433.6uJy/beam@native, XX YY] U "
    "[114.84..115.31GHz,488.24kHz,8.2mJy/beam@10km/s,739.3uJy/beam@native, XX YY] U "
    "[114.95..115.19GHz,122.06kHz,8.2mJy/beam@10km/s,1mJy/beam@native, XX YY]"
)


def test_recorded_testdata_is_present():
    names = {p.name for p in ARCHIVE.iterdir()}
    assert {"alma-onerow.txt", "alma-empty.txt", "alma-shapes.xml", "alma-datalink.xml",
            "alma-datalink-recurse-this.xml"} <= names


# ---------------------------------------------------------------------- ADQL
HOSTILE = "O'Neil'); DROP TABLE obscore; --"


def test_adql_string_doubles_quotes_and_refuses_control_characters():
    assert adql_string("it's") == "'it''s'"
    with pytest.raises(UserInputError):
        adql_string("a\nb")


def test_quote_in_a_source_name_stays_one_literal():
    q = build_query(QueryFilters(names=[HOSTILE, "M83"]))
    assert "'%o''neil''); drop table obscore; --%'" in q
    # Parsed back by an ADQL tokenizer, the name is exactly one string literal.
    tr = translate(q, ["target_name", "member_ous_uid", "obs_id"])
    assert tr.params == ["%o'neil'); drop table obscore; --%", "%m83%"]
    assert "drop" not in tr.sql.lower()


def test_build_query_with_every_filter():
    q = build_query(QueryFilters(
        names=["M83"], position=(204.25, -29.87), radius_deg=0.5 / 60,
        projects=["2017.1.00079.S"], keywords=["galaxies"], bands=[3, 6], public_only=True,
        min_resolution=0.1, max_resolution=2.0))
    assert q.startswith("SELECT * FROM ivoa.obscore WHERE ")
    assert "INTERSECTS(CIRCLE('ICRS', 204.25, -29.87, 0.008333333333333333), s_region)" in q
    assert "proposal_id = '2017.1.00079.S'" in q
    assert "band_list = '3'" in q and "band_list LIKE '% 6 %'" in q
    assert "data_rights = 'Public'" in q
    assert "spatial_resolution >= 0.1" in q and "spatial_resolution <= 2.0" in q
    assert q.endswith("ORDER BY member_ous_uid, target_name, obs_id")
    # Our own fake understands every query we generate.
    translate(q, list(synthetic_rows(1, 1, spws=[25])[0]))


@pytest.mark.parametrize("filters, message", [
    (QueryFilters(), "no search filter"),
    (QueryFilters(public_only=True), "no search filter"),
    (QueryFilters(bands=[12]), "band"),
    (QueryFilters(projects=["2017.1.00079.S' OR 1=1 --"]), "malformed project code"),
    (QueryFilters(position=(400.0, 0.0)), "out of range"),
    (QueryFilters(position=(10.0, 0.0), radius_deg=0.0), "radius"),
    (QueryFilters(min_resolution=2.0, max_resolution=1.0), "larger than"),
    (QueryFilters(min_resolution=float("nan")), "finite"),
    (QueryFilters(names=["  "]), "empty source name"),
])
def test_build_query_refuses_bad_filters(filters, message):
    with pytest.raises(UserInputError, match=message):
        build_query(filters)


def test_fake_refuses_what_it_cannot_run():
    cols = ["target_name", "s_ra"]
    for bad in ("DELETE FROM ivoa.obscore", "SELECT * FROM other",
                "SELECT * FROM ivoa.obscore WHERE nosuchcol = 1",
                "SELECT * FROM ivoa.obscore WHERE (s_ra > 1", "SELECT * FROM ivoa.obscore; x",
                'SELECT * FROM ivoa.obscore WHERE "target_name" = 1'):
        with pytest.raises(AdqlError):
            translate(bad, cols)


# ---------------------------------------------------------------------- frequency_support
def test_frequency_support_of_the_m83_row():
    ws = parse_frequency_support(M83_FSUPPORT)
    assert [(w.min_ghz, w.max_ghz) for w in ws] == [
        (112.35, 114.23), (113.81, 115.79), (114.84, 115.31), (114.95, 115.19)]
    assert [w.res_khz for w in ws] == pytest.approx([1952.95, 31247.16, 488.24, 122.06])
    assert [w.sens_10kms_ujy for w in ws] == pytest.approx([8000, 9900, 8200, 8200])
    assert [w.sens_native_ujy for w in ws] == pytest.approx([360.2, 433.6, 739.3, 1000.0])
    assert ws[0].pols == "XX YY"
    assert matching_window(ws, 112.3545, 114.2284) is ws[0]
    assert matching_window(ws, 100.0, 101.0) is None


def test_frequency_support_is_lenient():
    assert parse_frequency_support("") == []
    assert parse_frequency_support("garbage [no..range] U [") == []
    ws = parse_frequency_support("[84000..86000MHz,,, XX] U [1..2GHz,15.6kHz]")
    assert (ws[0].min_ghz, ws[0].max_ghz, ws[0].res_khz) == (84.0, 86.0, None)
    assert ws[1].res_khz == pytest.approx(15.6)


def test_spw_from_obs_id():
    assert spw_from_obs_id("uid://A001/X1465/X2f66.source.HOPS_56.spw.33") == 33
    assert spw_from_obs_id("uid://A001/X158f/X745.source.CANDELS_-_GOODS_South.spw.29") == 29
    assert spw_from_obs_id("uid://A001/X1295/X35") is None
    assert spw_from_obs_id(None) is None


# ---------------------------------------------------------------------- recorded answers
def test_onerow_maps_to_the_m83_records():
    rs = read_obscore_file(ARCHIVE / "alma-onerow.txt").records()
    assert rs.problems == [] and len(rs.records) == 1
    r = rs.records[0]
    assert r.project["project_code"] == "2017.1.00079.S"
    assert r.project["pi_name"] == "Koda, Jin"
    assert r.mous["mous_id"] == "uid://A001/X1295/X35"
    assert r.mous["group_ous_uid"] == "uid://A001/X1295/X34"
    assert r.mous["obs_release_date"] == "2020-03-03T03:20:58.000"  # b'...' unwrapped
    t = r.target
    assert t["alma_source_name"] == "M83"
    assert t["asdm_uid"] == "uid://A002/Xd74c3f/Xcf20"
    assert t["band_list"] == "3"
    assert t["ang_res_arcsec"] == pytest.approx(1.5779219110458824)
    assert t["min_freq_ghz"] == pytest.approx(112.35, abs=0.01)
    assert t["max_freq_ghz"] == pytest.approx(114.23, abs=0.01)
    assert t["freq_res_khz"] == pytest.approx(1952.95)
    assert t["line_sens_native"] == pytest.approx(360.2)
    assert t["line_sens_10kms"] == pytest.approx(8023.585, rel=1e-4)
    assert t["fov_arcsec"] == pytest.approx(0.1650122764060855 * 3600)
    assert t["is_mosaic"] == 1
    assert t["s_region"].startswith("Polygon ICRS 204.319476")
    assert len(parse_frequency_support(t["frequency_support"])) == 4


def test_empty_response_maps_to_nothing():
    rs = read_obscore_file(ARCHIVE / "alma-empty.txt").records()
    assert (rs.rows_read, rs.records, rs.problems) == (0, [], [])


def test_shapes_votable_parses_and_lacks_only_the_mous_columns():
    table = read_obscore_file(ARCHIVE / "alma-shapes.xml")
    assert len(table.rows) == 5
    assert table.rows[1]["s_region"].startswith("Union ICRS ( Polygon")
    with pytest.raises(IngestError) as err:
        table.records()
    msg = str(err.value)
    # One error that lists every missing required column.
    for col in ("member_ous_uid or MOUS_id", "target_name or ALMA_source_name",
                "proposal_id or project_code", "obs_id"):
        assert col in msg
    assert "s_ra" not in msg


def test_shapes_regions_are_searchable_in_the_fake():
    t = ObsCoreTable.from_file(str(ARCHIVE / "alma-shapes.xml"))
    _, rows, _ = t.query(
        "SELECT obs_publisher_did FROM ivoa.obscore WHERE 1 = INTERSECTS("
        "CIRCLE('ICRS', 266.68, -28.70, 0.01), s_region)")
    # Only the Union of polygons around the Galactic centre reaches that far.
    assert [r[0] for r in rows] == ["ADS/JAO.ALMA#2013.1.01014.S"]
    _, rows, _ = t.query("SELECT s_ra FROM ivoa.obscore WHERE 1 = CONTAINS("
                         "POINT('ICRS', 83.831, -5.2606), s_region)")
    assert len(rows) == 1


def test_datalink_answer_gives_four_raw_asdms():
    listing = parse_datalink((ARCHIVE / "alma-datalink.xml").read_bytes())
    raw = [f for f in listing.files if f.kind == "raw"]
    assert len(raw) == 4
    assert sum(f.size for f in raw) == 9_984_396_288
    assert all(f.semantics == "#progenitor" and f.url.endswith(".asdm.sdm.tar") for f in raw)
    kinds = sorted(f.kind for f in listing.files)
    assert kinds == ["auxiliary", "product", "raw", "raw", "raw", "raw", "readme"]
    readme = next(f for f in listing.files if f.kind == "readme")
    assert (readme.size, readme.content_type) == (3523, "text/plain")
    assert listing.descriptors == [
        ("#this", "2017.1.01185.S_uid___A001_X12a3_Xe9_001_of_001.tar"),
        ("#auxiliary", "2017.1.01185.S_uid___A001_X12a3_Xe9_auxiliary.tar")]


def test_datalink_listing_one_level_down():
    listing = parse_datalink((ARCHIVE / "alma-datalink-recurse-this.xml").read_bytes())
    assert len(listing.files) == 6  # the two #cutout service rows are not files
    assert {f.kind for f in listing.files} == {"product"}
    assert sum(f.size for f in listing.files) == 556_267_157


def test_unreadable_datalink_document():
    with pytest.raises(IngestError, match="unreadable DataLink"):
        parse_datalink(b"<VOTABLE><oops")


# ---------------------------------------------------------------------- ALminer CSV
def _write(path, header, rows):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_alminer_csv_maps_like_the_obscore_rows(tmp_path):
    rows = synthetic_rows(3, 2)
    path = write_alminer_csv(rows, tmp_path / "alminer.csv")
    rs = read_csv(path).records()
    assert rs.problems == [] and len(rs.records) == 24
    direct = map_rows(list(rows[0]), rows, "rows").records
    for a, b in zip(rs.records, direct, strict=True):
        assert a.key == b.key
        for k in ("min_freq_ghz", "max_freq_ghz", "freq_res_khz", "line_sens_native",
                  "cont_sens_bandwidth", "ra", "dec", "spw_id"):
            assert a.target[k] == pytest.approx(b.target[k]), k


def test_alminer_only_columns_are_enough(tmp_path):
    """An ALminer CSV that kept only its own columns (and obs_id) still ingests."""
    path = _write(tmp_path / "small.csv",
                  ["Obs", "project_code", "ALMA_source_name", "RAJ2000", "DEJ2000",
                   "min_freq_GHz", "max_freq_GHz", "freq_res_kHz", "LAS_arcsec", "FoV_arcsec",
                   "MOUS_id", "obs_id", "s_fov", "type", "some_new_column"],
                  [[1, "2019.1.00001.S", "IRAS 16293-2422", "248.09", "-24.47", "216.0",
                    "217.9", "976.56", "3.5", "25.0", "uid___A001_X2000_X1",
                    "uid://A001/X2000/X1.source.IRAS_16293-2422.spw.25", "0.0069", "S", "x"]])
    rs = read_csv(path).records()
    assert rs.problems == []
    r = rs.records[0]
    assert r.mous["mous_id"] == "uid://A001/X2000/X1"  # file-system form accepted
    assert r.mous["obs_type"] == "S"
    assert (r.target["min_freq_ghz"], r.target["max_freq_ghz"]) == (216.0, 217.9)
    assert r.target["fov_arcsec"] == pytest.approx(0.0069 * 3600)  # s_fov wins over FoV
    assert r.target["las_arcsec"] == 3.5 and r.target["spw_id"] == 25
    assert "obs_title" not in r.mous  # absent columns are not written as NULL


def test_missing_columns_are_listed_in_one_error(tmp_path):
    path = _write(tmp_path / "bad.csv", ["ALMA_source_name", "RAJ2000", "my_notes"],
                  [["M83", "1", "2"]])
    with pytest.raises(IngestError) as err:
        read_csv(path).records()
    msg = err.value.one_line()
    assert "lacks required columns" in msg
    for col in ("MOUS_id", "DEJ2000", "project_code", "obs_id"):
        assert col in msg
    assert "my_notes" not in msg


def test_bad_rows_are_all_reported(tmp_path):
    header = ["MOUS_id", "ALMA_source_name", "RAJ2000", "DEJ2000", "project_code", "obs_id"]
    good = ["uid://A001/X1/X2", "A", "10.0", "-5", "2019.1.00001.S", "o1"]
    path = _write(tmp_path / "bad.csv", header, [
        good,
        ["uid://A001/X1", "B", "10", "-5", "2019.1.00001.S", "o2"],          # line 3
        ["uid://A001/X1/X2; rm -rf /", "C", "10", "-5", "2019.1.00001.S", "o3"],
        ["uid://A001/X1/X2", "D", "ten", "-5", "2019.1.00001.S", "o4"],      # line 5
        ["uid://A001/X1/X2", "E", "10", "95", "2019.1.00001.S", "o5"],
        ["uid://A001/X1/X2", "F", "inf", "5", "2019.1.00001.S", "o6"],
        ["uid://A001/X1/X2", "", "10", "5", "2019.1.00001.S", "o7"],
    ])
    rs = read_csv(path).records()
    assert len(rs.records) == 1
    assert [p.split(":")[0] for p in rs.problems] == [
        "line 3", "line 4", "line 5", "line 6", "line 7", "line 8"]
    assert "malformed MOUS uid 'uid://A001/X1'" in rs.problems[0]
    assert "RAJ2000 'ten' is not a number" in rs.problems[2]
    with pytest.raises(IngestError) as err:
        rs.raise_if_problems()
    assert err.value.one_line().startswith("6 bad rows in")
    assert "and 1 more" in str(err.value)


def test_duplicate_rows():
    rows = synthetic_rows(1, 1, spws=[25, 27])
    newer = dict(rows[0], obs_title="Renamed", lastModified="2022-01-01T00:00:00.000")
    clash = dict(rows[1], obs_title="Other title")
    cols = list(rows[0])
    same = map_rows(cols, rows + [dict(rows[0])], "x")
    assert (len(same.records), same.duplicates, same.problems) == (2, 1, [])
    upd = map_rows(cols, rows + [newer], "x")
    assert upd.problems == [] and upd.records[0].mous["obs_title"] == "Renamed"
    bad = map_rows(cols, rows + [clash], "x")
    assert len(bad.problems) == 1 and "conflicts with row 2" in bad.problems[0]


def test_obscore_file_formats(tmp_path):
    from astropy.table import Table

    rows = synthetic_rows(2, 1, spws=[25])
    t = Table(rows=[[r[c] if r[c] is not None else -1 for c in rows[0]] for r in rows],
              names=list(rows[0]))
    t.write(tmp_path / "rows.ecsv")
    t.write(tmp_path / "rows.xml", format="votable")
    for name in ("rows.ecsv", "rows.xml"):
        rs = read_obscore_file(tmp_path / name).records()
        assert rs.problems == [] and len(rs.records) == 2, name
        assert rs.records[0].target["spw_id"] == 25
    (tmp_path / "junk.xml").write_text("<VOTABLE><RESOURCE>")
    with pytest.raises(IngestError, match="junk.xml"):
        read_obscore_file(tmp_path / "junk.xml")
    with pytest.raises(UserInputError, match="no such file"):
        read_obscore_file(tmp_path / "missing.ecsv")


def test_saved_tap_error_document_is_reported(tmp_path):
    from sails.fakes.tap import error_votable

    (tmp_path / "err.xml").write_bytes(error_votable("Query timeout after 600 s"))
    with pytest.raises(IngestError, match="failed TAP query: Query timeout after 600 s"):
        read_obscore_file(tmp_path / "err.xml")
