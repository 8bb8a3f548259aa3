"""The cost-balanced chunk plan of a line cube (pure: no CASA).

A chunk's clean work grows with the line it holds (its major cycles re-grid every channel
of the chunk), so an even split leaves the chunks holding the line the longest and the
2-slot critical path long. The balanced split gives the line short chunks; these tests
fail on the even split.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sails.casa import chunking

# The line SNR the benchmark's 180-channel cube gave (benchmarks/throughput.py (b)).
BENCH_LINE = {88: 120.3, 89: 337.8, 90: 391.9, 91: 229.1, 92: 162.6, 93: 134.7}


def _snr(nchan: int = 180, line: dict[int, float] | None = None) -> list[float]:
    out = [0.0] * nchan
    for i, v in (line or BENCH_LINE).items():
        out[i] = v
    return out


def _check_cover(blocks: list[tuple[int, int]], nchan: int, min_len: int = 2) -> None:
    first = 0
    for a, n in blocks:
        assert a == first and n >= min_len
        first += n
    assert first == nchan


def _costs(snr, blocks) -> list[float]:
    return [chunking.chunk_cost(snr, a, n) for a, n in blocks]


def test_a_line_in_the_middle_gets_short_chunks_and_the_costs_even_out():
    snr = _snr()
    even = chunking.split_channels(180, 4)
    bal = chunking.balanced_split(snr, 4)
    _check_cover(bal, 180)
    line_chunks = [n for a, n in bal if any(snr[a:a + n])]
    assert max(line_chunks) < 45  # the even split's chunks are 45 channels each
    assert max(_costs(snr, bal)) < 0.75 * max(_costs(snr, even))
    c = _costs(snr, bal)
    assert max(c) / min(c) < 1.2, c


def _worst(snr, shares, blocks) -> float:
    return max(c / s for c, s in zip(_costs(snr, blocks), shares, strict=True))


def test_the_split_is_the_best_contiguous_one():
    rng = np.random.default_rng(3)
    for _ in range(20):
        snr = list(np.where(rng.random(12) < 0.3, rng.uniform(50, 500, 12), 0.0))
        shares = list(rng.uniform(0.5, 2.0, 3))
        got = chunking.balanced_split(snr, 3, shares=shares)
        _check_cover(got, 12)
        best = min(_worst(snr, shares, [(0, a), (a, b - a), (b, 12 - b)])
                   for a, b in itertools.combinations(range(2, 11), 2) if b - a >= 2)
        assert _worst(snr, shares, got) == pytest.approx(best)


def test_tapered_plan_runs_costliest_first_and_keeps_every_channel():
    cube = {"nchan": 180, "start_kms": -54.0, "width_kms": 0.667, "imagename": "x.cube.I"}
    plan = chunking.chunk_plan(cube, 4, _snr())
    _check_cover([(c["first"], c["nchan"]) for c in plan], 180)
    costs = [c["cost"] for c in plan]
    order = chunking.run_order(plan)
    assert [costs[i] for i in order] == sorted(costs, reverse=True)
    # shares 4:3:2:1 of the estimated total, within a channel's granularity
    total = sum(costs)
    for c, share in zip(sorted(costs, reverse=True), chunking.tapered_shares(4), strict=True):
        assert c == pytest.approx(share * total, rel=0.3)
    assert plan[1]["start_kms"] == pytest.approx(-54.0 + plan[1]["first"] * 0.667)


def _makespan(durations: list[float], slots: int) -> float:
    free = [0.0] * slots
    for d in durations:
        free[free.index(min(free))] += d
    return max(free)


@pytest.mark.parametrize("continuum", [0.0, 40.0, 100.0, 140.0])
def test_tapered_chunks_pack_around_the_continuum_job_no_later_than_equal_ones(continuum):
    """The runner starts the continuum job, then the chunks costliest first, each on the
    first free slot: on 2 slots tapered chunks end no later than equal ones, and within
    the smallest chunk of the ideal."""
    snr = _snr()
    total = {}
    for name, shares in (("equal", None), ("tapered", chunking.tapered_shares(4))):
        costs = sorted(_costs(snr, chunking.balanced_split(snr, 4, shares=shares)),
                       reverse=True)
        total[name] = _makespan([continuum, *costs], 2)
        ideal = (continuum + sum(costs)) / 2
    assert total["tapered"] <= total["equal"] + 1e-9
    assert total["tapered"] <= max(ideal + 0.12 * sum(costs) / 2, continuum)


def test_no_line_information_keeps_the_even_split():
    cube = {"nchan": 11, "start_kms": 2.0, "width_kms": 0.5, "imagename": "x.cube.I"}
    for snr in (None, [0.0] * 11):
        plan = chunking.chunk_plan(cube, 3, snr)
        assert [(c["first"], c["nchan"]) for c in plan] == chunking.split_channels(11, 3)
    with pytest.raises(ValueError):
        chunking.chunk_plan(cube, 3, [0.0] * 10)


def test_short_cubes_keep_two_channels_a_chunk():
    snr = [0.0, 0.0, 900.0, 900.0, 0.0, 0.0]
    blocks = chunking.balanced_split(snr, 3)
    _check_cover(blocks, 6)
    with pytest.raises(ValueError):
        chunking.balanced_split([0.0, 1.0], 3)


def test_line_snr_from_a_visibility_power_spectrum():
    rng = np.random.default_rng(1)
    floor, n = 4.0, 1e6
    power = floor + rng.normal(0, 0.01, 64)  # noise-only channels
    power[30:33] += [0.005, 0.5, 0.1]  # a line (its first channel within the clip)
    snr = chunking.line_snr(power, np.full(64, n))
    assert set(np.nonzero(snr)[0]) == {31, 32}
    assert snr[31] == pytest.approx(np.sqrt(n * 0.5 / floor), rel=0.1)
    assert not chunking.line_snr(np.full(8, np.nan), np.full(8, n)).any()


def test_data_channels_land_on_the_cube_grid_in_quadrature():
    # two data channels in cube channel 1, one in channel 3, one outside the cube
    got = chunking.on_cube_grid([3.0, 4.0, 5.0, 9.0], [1.1, 0.9, 3.0, 8.0], 0.0, 1.0, 5)
    assert list(got) == pytest.approx([0.0, 5.0, 0.0, 5.0, 0.0])
