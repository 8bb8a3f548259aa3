"""The verify decisions as a pure function of MS summaries and catalog rows (no CASA needed):
spw matching by id / remap / frequency, science-window selection, the calibrated column,
target names, EB counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sails.stages.verify import Decisions, catalog_spws, check_mous, science_candidates

MOUS = "uid://A001/X1/X2"
EB = "uid___A002_X1_X1"


def spw(i, name, ghz, nchan=8, width_mhz=250.0, data=True, intents=("OBSERVE_TARGET#ON_SOURCE",
                                                                     "CALIBRATE_PHASE#ON_SOURCE")):
    lo = ghz * 1e9 - nchan * width_mhz * 1e6 / 2
    return {"id": i, "name": name, "num_chan": nchan, "min_freq_hz": lo,
            "max_freq_hz": lo + nchan * width_mhz * 1e6, "has_data": data,
            "intents": sorted(intents) if data else []}


def archive_spws():
    """Archive numbering: WVR 0, FULL_RES 1/3, their CH_AVG 2/4."""
    return [spw(0, "WVR#NOMINAL", 183.3, 4, 1500.0, data=False),
            spw(1, "X1#ALMA_RB_06#BB_1#SW-01#FULL_RES", 217.0),
            spw(2, "X1#ALMA_RB_06#BB_1#SW-01#CH_AVG", 217.0, 1, 2000.0),
            spw(3, "X1#ALMA_RB_06#BB_2#SW-01#FULL_RES", 219.556, 32, 0.488),
            spw(4, "X1#ALMA_RB_06#BB_2#SW-01#CH_AVG", 219.556, 1, 15.6)]


def summary(fields=None, spws=None, columns=None, calibrators=True, history=False, rows=100):
    fields = fields if fields is not None else [
        {"id": 0, "name": "J0550+0034", "intents": ["CALIBRATE_BANDPASS#ON_SOURCE"],
         "scans": [1]},
        {"id": 1, "name": "HOPS-56", "intents": ["OBSERVE_TARGET#ON_SOURCE"], "scans": [2]},
    ]
    intents = sorted({i for f in fields for i in f["intents"]})
    return {"n_rows": rows, "fields": fields, "spws": spws or archive_spws(),
            "antennas": [{"id": 0, "name": "DA41"}], "intents": intents,
            "data_columns": columns if columns is not None else {
                "DATA": {"present": True, "filled": True},
                "CORRECTED_DATA": {"present": True, "filled": True}},
            "has_gain_calibrators": calibrators, "history_calibrated_split": history,
            "has_bbc_no": True}


def targets(name="HOPS-56", ids=(1, 3), ranges=((216.0, 218.0), (219.548, 219.564))):
    return [{"alma_source_name": name, "spw_id": i, "min_freq_ghz": lo, "max_freq_ghz": hi}
            for i, (lo, hi) in zip(ids, ranges, strict=True)]


def check(summaries: dict, rows=None, mous=None, remap=None) -> Decisions:
    paths = [Path(f"/d/{eb}.ms") for eb in summaries]
    results = {eb: {"ok": True, "data": s, "metrics": {}} if isinstance(s, dict)
               else {"ok": False, "error": s} for eb, s in summaries.items()}
    return check_mous(MOUS, mous or {}, targets() if rows is None else rows, remap or {},
                      paths, results)


def test_archive_ids_match_by_id_and_only_full_res_is_science():
    dec = check({EB: summary()})
    assert dec.ok, dec.reasons
    assert dec.ebs[EB].science_spws == [1, 3]
    assert dec.ebs[EB].spw_match == {"1": {"ms_spw": 1, "by": "id"},
                                     "3": {"ms_spw": 3, "by": "id"}}
    assert dec.datacolumn == "CORRECTED_DATA"
    assert [s["id"] for s in science_candidates(summary())] == [1, 3]


def test_renumbered_ms_falls_back_to_frequency_and_says_so():
    spws = [spw(0, "X1#ALMA_RB_06#BB_1#SW-01#FULL_RES", 217.0),
            spw(1, "X1#ALMA_RB_06#BB_2#SW-01#FULL_RES", 219.556, 32, 0.488)]
    dec = check({EB: summary(spws=spws)}, rows=targets(ids=(25, 27)))
    assert dec.ok, dec.reasons
    assert dec.ebs[EB].science_spws == [0, 1]
    assert dec.ebs[EB].spw_match["25"] == {"ms_spw": 0, "by": "frequency"}
    assert any("matched MS spw 0" in n and "by frequency" in n for n in dec.notes)


def test_same_id_but_other_frequency_is_not_trusted():
    # catalog spw 1 is at 219.556 GHz, MS spw 1 at 217 GHz: match by frequency to MS spw 3
    rows = targets(ids=(1,), ranges=((219.548, 219.564),))
    dec = check({EB: summary()}, rows=rows)
    assert dec.ebs[EB].spw_match["1"] == {"ms_spw": 3, "by": "frequency"}
    assert any("frequencies do not match" in n for n in dec.notes)


def test_remap_is_applied_before_matching():
    rows = targets(ids=(25, 27))
    dec = check({EB: summary()}, rows=rows, remap={25: 1, 27: 3})
    assert dec.ok
    assert dec.ebs[EB].spw_match == {"25": {"ms_spw": 1, "by": "id"},
                                     "27": {"ms_spw": 3, "by": "id"}}
    assert catalog_spws(rows, {25: 1})[0].label().startswith("spw 25 -> MS spw 1")


def test_doppler_offset_still_overlaps():
    # a 15.6 MHz window shifted by 20 MHz (TOPO vs LSRK at 30 km/s) is the same window
    rows = targets(ids=(3,), ranges=((219.568, 219.584),))
    assert check({EB: summary()}, rows=rows).ebs[EB].spw_match["3"]["by"] == "id"


def test_missing_spw_is_a_reason_naming_what_exists():
    rows = targets() + targets(ids=(9,), ranges=((240.0, 242.0),))
    dec = check({EB: summary()}, rows=rows)
    assert not dec.ok
    (reason,) = dec.reasons
    assert "science spw 9 (240.000-242.000 GHz) is missing" in reason
    assert "FULL_RES" in reason and "CH_AVG" not in reason


def test_no_catalog_spw_ids_uses_every_science_window():
    rows = [{"alma_source_name": "HOPS-56", "spw_id": None}]
    dec = check({EB: summary()}, rows=rows)
    assert dec.ok and dec.ebs[EB].science_spws == [1, 3]
    assert any("names no science spw ids" in n for n in dec.notes)


@pytest.mark.parametrize("columns,calibrators,history,preset,want", [
    ({"DATA": {"filled": True}, "CORRECTED_DATA": {"filled": True}}, True, False, None,
     "CORRECTED_DATA"),
    ({"DATA": {"filled": True}}, False, False, None, "DATA"),  # target-only split
    ({"DATA": {"filled": True}}, True, True, None, "DATA"),  # split of corrected in HISTORY
    ({"DATA": {"filled": True}}, True, False, "DATA", "DATA"),  # declared by the user
    ({"DATA": {"filled": True}, "CORRECTED_DATA": {"filled": False}}, False, False, None,
     "DATA"),  # empty CORRECTED_DATA
    ({"DATA": {"filled": True}}, True, False, None, None),  # raw data: fail
    ({"DATA": {"filled": False}}, False, False, None, None),  # nothing at all
])
def test_calibrated_column(columns, calibrators, history, preset, want):
    dec = check({EB: summary(columns=columns, calibrators=calibrators, history=history)},
                mous={"preferred_datacolumn": preset})
    assert dec.ebs[EB].datacolumn == want
    if want is None:
        assert not dec.ok
        assert "CORRECTED_DATA" in dec.reasons[0] or "no calibrated" in dec.reasons[0]
    else:
        assert dec.ok, dec.reasons
        assert dec.datacolumn == want


def test_target_names_exact_fuzzy_and_wrong_intent():
    fields = [{"id": 0, "name": "NGC_1333 IRAS4A", "intents": ["OBSERVE_TARGET#ON_SOURCE"],
               "scans": [1]},
              {"id": 1, "name": "J0550+0034", "intents": ["CALIBRATE_PHASE#ON_SOURCE"],
               "scans": [2]}]
    rows = (targets(name="NGC 1333 IRAS4A") + targets(name="J0550+0034")
            + targets(name="Ghost"))
    dec = check({EB: summary(fields=fields)}, rows=rows)
    assert any("matched field 'NGC_1333 IRAS4A'" in n for n in dec.notes)
    assert any("'J0550+0034' has no OBSERVE_TARGET intent" in r for r in dec.reasons)
    assert any("'Ghost' is not in any measurement set" in r for r in dec.reasons)
    assert len(dec.reasons) == 2


def test_eb_count_unreadable_and_empty_are_all_listed():
    dec = check({EB: summary(), "eb2": "RuntimeError: table.f0 missing",
                 "eb3": summary(rows=0)}, mous={"num_asdms": 2})
    assert len(dec.reasons) == 3
    assert dec.reasons[0].startswith("expected 2 execution block(s)")
    assert "eb2: cannot be read as a measurement set: RuntimeError" in dec.reasons[1]
    assert "eb3: the measurement set is empty" in dec.reasons[2]


def test_target_missing_in_one_eb_is_a_note_not_a_failure():
    only_cal = summary(fields=[{"id": 0, "name": "HOPS-56", "intents":
                                ["OBSERVE_TARGET#ON_SOURCE"], "scans": [1]},
                               {"id": 1, "name": "Other", "intents":
                                ["OBSERVE_TARGET#ON_SOURCE"], "scans": [2]}])
    rows = targets() + targets(name="Other")
    dec = check({EB: summary(), "eb2": only_cal}, rows=rows)
    assert dec.ok, dec.reasons
    assert any("'Other' is not observed in " + EB in n for n in dec.notes)


def test_decisions_round_trip_through_json():
    dec = check({EB: summary()})
    again = Decisions.from_json(dec.to_json())
    assert again.ebs[EB].science_spws == [1, 3] and again.ok and again.datacolumn == dec.datacolumn
