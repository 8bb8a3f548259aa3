"""Source grouping (issue 16's must-show): MOUS of one group OUS with 12-m and 7-m become
one source; a same-name target elsewhere does not join; a MOUS added later re-opens the
source and the catalog says why; the [sources] rules change the grouping. On the real
ALMA ObsCore row of M83 (2017.1.00079.S) and sibling MOUS as ALMA delivers them."""

from __future__ import annotations

import json

import pytest

from sails.catalog import Catalog
from sails.sources import Member, Rules, Window, array_of, group, members_fingerprint
from sources_rows import M83_7M, M83_12M, M83_TP, ingest, real_row, sibling

OTHER_GROUP = "uid://A001/X1400/X10"


@pytest.fixture
def cat(tmp_path):
    c = Catalog(tmp_path / "c.sqlite")
    yield c
    c.close()


def test_arrays_from_the_real_antenna_list():
    _cols, row = real_row()
    assert array_of(row["antenna_arrays"]) == "12m"  # DA/DV antennas
    assert array_of("J501:CM01 J502:CM02") == "7m"
    assert array_of("T701:PM01 T702:PM02") == "TP"
    assert array_of("") == array_of(None) == "unknown"


def test_12m_and_7m_of_one_group_become_one_source(cat):
    cols, row = real_row()
    ingest(cat, cols, [row, sibling(row, M83_7M, "7m"), sibling(row, M83_TP, "TP")])
    result = cat.regroup_sources(Rules())
    [(name, src)] = result.sources
    assert name == "M83"
    assert {j.member.mous_id for j in src.members} == {M83_12M, M83_7M, M83_TP}
    assert {j.member.mous_id: j.array for j in src.members} == {
        M83_12M: "12m", M83_7M: "7m", M83_TP: "TP"}
    assert src.arrays == ("12m", "7m", "TP")
    assert {j.joined_by for j in src.members} == {"group"}
    # the real row's four band-3 windows, brought by every array: common set-ups
    assert len(src.setups) >= 1 and all(s.common for s in src.setups)
    assert src.setups[0].arrays == ("12m", "7m", "TP")
    stored = cat.source("M83")
    assert stored["arrays"] == ["12m", "7m", "TP"]
    assert {m["mous_id"] for m in stored["members"]} == {M83_12M, M83_7M, M83_TP}
    assert stored["members_fp"] == src.fingerprint
    assert stored["change_reason"].startswith("new source of 3 member(s)")
    assert cat.regroup_sources(Rules()).changes == []  # regrouping again changes nothing


def test_same_name_elsewhere_does_not_join(cat):
    cols, row = real_row()
    far = sibling(row, "uid://A001/X1400/X11", resolution=1.2, group=OTHER_GROUP,
                  offset_arcsec=(0.0, 600.0))  # M83 again, 10 arcmin north: another field
    near = sibling(row, "uid://A001/X1400/X13", resolution=0.4, group="uid://A001/X1400/X12",
                   offset_arcsec=(3.0, -4.0))  # another project re-observing the field
    ingest(cat, cols, [row, sibling(row, M83_7M, "7m"), far, near])
    result = cat.regroup_sources(Rules(tolerance_arcsec=20))
    by_name = {n: {j.member.mous_id for j in s.members} for n, s in result.sources}
    assert by_name == {"M83": {M83_12M, M83_7M, "uid://A001/X1400/X13"},
                       "M83_2": {"uid://A001/X1400/X11"}}
    m83 = dict(result.sources)["M83"]
    joined = {j.member.mous_id: j.joined_by for j in m83.members}
    assert joined["uid://A001/X1400/X13"] == "name"
    # two 12-m resolutions (1.58" and 0.4"): TM1 is the extended (finer) configuration
    configs = {j.member.mous_id: j.label for j in m83.members}
    assert configs == {M83_12M: "12m-TM2", "uid://A001/X1400/X13": "12m-TM1", M83_7M: "7m"}
    # within = "group": the other project's observation stands alone
    grouped = group(cat.source_members_input(), Rules(within="group"))
    assert sorted(len(s.members) for s in grouped) == [1, 1, 2]


def test_same_name_in_the_same_group_but_another_field_does_not_join(cat):
    """A group OUS whose SBs reuse a name for two fields: the group rule needs the fields
    to overlap (the real M83 mosaic is 594 arcsec wide)."""
    cols, row = real_row()
    assert float(row["s_fov"]) * 3600 == pytest.approx(594, abs=1)
    inside = sibling(row, M83_7M, "7m", offset_arcsec=(200.0, 0.0))  # 7-m centred apart
    elsewhere = sibling(row, "uid://A001/X1295/X3b", "7m", offset_arcsec=(0.0, 1800.0))
    ingest(cat, cols, [row, inside, elsewhere])
    by_name = {n: {j.member.mous_id for j in s.members}
               for n, s in cat.regroup_sources(Rules()).sources}
    assert by_name == {"M83": {M83_12M, M83_7M}, "M83_2": {"uid://A001/X1295/X3b"}}


def test_a_mous_added_later_reopens_the_source(cat):
    cols, row = real_row()
    ingest(cat, cols, [row, sibling(row, M83_7M, "7m")])
    cat.regroup_sources(Rules())
    before = cat.source("M83")
    ingest(cat, cols, [sibling(row, M83_TP, "TP")])  # TP delivered later
    changes = cat.regroup_sources(Rules()).changes
    assert [(c.name, c.kind, c.added) for c in changes] == [
        ("M83", "members", [(M83_TP, "M83")])]
    after = cat.source("M83")
    assert after["id"] == before["id"]  # the same source, re-opened
    assert after["members_fp"] != before["members_fp"]
    assert after["change_reason"] == f"members changed: +{M83_TP} (M83)"
    assert after["arrays"] == ["12m", "7m", "TP"]
    joined_at = {m["mous_id"]: m["added_at"] for m in after["members"]}
    joined_before = {m["mous_id"]: m["added_at"] for m in before["members"]}
    assert joined_at[M83_12M] == joined_before[M83_12M]  # a member that stays keeps its time
    assert joined_at[M83_TP] >= joined_before[M83_12M]
    events = [e for e in cat.events(M83_TP) if e["kind"] == "source"]
    assert len(events) == 1 and "joined source M83 (members changed" in events[0]["reason"]
    assert json.loads(events[0]["data"]) == {"source": "M83", "change": "+"}


def test_aliases_and_exclude_change_the_grouping(cat):
    cols, row = real_row()
    renamed = sibling(row, M83_7M, "7m", name="NGC_5236")  # M83's other name
    ingest(cat, cols, [row, renamed, sibling(row, M83_TP, "TP")])
    plain = cat.regroup_sources(Rules()).sources
    assert sorted(len(s.members) for _n, s in plain) == [1, 2]  # the 7-m MOUS apart
    aliased = cat.regroup_sources(Rules(aliases={"NGC 5236": "M83"}))
    [(name, src)] = aliased.sources
    assert name == "M83" and len(src.members) == 3
    [change] = [c for c in aliased.changes if c.name == "M83"]
    assert change.added == [(M83_7M, "NGC_5236")]
    assert cat.source("NGC_5236")["removed_at"] is not None  # the catalog keeps it, gone
    excl = cat.regroup_sources(Rules(aliases={"NGC 5236": "M83"}, exclude=(M83_TP,)))
    sizes = {n: len(s.members) for n, s in excl.sources}
    assert sizes["M83"] == 2
    [alone] = [s for n, s in excl.sources if n != "M83"]
    assert alone.members[0].member.mous_id == M83_TP and alone.members[0].joined_by == \
        "excluded"
    assert cat.source("M83")["change_reason"] == f"members changed: -{M83_TP} (M83)"


def test_dry_run_writes_nothing(cat):
    cols, row = real_row()
    ingest(cat, cols, [row, sibling(row, M83_7M, "7m")])
    result = cat.regroup_sources(Rules(), dry_run=True)
    assert [c.kind for c in result.changes] == ["new"] and result.sources[0][0] == "M83"
    assert cat.sources() == [] and not [e for e in cat.events() if e["kind"] == "source"]


def test_names_normalised_or_exact():
    a = Member("uid://A001/X1/X1", "IRAS 4A", 52.29, 31.22, group_ous="uid://A001/X1/X0")
    b = Member("uid://A001/X2/X1", "iras_4a", 52.29, 31.22, group_ous="uid://A001/X2/X0")
    assert len(group([a, b])) == 1
    assert len(group([a, b], Rules(match_names="exact"))) == 2
    assert len(group([a, b], Rules(within="group"))) == 2  # different groups


def test_position_rule_joins_different_names_within_tolerance():
    a = Member("uid://A001/X1/X1", "HOPS-56", 83.8, -5.1, group_ous="uid://A001/X1/X0")
    b = Member("uid://A001/X2/X1", "OMC2_field3", 83.8 + 5 / 3600, -5.1,
               group_ous="uid://A001/X2/X0")
    assert len(group([a, b])) == 2
    [src] = group([a, b], Rules(within="position"))
    assert {j.joined_by for j in src.members} == {"position"}


def test_setups_without_a_common_window_are_told():
    b6 = (Window(25, "6", 230.0, 231.9),)
    b7 = (Window(27, "7", 345.0, 346.9),)
    a = Member("uid://A001/X1/X1", "S", 10, 10, "uid://A001/X1/X0", "A001:DA41", 0.5,
               windows=b6)
    b = Member("uid://A001/X1/X2", "S", 10, 10, "uid://A001/X1/X0", "J501:CM01", 5.0,
               windows=b7)
    [src] = group([a, b])
    assert [(s.arrays, s.common) for s in src.setups] == [(("12m",), False),
                                                         (("7m",), False)]


def test_fingerprint_is_membership_only():
    assert members_fingerprint([("a", "x"), ("b", "y")]) == members_fingerprint(
        [("b", "y"), ("a", "x")])
    assert members_fingerprint([("a", "x")]) != members_fingerprint([("a", "x"), ("b", "y")])


def test_rules_refuse_unknown_values():
    with pytest.raises(ValueError, match="within"):
        Rules(within="galaxy")


def test_exclude_forms():
    g = "uid://A001/X1/X0"
    a = Member("uid://A001/X1/X1", "NGC 253", 11.888, -25.288, group_ous=g)
    b = Member("uid://A001/X1/X2", "NGC 253", 11.888, -25.288, group_ous=g)
    c = Member("uid://A001/X1/X2", "Sgr B2", 266.83, -28.38, group_ous=g)
    d = Member("uid://A001/X1/X3", "Sgr B2", 266.83, -28.38, group_ous=g)

    def sizes(*exclude):
        return sorted(len(s.members) for s in group([a, b, c, d], Rules(exclude=exclude)))

    assert sizes() == [2, 2]
    assert sizes("uid://A001/X1/X2") == [1, 1, 1, 1]  # every target of that MOUS
    assert sizes("uid://A001/X1/X2:ngc_253") == [1, 1, 2]  # one target of it (normalised)
    assert sizes("sgr b2") == [1, 1, 2]  # a name, in every MOUS
