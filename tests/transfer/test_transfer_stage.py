"""The download stage end to end: catalog rows -> HTTP -> layout + products + file marks."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest
from astropy.io.votable import parse_single_table

from sails.catalog import Product, new_owner
from sails.errors import DownloadError
from sails.fakes.archive import ArchiveServer
from sails.project import init_project
from sails.stages.download import RAW_DOWNLOADED, download_mous
from sails.stages.execute import run_one
from sails.transfer import LogProgress
from transfer_fixtures import make_mous, tree_bytes
from transfer_hostile import Behaviour, HostileServer

CAL = "uid___A001_X10_X1"  # calibrated MS + weblog
RAW = "uid___A001_X10_X2"  # raw ASDMs only
BIG = "uid___A001_X10_X3"  # ~3 MB, for the disk-full test
SEMANTICS = {"#documentation": "readme", "#this": "product", "#auxiliary": "auxiliary",
             "#progenitor": "raw"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim-archive")
    make_mous(root, CAL, ebs=("uid___A002_Xc_X1", "uid___A002_Xc_X2"))
    make_mous(root, RAW, raw=("uid___A002_Xd_X1", "uid___A002_Xd_X2"), weblog=False, seed=2)
    make_mous(root, BIG, ebs=("uid___A002_Xe_X1",), seed=3, main_bytes=3_000_000)
    with ArchiveServer(root) as srv:
        yield srv


@pytest.fixture
def project(tmp_path):
    p = init_project(tmp_path / "proj")
    p.settings.download.backoff_seconds = 0.01
    p.settings.download.retries = 2
    return p


def ingest_datalink(catalog, server, mous_fs, expand: bool = False):
    """What ingest does with a DataLink response: one files row per access_url; with
    ``expand``, the product tarball is replaced by the files its own listing names."""
    catalog.upsert_mous({"mous_id": mous_fs})
    table = parse_single_table(io.BytesIO(httpx.get(server.datalink_url(mous_fs)).content))
    rows = list(table.array)
    if expand:
        nested = [str(r["service_def"]).removeprefix("DataLink.") for r in rows
                  if r["service_def"] and r["semantics"] == "#this"]
        rows = [r for r in rows if not (r["semantics"] == "#this" and r["access_url"])]
        for tar_id in nested:
            sub = httpx.get(server.url + "/datalink/sync", params={"ID": tar_id}).content
            rows += list(parse_single_table(io.BytesIO(sub)).array)
    for row in rows:
        if row["access_url"]:
            url = str(row["access_url"])
            catalog.add_file(mous_fs, url, SEMANTICS[row["semantics"]],
                             filename=url.rsplit("/", 1)[1], size=int(row["content_length"]),
                             semantics=str(row["semantics"]),
                             content_type=str(row["content_type"]))


def expected_ms(archive, mous_fs, eb):
    return tree_bytes(archive.root / mous_fs / f"{eb}.ms")


def test_srdp_restore_is_crawled_and_organized(archive, project):
    cat = project.catalog
    cat.upsert_mous({"mous_id": CAL})
    cat.add_file(CAL, archive.srdp_url(CAL), "srdp")
    products = download_mous(project, cat, CAL, progress=LogProgress())
    kinds = sorted(p.kind for p in products)
    assert kinds == ["ms", "ms", "weblog"]
    for eb in ("uid___A002_Xc_X1", "uid___A002_Xc_X2"):
        dest = project.datasets / CAL / f"{eb}.ms"
        assert tree_bytes(dest) == expected_ms(archive, CAL, eb)
    weblog = project.weblogs / CAL
    assert tree_bytes(weblog) == tree_bytes(archive.root / CAL / "weblog_restore")
    assert not (project.datasets_raw / CAL).exists()  # SRDP preferred: no raw fetched
    assert not list(project.root.rglob("truth.json"))
    for p in products:
        assert p.bytes == sum(f.stat().st_size for f in Path(p.path).rglob("*") if f.is_file())
    assert not (project.work / "download" / CAL).exists()  # temp area removed after success
    assert all(f["done_at"] for f in cat.files(CAL))
    # A re-run fetches nothing (no listing, no file) and reports the same products.
    before = sum(archive.hits.values())
    again = download_mous(project, cat, CAL, progress=LogProgress())
    assert sum(archive.hits.values()) == before
    assert sorted((p.kind, p.path) for p in again) == sorted((p.kind, p.path) for p in products)


def test_datalink_tarballs_and_partial_resume(archive, project):
    cat = project.catalog
    ingest_datalink(cat, archive, CAL)
    product = next(f for f in cat.files(CAL) if f["kind"] == "product")
    # A previous run died halfway through the product tarball.
    name = product["url"].rsplit("/", 1)[1]
    staged = project.work / "download" / CAL / "tars" / name
    staged.parent.mkdir(parents=True)
    full = archive.tarball(archive.find_tar(name)).read_bytes()
    staged.with_name(name + ".part").write_bytes(full[: len(full) // 2])
    sent_before = archive.bytes_sent
    products = download_mous(project, cat, CAL, progress=LogProgress())
    sent = archive.bytes_sent - sent_before
    readme = next(f for f in cat.files(CAL) if f["kind"] == "readme")
    assert sent == len(full) - len(full) // 2 + readme["size"]  # resumed, not restarted
    kinds = sorted(p.kind for p in products)
    assert kinds == ["file", "ms", "ms", "weblog"]
    assert tree_bytes(project.datasets / CAL / "uid___A002_Xc_X1.ms") == \
        expected_ms(archive, CAL, "uid___A002_Xc_X1")
    assert (project.datasets / CAL / "archive" / f"member.{CAL}.README.txt").is_file()
    assert cat.find_stage(CAL, "verify").status == "pending"


def test_files_listed_inside_the_tarball_are_reassembled(archive, project):
    """Ingest follows the #this listing: an MS arrives file by file and is rebuilt."""
    cat = project.catalog
    ingest_datalink(cat, archive, CAL, expand=True)
    assert len(cat.files(CAL)) > 30
    products = download_mous(project, cat, CAL, progress=LogProgress())
    assert sorted(p.kind for p in products) == ["file", "ms", "ms", "weblog"]
    for eb in ("uid___A002_Xc_X1", "uid___A002_Xc_X2"):
        assert tree_bytes(project.datasets / CAL / f"{eb}.ms") == expected_ms(archive, CAL, eb)
    assert tree_bytes(project.weblogs / CAL) == \
        tree_bytes(archive.root / CAL / "weblog_restore")
    before = archive.bytes_sent
    again = download_mous(project, cat, CAL, progress=LogProgress())
    assert archive.bytes_sent == before
    assert sorted(p.path for p in again) == sorted(p.path for p in products)


def test_raw_only_mous_goes_to_restore_which_blocks_without_calibration(archive, project):
    """Through the real stage executor: download done with products, then restore (before
    verify) blocks: these ASDMs came with no README version and no calapply.txt."""
    cat = project.catalog
    ingest_datalink(cat, archive, RAW)
    report = run_one(project, stages=["download"])
    assert report.status == "done" and report.message == RAW_DOWNLOADED
    products = [Product(kind=r["kind"], path=r["path"], bytes=r["bytes"])
                for r in cat.products(RAW, stage="download")]
    assert all(p.bytes and p.bytes > 0 for p in products)
    raw = sorted(Path(p.path).name for p in products if p.kind == "raw_asdm")
    assert raw == ["uid___A002_Xd_X1.asdm.sdm", "uid___A002_Xd_X2.asdm.sdm"]
    for name in raw:
        assert tree_bytes(project.datasets_raw / RAW / "raw" / name) == \
            tree_bytes(archive.root / RAW / name)
    # verify waits for restore, which blocks with the reason (no CASA job is started)
    assert run_one(project, stages=["verify"]) is None
    assert run_one(project, stages=["restore"]).status == "blocked"
    restore = cat.find_stage(RAW, "restore")
    assert "cannot restore the raw delivery" in restore.reason, restore.reason
    assert cat.find_stage(RAW, "verify").status == "pending"
    # Running again fetches nothing.
    before = archive.bytes_sent
    download_mous(project, cat, RAW, progress=LogProgress())
    assert archive.bytes_sent == before


def tarball(members: dict[str, bytes], evil: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in [*members.items(), *([(evil, b"pwned")] if evil else [])]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MEMBERS = {f"P/science_goal.x/group.y/member.{CAL}/calibrated/uid___A002_Xf_X1.ms/table.dat":
           b"D" * 40_000,
           f"P/science_goal.x/group.y/member.{CAL}/product/image.fits": b"F" * 5000}


def test_truncated_tarball_is_deleted_and_fetched_again(project):
    good = tarball(MEMBERS)
    with HostileServer() as srv:
        url = srv.add("/P_001_of_001.tar", good,
                      Behaviour(truncated_first=1, truncate_to=len(good) // 2))
        cat = project.catalog
        cat.upsert_mous({"mous_id": CAL})
        cat.add_file(CAL, url, "product", content_type="application/x-tar")  # size unknown
        products = download_mous(project, cat, CAL, progress=LogProgress())
        assert srv.requests["/P_001_of_001.tar"] == 2
    ms = project.datasets / CAL / "uid___A002_Xf_X1.ms" / "table.dat"
    assert ms.read_bytes() == b"D" * 40_000
    assert sorted(p.kind for p in products) == ["file", "ms"]
    assert any("truncated" in (e["reason"] or "") for e in cat.events(CAL))


@pytest.mark.parametrize("evil", ["../../../escaped.txt", "/tmp/sails-absolute-escape.txt"])
def test_unsafe_tarball_fails_the_stage_and_writes_nothing(project, evil):
    with HostileServer() as srv:
        url = srv.add("/evil.tar", tarball(MEMBERS, evil))
        cat = project.catalog
        cat.upsert_mous({"mous_id": CAL})
        cat.add_file(CAL, url, "product")
        with pytest.raises(DownloadError, match="refusing to extract"):
            download_mous(project, cat, CAL, progress=LogProgress())
    assert not list(project.root.parent.rglob("escaped.txt"))
    assert not Path("/tmp/sails-absolute-escape.txt").exists()
    assert not (project.datasets / CAL).exists()
    assert any("refusing to extract" in (e["reason"] or "") for e in cat.events(CAL))


def test_404_fails_clearly_and_catalog_says_why(project):
    with HostileServer() as srv:
        url = srv.add("/missing.tar", b"", Behaviour(status=404))
        cat = project.catalog
        cat.upsert_mous({"mous_id": CAL})
        cat.add_file(CAL, url, "product")
        owner = new_owner("test")
        row = cat.claim(cat.find_stage(CAL, "download").id, owner)
        with pytest.raises(DownloadError) as info:
            download_mous(project, cat, CAL, progress=LogProgress())
        cat.fail(row.id, owner, info.value.one_line())  # what the orchestrator does
    stage = cat.find_stage(CAL, "download")
    assert stage.status == "failed" and "HTTP 404" in stage.error


@pytest.fixture
def tiny_work(tmp_path):
    mnt = tmp_path / "tinywork"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount tmpfs (not root); test_disk_full_rlimit covers the fetch")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_keeps_partial_data_and_catalog_says_why(archive, project, tiny_work):
    project.settings.layout.work = str(tiny_work)
    cat = project.catalog
    ingest_datalink(cat, archive, BIG)
    owner = new_owner("test")
    row = cat.claim(cat.find_stage(BIG, "download").id, owner)
    with pytest.raises(DownloadError, match="disk full") as info:
        download_mous(project, cat, BIG, progress=LogProgress())
    cat.fail(row.id, owner, info.value.one_line())
    stage = cat.find_stage(BIG, "download")
    assert stage.status == "failed" and "disk full" in stage.error
    assert any("disk full" in (e["reason"] or "") for e in cat.events(BIG))
    parts = list((tiny_work / "download" / BIG / "tars").glob("*.tar.part"))
    assert len(parts) == 1 and parts[0].stat().st_size > 500_000  # partial data kept
    kept = parts[0].stat().st_size
    # Space is freed and the stage retried: it resumes rather than starting over.
    subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_work)], check=True)
    cat.retry(BIG)
    row = cat.claim(stage.id, owner)
    before = archive.bytes_sent
    products = download_mous(project, cat, BIG, progress=LogProgress())
    cat.complete(row.id, owner, products)
    tar_size = next(f["size"] for f in cat.files(BIG) if f["kind"] == "product")
    readme_size = next(f["size"] for f in cat.files(BIG) if f["kind"] == "readme")
    assert archive.bytes_sent - before <= tar_size - kept + readme_size
    assert tree_bytes(project.datasets / BIG / "uid___A002_Xe_X1.ms") == \
        expected_ms(archive, BIG, "uid___A002_Xe_X1")
    assert cat.find_stage(BIG, "download").status == "done"
    recorded = {r["kind"] for r in cat.products(BIG)}
    assert recorded == {"ms", "weblog", "file"}
    assert not (tiny_work / "download" / BIG).exists()
