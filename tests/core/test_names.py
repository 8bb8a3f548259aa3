"""Output names stay unique: different archive names never share a folder, stem or job."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sails.execution.base import JobSpec
from sails.execution.canfar import session_name
from sails.names import legacy_safe_name, safe_name, short_hash
from sails.stages import image
from sails.stages.base import StageContext

# Pairs the old safe_name mapped onto one name (issue #22, defect 3).
CLASHES = [("A B", "A_B"), ("../../etc/passwd", "/etc/passwd"), ("*", ".."),
           ("x" * 60 + "1", "x" * 60 + "2"), ("NGC 1333", "NGC_1333"),
           ("foo", "foo-" + short_hash("foo bar"))]


@pytest.mark.parametrize(("a", "b"), CLASHES)
def test_clashing_names_stay_apart(a, b):
    for limit in (40, 60, 120):
        na, nb = safe_name(a, limit), safe_name(b, limit)
        assert na != nb
        assert len(na) <= limit and len(nb) <= limit
        for n in (na, nb):
            assert n not in (".", "..") and "/" not in n and not n.startswith(".")


def test_safe_names_are_kept():
    for n in ("HOPS_370", "IRAS_16293-2422_B", "uid___A001_X1_X2", "J1234-5678"):
        assert safe_name(n) == n
    assert safe_name("A B") == f"A_B-{short_hash('A B')}"
    assert legacy_safe_name("A B") == "A_B"  # what older versions made


def _ctx(tmp_path, target, products=()):
    catalog = SimpleNamespace(products=lambda *a, **k: list(products))
    project = SimpleNamespace(mous_dir=lambda m: tmp_path / "uid___A001_X1_X2")
    row = SimpleNamespace(stage="image", mous_id="uid://A001/X1/X2", target=target)
    return StageContext(project=project, catalog=catalog, row=row, owner="t", backend=None)


def test_image_outputs_and_jobs_are_unique(tmp_path):
    a, b = _ctx(tmp_path, "A B"), _ctx(tmp_path, "A_B")
    assert image.output_dir(a) != image.output_dir(b)
    assert a.job_name() != b.job_name()
    assert a.job_name("cont") != b.job_name("cont")
    from sails.config import Settings

    settings = Settings(imaging={"make_cubes": False})
    for ctx in (a, b):
        ctx.project.settings = settings
    stems = {image.build_steps(c, [], None)[0]["args"]["stem"] for c in (a, b)}
    assert len(stems) == 2
    jobs = [JobSpec(job_id=c.job_name() + "-20240101T000000", mous_id=c.mous_id, stage="image",
                    target=c.row.target, payload={}, output_dir=tmp_path, log_dir=tmp_path)
            for c in (a, b)]
    assert session_name(jobs[0]) != session_name(jobs[1])


def test_legacy_product_folder_keeps_being_used(tmp_path):
    """A products folder made under the old name stays this target's while recorded so."""
    old = tmp_path / "uid___A001_X1_X2" / "products" / "A_B"
    old.mkdir(parents=True)
    mine = [{"path": str(old / "member.x.A_B_sci.cont.image.fits")}]
    assert image.output_dir(_ctx(tmp_path, "A B", mine)) == old
    # Not recorded as this target's (e.g. it is the folder of target 'A_B'): a new one.
    assert image.output_dir(_ctx(tmp_path, "A B")) == old.with_name(safe_name("A B"))
    assert image.output_dir(_ctx(tmp_path, "A_B")) == old
