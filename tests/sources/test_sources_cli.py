"""``sails sources``, the regroup after ingest and at the start of ``sails run``, the
``[sources]`` rules shown by ``--dry-run``, and the v6 migration of older catalogs."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

from cli_run import sails
from sails.catalog import SCHEMA_VERSION, Block, Catalog
from sails.project import init_project
from sources_rows import M83_7M, M83_12M, M83_TP, ingest, real_row, sibling

DATA = Path(__file__).resolve().parents[1] / "data"


def _write_csv(path: Path, cols: list[str], rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in cols})
    return path


def test_ingest_groups_and_sails_sources_lists(tmp_path, capsys):
    root = tmp_path / "proj"
    init_project(root)
    cols, row = real_row()
    first = _write_csv(tmp_path / "a.csv", cols, [row, sibling(row, M83_7M, "7m")])
    code, out = sails(capsys, "-p", str(root), "ingest", "obscore", str(first),
                      "--no-datalink")
    assert code == 0, out
    assert "sources: 1 changed" in out and "new source of 2 member(s)" in out
    later = _write_csv(tmp_path / "b.csv", cols, [sibling(row, M83_TP, "TP")])
    code, out = sails(capsys, "-p", str(root), "ingest", "obscore", str(later),
                      "--no-datalink", "--json")
    assert code == 0, out
    [change] = json.loads(out)["sources"]
    assert change["reason"] == f"members changed: +{M83_TP} (M83)"
    code, out = sails(capsys, "-p", str(root), "sources", "--json")
    assert code == 0, out
    data = json.loads(out)
    [src] = data["sources"]
    assert src["name"] == "M83" and src["arrays"] == ["12m", "7m", "TP"]
    assert {m["mous_id"]: m["array"] for m in src["members"]} == {
        M83_12M: "12m", M83_7M: "7m", M83_TP: "TP"}
    assert src["change_reason"] == f"members changed: +{M83_TP} (M83)"
    assert data["changes"] == []
    code, out = sails(capsys, "-p", str(root), "sources")
    assert code == 0 and "M83" in out and "12m + 7m + TP" in out
    code, out = sails(capsys, "-p", str(root), "show", M83_TP)
    assert code == 0 and "source of M83: M83 (12m + 7m + TP, 3 members)" in out
    assert f"joined source M83 (members changed: +{M83_TP} (M83))" in out


def test_dry_run_shows_the_rules_and_what_they_would_change(tmp_path, capsys):
    root = tmp_path / "proj"
    project = init_project(root)
    cols, row = real_row()
    ingest(project.catalog, cols, [row, sibling(row, M83_7M, "7m")])
    code, out = sails(capsys, "-p", str(root), "sources")
    assert code == 0 and "M83" in out
    toml = root / "sails.toml"
    toml.write_text(toml.read_text().replace(
        '# exclude = ["uid://A001/X1/X2"', f'exclude = ["{M83_7M}"]\n# exclude = ["x"'))
    code, out = sails(capsys, "-p", str(root), "sources", "--dry-run", "--all")
    assert code == 0, out
    assert "grouping rules" in out and f"exclude: '{M83_7M}' (stands alone)" in out
    assert f"members changed: -{M83_7M} (M83)" in out and "sources: 2 would change" in out
    stored = Catalog(project.catalog_path).source("M83")  # nothing written
    assert {m["mous_id"] for m in stored["members"]} == {M83_12M, M83_7M}
    toml.write_text(toml.read_text().replace('within = "name"', 'within = "galaxy"'))
    code, out = sails(capsys, "-p", str(root), "sources", "--dry-run")
    assert code != 0 and out.startswith("error:") and "sources.within" in out
    assert "Traceback" not in out


def test_sails_run_regroups_first(tmp_path, capsys):
    """MOUS ingested by the library (no regroup): ``sails run`` groups them before it
    dispatches anything (here nothing is runnable: every stage row is blocked)."""
    root = tmp_path / "proj"
    project = init_project(root)
    cols, row = real_row()
    ingest(project.catalog, cols, [row, sibling(row, M83_7M, "7m")])
    for r in project.catalog.stages():
        project.catalog.block(r.id, None, Block.USER, "held for the test")
    assert project.catalog.sources() == []
    code, out = sails(capsys, "-p", str(root), "run")
    assert code == 0, out
    assert "source M83: new source of 2 member(s)" in out
    [src] = Catalog(project.catalog_path).sources()
    assert src["name"] == "M83" and len(src["members"]) == 2


def test_v2_catalog_migrates_to_v6_keeping_its_rows(tmp_path):
    path = tmp_path / "v2.sqlite"
    shutil.copy(DATA / "catalog_v2.sqlite", path)
    raw = sqlite3.connect(path)
    before = {t: raw.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
              for t in ("mous", "targets", "products", "events")}
    raw.close()
    c = Catalog(path)
    assert c.schema_version() == SCHEMA_VERSION == 7
    after = {t: c.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in before}
    assert after["mous"] == before["mous"] and after["targets"] == before["targets"]
    assert after["products"] == before["products"] and after["events"] >= before["events"]
    assert c.sources(include_removed=True) == []  # filled by the first regroup
    result = c.regroup_sources()
    # v2's targets carry no position or group OUS: every one stands alone
    assert sorted((n, len(s.members)) for n, s in result.sources) == [
        ("Src A", 1), ("Src A_2", 1), ("Src A_3", 1),
        ("Src+B", 1), ("Src+B_2", 1), ("Src+B_3", 1)]
    assert len(c.sources()) == 6
    c.close()


def test_v1_catalog_migrated_takes_new_siblings(tmp_path):
    """An old catalog (v1) opened by this sails: its MOUS is kept, and rows ingested
    afterwards group as in a new one."""
    path = tmp_path / "v1.sqlite"
    shutil.copy(DATA / "catalog_v1.sqlite", path)
    c = Catalog(path)
    assert c.mous_ids() == ["uid://A001/X1465/X15b"]
    cols, row = real_row()
    ingest(c, cols, [row, sibling(row, M83_7M, "7m")])
    names = {n: len(s.members) for n, s in c.regroup_sources().sources}
    assert names == {"M83": 2, "Per-emb 2": 1}
    assert c.find_stage("uid://A001/X1465/X15b", "split").error == "disk full"
    c.close()
