"""Size limits (``[storage] max_cube_gb`` / ``max_products_gb``) cut an imaging plan down in
the recorded order (image size to the PB level, channel binning, fewer cubes, skip), the
image stage puts what was cut into the image products' metrics, and the report's target
page shows it. No CASA: the plan is the dict the imaging plan step hands to
:func:`sails.sizes.mitigate`."""

from __future__ import annotations

import json

from sails import sizes
from sails.casa import contract
from sails.catalog import Product
from sails.config import Storage
from sails.stages.image import record_mitigation, size_limits


def _plan(imsize: int = 1000) -> dict:
    # PB FWHM 25", cell 0.05": the PB level is 500 px, the plan asked for 2 x PB.
    return {"imsize": imsize, "cell_arcsec": 0.05, "pb_fwhm_arcsec": 25.0,
            "cubes": [{"line": {"name": "C18O_2-1"}, "nchan": 400, "width_kms": 0.2},
                      {"line": {"name": "SO_6-5"}, "nchan": 120, "width_kms": 0.5}]}


def test_tiny_cube_limit_cuts_in_the_recorded_order():
    plan = _plan()
    limits = size_limits(Storage(max_cube_gb=0.5))  # GB as the [storage] table gives it
    assert limits["max_cube_bytes"] == int(0.5 * sizes.GB)
    before = sizes.cube_bytes(plan["imsize"], 400)
    assert before > limits["max_cube_bytes"]
    cuts = sizes.mitigate(plan, limits["max_cube_bytes"], None, 1.0, 4)
    assert [c["step"] for c in cuts] == ["imsize", "binning", "skip_cube"], cuts
    assert cuts[0]["from"] == 1000 and cuts[0]["to"] == plan["imsize"] == 500
    assert cuts[1]["factor"] == 4
    assert cuts[2]["line"] == "C18O_2-1"  # still over the limit after binning: skipped
    assert [c["line"]["name"] for c in plan["cubes"]] == ["SO_6-5"]
    assert plan["cubes"][0]["nchan"] == 30 and plan["cubes"][0]["width_kms"] == 2.0
    for c in plan["cubes"]:
        assert sizes.cube_bytes(plan["imsize"], c["nchan"]) <= limits["max_cube_bytes"]
    assert all(c["why"] for c in cuts)


def test_product_set_limit_drops_the_largest_cube_first():
    plan = _plan(500)  # already at the PB level: nothing to gain from the image size
    limit = sizes.cube_bytes(500, 1) + sizes.cube_bytes(500, 60) + 1
    cuts = sizes.mitigate(plan, None, limit, 1.0, 2)
    assert [c["step"] for c in cuts] == ["binning", "drop_cube"], cuts
    assert cuts[1]["line"] == "C18O_2-1"
    assert [c["line"]["name"] for c in plan["cubes"]] == ["SO_6-5"]


def test_plans_within_the_limits_are_left_alone():
    plan = _plan()
    assert sizes.mitigate(plan, None, None) == []
    assert sizes.mitigate(plan, 10**15, 10**15) == [] and plan == _plan()


def test_image_stage_records_the_cuts_in_the_image_products(tmp_path):
    cuts = sizes.mitigate(_plan(), int(0.5 * sizes.GB), None)
    (tmp_path / contract.IMAGING_PLAN_NAME).write_text(json.dumps({"mitigation": cuts}))
    products = [Product("cont_image", str(tmp_path / "c.fits")),
                Product("cube", str(tmp_path / "l.fits")),
                Product("mom0", str(tmp_path / "m.fits"))]
    assert record_mitigation(products, tmp_path) == cuts
    assert products[0].metrics[sizes.MITIGATION_KEY] == cuts
    assert products[1].metrics[sizes.MITIGATION_KEY] == cuts
    assert sizes.MITIGATION_KEY not in products[2].metrics
    (tmp_path / contract.IMAGING_PLAN_NAME).write_text(json.dumps({"mitigation": []}))
    assert record_mitigation(products[2:], tmp_path) == []
