"""Continuum finding without CASA: cont.dat round trip, the finder on exact synthetic
spectra, the line-free rule the plan uses, and the systemic-velocity choice."""

from __future__ import annotations

import numpy as np
import pytest

from sails.casa import imaging_plan as plan
from sails.constants import C_KMS
from sails.imaging import contdat
from sails.imaging.findcont import find_continuum, velocity_from_data
from sails.imaging.lines import VSYS_ORIGINS

LINES = [{"name": "C18O_2-1", "rest_ghz": 219.560354}, {"name": "SO_65-54",
                                                        "rest_ghz": 219.949442}]


def test_contdat_round_trip_and_the_pipeline_format():
    ranges = {"HOPS-56": {"25": [(217.1, 217.5), (216.0, 216.9)], "27": []},
              "G34 MM1": {"25": [(216.0, 218.0)]}}
    text = contdat.format_ranges(ranges)
    assert "Field: HOPS-56" in text and "SpectralWindow: 25" in text
    assert "216.000000~216.900000GHz LSRK" in text
    assert "SpectralWindow: 27" not in text  # no line-free range: left out (auto-selfcal)
    back = contdat.parse(text)
    assert back["HOPS-56"]["25"] == [(216.0, 216.9), (217.1, 217.5)]
    assert back["G34 MM1"]["25"] == [(216.0, 218.0)]
    # the pipeline's own files: NONE, a spw name, comments
    pipe = contdat.parse("Field: X\n\nSpectralWindow: 25 X1#FULL_RES\n216.1~216.2GHz LSRK\n"
                         "\nSpectralWindow: 27\nNONE\n")
    assert pipe == {"X": {"25": [(216.1, 216.2)], "27": []}}
    with pytest.raises(contdat.ContDatError, match="TOPO"):
        contdat.parse("Field: X\nSpectralWindow: 1\n216.1~216.2GHz TOPO\n")
    with pytest.raises(contdat.ContDatError, match="cannot read"):
        contdat.parse("Field: X\nSpectralWindow: 1\n216.1-216.2\n")


def test_auto_selfcal_copy_uses_split_ids_and_field_aliases():
    ranges = {"G34.43+0.24 MM'1": {"25": [(216.0, 216.5)], "29": [(231.0, 231.4)]}}
    text = contdat.for_auto_selfcal(ranges, {"25": (0, "X1#FULL_RES"), "29": (2, "")},
                                    {"G34.43+0.24 MM'1": "G34.43+0.24_MM_1"})
    assert "Field: G34.43+0.24_MM_1" in text
    assert "SpectralWindow: 0 X1#FULL_RES" in text and "SpectralWindow: 2\n" in text
    assert "ALL" not in text  # auto-selfcal skips any line containing ALL
    assert contdat.allcaps_warning("HALLEY") and not contdat.allcaps_warning("HOPS-56")


def _spw(f0: float, df: float, n: int):
    return f0 + df * np.arange(n)


def test_finder_excludes_lines_and_keeps_the_sloped_continuum():
    rng = np.random.default_rng(3)
    f = _spw(216.0e9, 15.625e6, 128)
    cont = 0.05 * (f / 217e9) ** 2.3
    line = np.zeros_like(f)
    for k, amp in ((20, 0.2), (21, 0.08), (70, 0.05), (100, 0.3)):  # two lines span 2 chans
        line[k] = amp
    peak = cont + line + rng.normal(0, 0.002, f.size)
    mean = 0.2 * cont + 0.1 * line + rng.normal(0, 0.001, f.size)
    r = find_continuum(f, peak, mean)
    for k in (20, 21, 70, 100):
        assert k in r.line_channels
        fk = f[k] / 1e9
        assert not any(lo <= fk <= hi for lo, hi in r.ranges_ghz), k
    assert 0.85 < r.cont_fraction < 0.97
    # a flat noisy spectrum is all continuum
    flat = find_continuum(f, cont + rng.normal(0, 0.002, f.size),
                          cont + rng.normal(0, 0.002, f.size))
    assert flat.cont_fraction > 0.95


def test_catalogue_prior_lowers_the_threshold_and_gives_the_velocity():
    rng = np.random.default_rng(5)
    vsys = 6.3
    rest = 219.560354e9
    df = 244.140625e3
    f = _spw(rest * (1 - vsys / C_KMS) - 32 * df, df, 64)
    v = C_KMS * (1 - f / rest)
    prof = 0.03 * np.exp(-0.5 * ((v - vsys) / (1.5 / 2.355)) ** 2)
    peak = 0.01 + prof + rng.normal(0, 0.004, f.size)
    r = find_continuum(f, peak, peak, LINES, vsys_prior=5.0)
    assert r.lines_found and r.lines_found[0]["name"] == "C18O_2-1"
    chan_kms = C_KMS * df / rest
    got = velocity_from_data([r], min_sigma=3.0)
    assert got is not None and abs(got[0] - vsys) < chan_kms / 2


def _plan_spw(sid: int, aid: str, f0: float, df: float, n: int) -> dict:
    return {"id": sid, "archive_id": aid, "name": "X#FULL_RES", "nchan": n,
            "chan_width_hz": df, "lsrk_hz": list(_spw(f0, df, n))}


def test_linefree_for_prefers_contdat_and_falls_back_to_the_catalogue():
    s = _plan_spw(0, "25", 219.40e9, 1e6, 300)
    cont = {"25": [(219.3995, 219.4495), (219.5995, 219.6995)]}
    fn = plan.linefree_for(LINES, 6.0, cont)
    assert fn(s, 30.0) == [(0, 49), (200, 299)]
    assert plan.linefree_source(s, cont) == "contdat"
    other = _plan_spw(1, "27", 219.40e9, 1e6, 300)
    assert plan.linefree_source(other, cont) == "catalogue"
    assert fn(other, 30.0) == plan.linefree(other, LINES, 6.0, 30.0)
    assert plan.linefree_for(LINES, 6.0, None)(s, 30.0) == plan.linefree(s, LINES, 6.0, 30.0)


def test_systemic_velocity_origins_in_order():
    rest = 219.560354e9
    narrow = _plan_spw(0, "25", rest * (1 - 42.0 / C_KMS) - 32 * 244e3, 244e3, 65)
    wide = _plan_spw(1, "27", 216e9, 15.6e6, 128)
    mss = [{"spws": [wide, narrow]}]
    assert plan.systemic_velocity({"systemic_velocity_kms": 3.0}, mss, LINES) == (3.0, "config")
    assert plan.systemic_velocity({"systemic_velocity_kms": None, "data_velocity_kms": 41.2},
                                  mss, LINES) == (41.2, "data")
    v, origin = plan.systemic_velocity({}, mss, LINES)
    assert origin == "setup" and v == pytest.approx(42.0, abs=0.2)
    assert plan.systemic_velocity({}, [{"spws": [wide]}], LINES) == (0.0, "default")
    assert set(VSYS_ORIGINS) == {"config", "data", "setup", "default"}


def test_shipped_cont_dat_is_found_but_not_our_own(tmp_path):
    from sails.stages.findcont import apply_overrides, shipped_contdat

    mous = tmp_path / "m"
    (mous / "findcont").mkdir(parents=True)
    (mous / "findcont" / "cont.dat").write_text("")  # ours: never "shipped"
    (mous / "x_targets.ms").mkdir()
    (mous / "x_targets.ms" / "cont.dat").write_text("")  # inside an MS: not looked at
    assert shipped_contdat(mous) is None
    (mous / "calibration").mkdir()
    (mous / "calibration" / "member.uid___A001_X1_X2.cont.dat").write_text("")
    assert shipped_contdat(mous).name == "member.uid___A001_X1_X2.cont.dat"
    ranges = {"A": {"25": [(1.0, 2.0)]}}
    assert apply_overrides(ranges, {"A": {"27": [[4.0, 3.0]]}, "B": {"25": [[1, 2]]}}) == [
        "A spw 27", "B spw 25"]
    assert ranges == {"A": {"25": [(1.0, 2.0)], "27": [(3.0, 4.0)]}, "B": {"25": [(1.0, 2.0)]}}


def test_whole_window_spws_are_not_given_to_auto_selfcal():
    from sails.stages.findcont import whole_spws

    res = {"A": {"spws": {"25": {"cont_fraction": 1.0, "nchan": 8},
                          "27": {"cont_fraction": 0.8, "nchan": 64},
                          "29": {"cont_fraction": 0.5, "nchan": 1}}},
           "B": {"spws": {"25": {"cont_fraction": 1.0, "nchan": 8},
                          "27": {"cont_fraction": 1.0, "nchan": 64},
                          "29": {"cont_fraction": 1.0, "nchan": 1}}}}
    assert whole_spws(res, []) == ["25", "29"]  # 27 has lines for A
    assert whole_spws(res, ["B spw 25"]) == ["29"]


def test_uv_dirty_cube_puts_a_point_source_at_its_flux_and_place():
    from sails.imaging.uvcube import UvCube, nearest_channels

    rng = np.random.default_rng(11)
    cell = 0.2 / 206264.806  # 0.2 arcsec
    nrow, npix = 3000, 64
    uvw = np.vstack([rng.uniform(-300, 300, nrow), rng.uniform(-300, 300, nrow),
                     np.zeros(nrow)])
    freqs = np.array([230.0e9, 230.001e9, 230.002e9, 230.003e9])
    l0, m0 = 7 * cell, -4 * cell  # pixels (+7, -4) from the centre
    lam = freqs[:, None] / 299792458.0
    flux = np.array([0.5, 0.5, 2.0, 0.5])[:, None]  # a "line" in channel 2
    vis = flux * np.exp(-2j * np.pi * (uvw[0] * lam * l0 + uvw[1] * lam * m0))
    out = nearest_channels(freqs, freqs[:3])  # the last channel maps nowhere
    assert list(out) == [0, 1, 2, -1]
    cube = UvCube(3, npix, cell)
    half = nrow // 2  # two chunks, one with double weight: natural weighting's mean
    cube.add(uvw[:, :half], freqs, out, vis[:, :half], np.ones((4, half)))
    cube.add(uvw[:, half:], freqs, out, vis[:, half:], 2 * np.ones((4, nrow - half)))
    img = cube.images()
    q, p = np.unravel_index(np.argmax(img[2]), img[2].shape)
    assert (p - npix // 2, q - npix // 2) == (7, -4)
    assert img[2].max() == pytest.approx(2.0, rel=0.03)  # the gridding taper is divided out
    assert img[0].max() == pytest.approx(0.5, rel=0.03)
    peak, mean = cube.spectra(np.full(3, 30 * cell), 0.3)  # PB FWHM 6": source inside
    assert peak == pytest.approx([0.5, 0.5, 2.0], rel=0.03)
    small, _ = cube.spectra(np.full(3, 6 * cell), 0.3)  # PB FWHM 1.2": source outside
    assert np.all(small < 0.5 * peak)
    empty = UvCube(2, npix, cell)
    empty.add(uvw, freqs[:2], np.array([0, -1]), vis[:2], np.ones((2, nrow)))
    assert np.isnan(empty.images()[1]).all()  # no data: NaN, not 0


def test_before_selfcal_line_peak_subtracts_the_continuum_in_the_image():
    from sails.imaging.line_peaks import line_peak, peak_channels

    nchan = 30
    snr = np.zeros(nchan)
    snr[[13, 14, 15, 16]] = [4.0, 9.0, 12.0, 5.0]
    snr[3] = 3.5  # a noise channel far from the peak: not part of the line's run
    ch = peak_channels(snr, contsub=True)
    assert (ch.lo, ch.hi, ch.first, ch.last) == (13, 16, 8, 21)
    assert ch.free == [8, 9, 10, 11, 18, 19, 20, 21]
    # a per-channel peak over many noise pixels is ~4 sigma everywhere: still the same run
    floor = 4.0 + 0.2 * np.random.default_rng(2).standard_normal(nchan)
    assert peak_channels(np.where(snr > 3.8, snr + 4.0, floor), contsub=True) == ch
    # a cube of those channels: a sloped continuum everywhere, a line of 0.3 at one pixel
    y, x = np.mgrid[:16, :16]
    cont = 0.1 * np.exp(-((x - 8) ** 2 + (y - 8) ** 2) / 8.0)
    chans = np.arange(ch.first, ch.last + 1)
    data = cont[..., None] * (1 + 0.01 * (chans - 15))[None, None, :]
    data[4, 5, 15 - ch.first] += 0.3
    inside = np.ones(data.shape, bool)
    assert line_peak(data, inside, ch) == pytest.approx(0.3, abs=1e-9)
    inside[4, 5] = False  # outside the primary beam: not counted
    assert line_peak(data, inside, ch) < 0.01
    # without continuum subtraction the cube is the line's run only, no fit
    raw = peak_channels(snr, contsub=False)
    assert (raw.first, raw.last, raw.free) == (13, 16, [])
    # a window too small to hold line-free channels beside the line: nothing to fit
    assert peak_channels(np.array([10.0, 12.0]), contsub=True) is None
