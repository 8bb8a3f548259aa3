"""The catalog and its state machine, on a real SQLite file."""

import shutil
import sqlite3
from pathlib import Path

import pytest

from sails.catalog import SCHEMA_VERSION, Block, Catalog, Product
from sails.errors import CatalogError, IllegalTransitionError, LeaseLostError, UserInputError
from sails.pipeline import PIPELINE

MOUS = "uid://A001/X1465/X15b"
DATA = Path(__file__).parents[1] / "data"


@pytest.fixture
def cat(tmp_path):
    c = Catalog(tmp_path / "db" / "c.sqlite")
    c.upsert_project({"project_code": "2019.1.00195.L", "pi_name": "Someone"})
    c.upsert_mous({"mous_id": MOUS, "project_code": "2019.1.00195.L", "num_asdms": 2})
    for name, spw in [("IRAS 4A", 25), ("IRAS 4A", 27), ("Per-emb 'x' +1", 25)]:
        c.upsert_target({"mous_id": MOUS, "alma_source_name": name,
                         "obs_id": f"uid://A001/X1465/X15b.source.{name}.spw.{spw}",
                         "spw_id": spw})
    yield c
    c.close()


def test_pragmas_and_rows(cat):
    assert cat.journal_mode == "wal"
    assert cat.con.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert cat.schema_version() == SCHEMA_VERSION
    assert cat.target_names(MOUS) == ["IRAS 4A", "Per-emb 'x' +1"]
    stages = {(s.stage, s.target) for s in cat.stages(MOUS)}
    assert stages == {("download", ""), ("restore", ""), ("verify", ""), ("split", ""),
                      ("findcont", ""),
                      ("auto_selfcal", ""),
                      ("cleanup", ""), ("selfcal", "IRAS 4A"), ("image", "IRAS 4A"),
                      ("selfcal", "Per-emb 'x' +1"), ("image", "Per-emb 'x' +1")}


def test_upsert_is_idempotent(cat):
    assert cat.upsert_mous({"mous_id": MOUS, "project_code": "2019.1.00195.L",
                            "num_asdms": 2}) == "unchanged"
    assert cat.upsert_mous({"mous_id": "uid___A001_X1465_X15b", "num_asdms": 3}) == "updated"
    assert cat.mous(MOUS)["num_asdms"] == 3


def test_check_constraints_enforced(cat):
    with pytest.raises(sqlite3.IntegrityError):
        cat.con.execute("UPDATE stages SET status = 'in_progress' WHERE id = 1")
    with pytest.raises(sqlite3.IntegrityError):  # stage names are identifiers
        cat.con.execute("INSERT INTO stages (mous_id, target, stage, updated_at)"
                        " VALUES (?, '', 'Trans mogrify', 0)", (MOUS,))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        cat.con.execute("DELETE FROM events")


def test_dependency_order_and_lifecycle(cat):
    owner = "w1"
    assert [s.stage for s in cat.runnable()] == ["download"]
    row = cat.claim_next(owner)
    assert row.status == "running" and row.lease_owner == owner
    assert cat.claim_next("w2") is None  # nothing else is runnable yet
    cat.complete(row.id, owner, [Product("ms", "/x/a.ms", bytes=10)])
    assert [s.stage for s in cat.runnable()] == ["restore"]
    r = cat.claim_next(owner)
    cat.skip(r.id, owner, "an SRDP restore was downloaded")
    assert [s.stage for s in cat.runnable()] == ["verify"]
    v = cat.claim_next(owner)
    cat.fail(v.id, owner, "no OBSERVE_TARGET intent in a.ms")
    v2 = cat.stage(v.id)
    assert v2.status == "failed" and v2.attempts == 1 and "OBSERVE_TARGET" in v2.error
    assert cat.runnable() == []
    cat.retry(MOUS)
    v = cat.claim_next(owner)
    cat.complete(v.id, owner)
    s = cat.claim_next(owner)
    cat.complete(s.id, owner, [Product("split_ms", "/x/a_targets.ms", bytes=5)])
    assert [r.stage for r in cat.runnable()] == ["findcont"]  # cont.dat before self-cal
    f = cat.claim_next(owner)
    cat.complete(f.id, owner)
    assert [r.stage for r in cat.runnable()] == ["auto_selfcal"]  # one run for the MOUS
    a = cat.claim_next(owner)
    assert cat.runnable() == []  # its targets' results wait for it
    cat.complete(a.id, owner)
    assert sorted(r.stage + ":" + r.target for r in cat.runnable()) == [
        "selfcal:IRAS 4A", "selfcal:Per-emb 'x' +1"]
    sc = cat.claim_next(owner, stages=["selfcal"])
    cat.skip(sc.id, owner, "source too faint for self-calibration")
    im = cat.runnable(stages=["image"])
    assert [r.target for r in im] == [sc.target]  # image proceeds after a skipped selfcal
    events = cat.events(MOUS)
    transitions = [(e["stage"], e["from_status"], e["to_status"]) for e in events
                   if e["from_status"]]
    assert ("verify", "running", "failed") in transitions
    assert ("verify", "failed", "pending") in transitions
    assert all(e["actor"] for e in events)
    assert [p["kind"] for p in cat.products(MOUS)] == ["ms", "split_ms"]


def test_illegal_transitions(cat):
    d = cat.find_stage(MOUS, "download")
    with pytest.raises(LeaseLostError):
        cat.complete(d.id, "nobody")  # pending: no lease to complete with
    row = cat.claim(d.id, "w1")
    with pytest.raises(LeaseLostError):
        cat.complete(d.id, "w2")  # not the lease holder
    cat.complete(row.id, "w1")
    with pytest.raises(IllegalTransitionError):
        cat.skip(d.id, None, "why")  # done -> skipped is not allowed
    with pytest.raises(IllegalTransitionError):
        cat.block(d.id, None, Block.USER, "why")
    assert cat.claim(d.id, "w3") is None  # done is not claimable
    with pytest.raises(UserInputError, match="unknown stage"):
        cat.reset(MOUS, "transmogrify")


def test_reset_cascades_and_refuses_running(cat):
    o = "w"
    for _ in range(len(PIPELINE.until("auto_selfcal"))):  # every MOUS stage up to self-cal
        r = cat.claim_next(o)
        cat.complete(r.id, o, [Product(r.stage, f"/p/{r.stage}", bytes=1)])
    sc = cat.claim_next(o, stages=["selfcal"])
    with pytest.raises(IllegalTransitionError, match="running"):
        cat.reset(MOUS, "verify")
    rows = cat.reset(MOUS, "verify", force=True)
    assert {r.stage for r in rows} == {"verify", "split", "findcont", "auto_selfcal", "selfcal"}
    assert cat.find_stage(MOUS, "download").status == "done"
    assert {p["stage"] for p in cat.products(MOUS)} == {"download", "restore"}
    assert cat.stage(sc.id).status == "pending"


def test_lease_expiry_recovery(cat):
    r = cat.claim_next("dead", lease_seconds=0.0)
    assert r is not None
    rec = cat.recover_expired(now=r.lease_expires + 1)
    assert [x.id for x in rec] == [r.id]
    row = cat.stage(r.id)
    assert row.status == "pending" and row.attempts == 1 and row.lease_owner is None
    with pytest.raises(LeaseLostError):
        cat.complete(r.id, "dead")  # the dead owner's late completion is refused
    assert cat.claim_next("alive").id == r.id


def test_renew(cat):
    r = cat.claim_next("w", lease_seconds=10)
    cat.renew(r.id, "w", 1000)
    assert cat.stage(r.id).lease_expires > r.lease_expires
    with pytest.raises(LeaseLostError):
        cat.renew(r.id, "other", 10)


def test_migrates_v1_file_without_losing_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    shutil.copy(DATA / "catalog_v1.sqlite", path)
    c = Catalog(path)
    assert c.schema_version() == SCHEMA_VERSION
    assert c.mous_ids() == ["uid://A001/X1465/X15b"]
    split = c.find_stage("uid://A001/X1465/X15b", "split")
    assert split.status == "failed" and split.error == "disk full" and split.job_ref is None
    events = [e for e in c.events("uid://A001/X1465/X15b")
              if e["stage"] not in ("cleanup", "restore", "findcont")]
    assert len(events) == 2 and events[1]["actor"] == "migration"  # + auto_selfcal's row
    assert c.products()[0]["bytes"] == 1234
    c.retry("uid://A001/X1465/X15b")  # and the migrated file works
    assert c.find_stage("uid://A001/X1465/X15b", "split").status == "pending"
    c.close()
    assert Catalog(path).schema_version() == SCHEMA_VERSION  # reopening is a no-op


def test_corrupt_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "c.sqlite"
    bad.write_bytes(b"this is not sqlite at all, just some bytes\n" * 100)
    before = bad.read_bytes()
    with pytest.raises(CatalogError, match="not a usable SQLite catalog"):
        Catalog(bad)
    assert bad.read_bytes() == before


def test_newer_schema_refused(tmp_path):
    p = tmp_path / "c.sqlite"
    Catalog(p).close()
    con = sqlite3.connect(p)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(CatalogError, match="newer than this sails"):
        Catalog(p)


def test_migrates_v2_file_selfcal_becomes_a_mous_stage(tmp_path):
    """A catalog written by the v2 code (per-target selfcal rows sharing one MOUS run)."""
    path = tmp_path / "v2.sqlite"
    shutil.copy(DATA / "catalog_v2.sqlite", path)
    raw = sqlite3.connect(path)
    before = raw.execute("SELECT id, mous_id, target, stage, status, reason, error, attempts"
                         " FROM stages ORDER BY id").fetchall()
    n_products = raw.execute("SELECT COUNT(*) FROM products").fetchone()[0]
    n_events = raw.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    raw.close()
    c = Catalog(path)
    assert c.schema_version() == SCHEMA_VERSION
    after = [(r.id, r.mous_id, r.target, r.stage, r.status, r.reason, r.error, r.attempts)
             for r in c.stages()
             if r.stage not in ("auto_selfcal", "cleanup", "restore", "findcont")]
    assert sorted(after) == sorted(before)  # every old row kept, unchanged
    assert len(c.products()) == n_products
    auto = {r.mous_id: r for r in c.stages(stage="auto_selfcal")}
    # X1 ran self-cal (one target done, one skipped): done, never redone
    assert auto["uid://A001/X2/X1"].status == "done"
    # X2's MOUS run crashed for both targets: failed with its error
    assert auto["uid://A001/X2/X2"].status == "failed"
    assert "RuntimeError: boom" in auto["uid://A001/X2/X2"].error
    # X3 had not self-calibrated yet: pending, and the next thing to run there
    assert auto["uid://A001/X2/X3"].status == "pending"
    runnable = {(r.mous_id, r.stage, r.target) for r in c.runnable()}
    # findcont, a newer stage row, runs only where no later stage has started (X3); X3's
    # auto_selfcal now waits for it (a finished or failed auto_selfcal is not redone)
    assert runnable == {("uid://A001/X2/X1", "image", "Src+B"),
                        ("uid://A001/X2/X3", "findcont", "")}
    restore = {r.mous_id: r.status for r in c.stages(stage="restore")}
    assert set(restore.values()) == {"skipped"}  # the MOUS were past it: not run late
    findcont = {r.mous_id: r.status for r in c.stages(stage="findcont")}
    assert findcont == {"uid://A001/X2/X1": "skipped", "uid://A001/X2/X2": "skipped",
                        "uid://A001/X2/X3": "pending"}  # X3 had not self-calibrated yet
    assert len([e for e in c.events()
                if e["stage"] not in ("cleanup", "restore", "findcont")]) == n_events + 3
    # one "created by the migration" each (the cleanup, restore and findcont rows come from
    # the stage table)
    c.retry("uid://A001/X2/X2")  # a failed MOUS run is retried as one
    assert c.find_stage("uid://A001/X2/X2", "auto_selfcal").status == "pending"
    assert {r.status for r in c.stages("uid://A001/X2/X2", "selfcal")} == {"pending"}
    c.close()


def test_block_codes(cat):
    verify = cat.find_stage(MOUS, "verify")
    cat.block(verify.id, None, Block.NEEDS_RESTORE)
    row = cat.stage(verify.id)
    assert row.reason_code == Block.NEEDS_RESTORE and "calibration restore" in row.reason
    assert cat.unblock(verify.id, "nope", only_code=Block.USER) is None  # another reason
    assert cat.unblock(verify.id, "restore registered", only_code=Block.NEEDS_RESTORE)
    row = cat.stage(verify.id)
    assert row.status == "pending" and row.reason_code is None


def test_waiting_for_names_the_unfinished_prerequisites(cat):
    image = cat.find_stage(MOUS, "image", "IRAS 4A")
    assert [w.stage for w in cat.waiting_for(image)] == ["selfcal"]
    auto = cat.find_stage(MOUS, "auto_selfcal")
    assert [w.stage for w in cat.waiting_for(auto)] == ["findcont"]
    assert [w.stage for w in cat.waiting_for(cat.find_stage(MOUS, "findcont"))] == ["split"]


def test_error_after_sqlite_rolled_back_is_the_real_one(cat):
    """Issue #22: on disk full / I/O errors SQLite rolls back itself; our ROLLBACK then
    failed with "no transaction is active" and hid the cause."""
    import sqlite3

    from sails.errors import CatalogError

    with pytest.raises(ValueError, match="the real error"), cat.write() as con:
        con.execute("ROLLBACK")  # as SQLite does on SQLITE_FULL
        raise ValueError("the real error")
    with pytest.raises(CatalogError, match="database or disk is full"), cat.write() as con:
        con.execute("ROLLBACK")
        raise sqlite3.OperationalError("database or disk is full")
    with cat.write() as con:  # the connection is still usable
        con.execute("SELECT 1")
def test_migrates_v3_file_sizes_columns_v5(tmp_path):
    """v5 adds predicted/measured bytes on stage rows and removed_at on products; a v3 file
    keeps its rows and gets the new stage table's rows (cleanup) when opened."""
    from sails.catalog.schema import MIGRATIONS

    path = tmp_path / "v3.sqlite"
    raw = sqlite3.connect(path)
    for v in range(3):
        MIGRATIONS[v](raw)
    raw.execute("INSERT INTO mous (mous_id, created_at, updated_at) VALUES (?, 1, 1)",
                ("uid://A001/X1/X1",))
    raw.execute("INSERT INTO stages (mous_id, target, stage, status, updated_at)"
                " VALUES (?, '', 'split', 'done', 1)", ("uid://A001/X1/X1",))
    raw.execute("INSERT INTO products (mous_id, stage, kind, path, bytes, created_at)"
                " VALUES (?, 'split', 'split_ms', '/x/a.ms', 10, 1)", ("uid://A001/X1/X1",))
    raw.execute("PRAGMA user_version = 3")
    raw.commit()
    raw.close()
    c = Catalog(path)
    assert c.schema_version() == SCHEMA_VERSION == 7
    split = c.find_stage("uid://A001/X1/X1", "split")
    assert split.status == "done" and split.predicted_bytes is None
    c.set_sizes(split.id, predicted_peak=30, predicted=20, basis="test", measured=25)
    split = c.find_stage("uid://A001/X1/X1", "split")
    assert (split.predicted_peak_bytes, split.predicted_bytes, split.measured_bytes) == (
        30, 20, 25)
    assert c.mark_removed(["/x/a.ms"]) == 1 and c.mark_removed(["/x/a.ms"]) == 0
    assert c.products()[0]["removed_at"] is not None
    assert c.find_stage("uid://A001/X1/X1", "cleanup").status == "pending"
