"""Safe tar extraction: hostile members are rejected before anything is written."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from sails.transfer import TruncatedArchiveError, UnsafeArchiveError, safe_extract


def make_tar(path: Path, members: list[tuple[str, bytes | None, dict]]) -> Path:
    """members: (name, data or None for a dir, extra TarInfo attributes)."""
    with tarfile.open(path, "w") as tf:
        for name, data, extra in members:
            info = tarfile.TarInfo(name)
            for k, v in extra.items():
                setattr(info, k, v)
            if data is None and "type" not in extra:
                info.type = tarfile.DIRTYPE
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


GOOD = [("proj/member.uid___A001_X1_X2/calibrated/x.ms", None, {}),
        ("proj/member.uid___A001_X1_X2/calibrated/x.ms/table.dat", b"T" * 3000, {}),
        ("proj/member.uid___A001_X1_X2/calibrated/x.ms/link", None,
         {"type": tarfile.SYMTYPE, "linkname": "table.dat"})]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_good_tarball_extracts_atomically(tmp_path):
    tar = make_tar(tmp_path / "good.tar", GOOD)
    out = safe_extract(tar, tmp_path / "out" / "good")
    assert (out / "proj/member.uid___A001_X1_X2/calibrated/x.ms/table.dat").read_bytes() \
        == b"T" * 3000
    assert (out / "proj/member.uid___A001_X1_X2/calibrated/x.ms/link").is_symlink()
    assert not list((tmp_path / "out").glob(".*extracting"))


@pytest.mark.parametrize("bad", [
    ("../evil.txt", b"pwned", {}),
    ("proj/../../evil.txt", b"pwned", {}),
    ("/tmp/evil-absolute.txt", b"pwned", {}),
    ("proj/link-out", None, {"type": tarfile.SYMTYPE, "linkname": "../../../etc/passwd"}),
    ("proj/abs-link", None, {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
    ("proj/hard-out", None, {"type": tarfile.LNKTYPE, "linkname": "../outside"}),
    ("proj/dev", None, {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}),
    ("proj/fifo", None, {"type": tarfile.FIFOTYPE}),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink-out",
        "device", "fifo"])
def test_hostile_member_rejects_whole_tarball(tmp_path, bad):
    work = tmp_path / "work"
    work.mkdir()
    tar = make_tar(work / "bad.tar", [*GOOD, bad])
    before = tree(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="refusing to extract bad.tar"):
        safe_extract(tar, work / "out")
    assert tree(tmp_path) == before  # nothing written anywhere, not even the good members
    assert not Path("/tmp/evil-absolute.txt").exists()


def test_truncated_tarball_detected(tmp_path):
    tar = make_tar(tmp_path / "t.tar", GOOD + [("proj/big.bin", b"B" * 50_000, {})])
    data = tar.read_bytes()
    for cut in (len(data) // 2, 512 * 3 + 100, 1536 + 3072):
        tar.write_bytes(data[:cut])
        with pytest.raises(TruncatedArchiveError):
            safe_extract(tar, tmp_path / "out")
        assert not (tmp_path / "out").exists()
        assert not list(tmp_path.glob(".*extracting"))


def test_not_a_tarball(tmp_path):
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(b"<html>502 Bad Gateway</html>")
    with pytest.raises(TruncatedArchiveError):
        safe_extract(bogus, tmp_path / "out")


# Issue #22 defect 2: a link judged where it sits in the tarball pointed outside once
# organize() moved it to a shallower place (datasets/<mous>/evil.ms -> /etc).
DEEP = "proj/science_goal.uid___A001_X1_X0/group.uid___A001_X1_X1/member.uid___A001_X1_X2"
ESCAPES = [(f"{DEEP}/calibrated", None, {}),
           (f"{DEEP}/calibrated/evil.ms", None,
            {"type": tarfile.SYMTYPE, "linkname": "../../../../proj"}),
           (f"{DEEP}/calibrated/weblog_restore", None, {"type": tarfile.SYMTYPE,
                                                        "linkname": "../.."}),
           (f"{DEEP}/calibrated/raw.asdm.sdm", None, {"type": tarfile.SYMTYPE,
                                                      "linkname": "."}),
           (f"{DEEP}/calibrated/README", b"hello", {}),
           (f"{DEEP}/calibrated/readme-link", None, {"type": tarfile.SYMTYPE,
                                                     "linkname": "README"})]


def test_directory_links_are_never_kept_or_moved(tmp_path):
    from sails.transfer.organize import Layout, organize

    staging = safe_extract(make_tar(tmp_path / "evil.tar", ESCAPES), tmp_path / "x" / "stage")
    cal = staging / DEEP / "calibrated"
    assert not any(cal / n for n in ("evil.ms", "weblog_restore", "raw.asdm.sdm")
                   if (cal / n).is_symlink() or (cal / n).exists())
    assert (cal / "readme-link").is_symlink()  # a link to a file of the tarball stays
    mous = tmp_path / "project"
    layout = Layout(datasets=mous / "datasets", weblogs=mous / "weblogs", raw=mous / "raw")
    # Even given links in the staging folder (made by hand here), organize moves none.
    (cal / "evil.ms").symlink_to("../../../../..")
    (cal / "weblog_restore").symlink_to("/etc")
    products = organize(staging, layout)
    assert {p.kind for p in products} == {"file"}
    assert not [p for p in mous.rglob("*") if p.is_symlink()]


def test_product_measure_never_follows_links(tmp_path):
    from sails.catalog import Product

    big = tmp_path / "big"
    big.mkdir()
    (big / "data").write_bytes(b"x" * 10_000)
    folder = tmp_path / "f.ms"
    folder.mkdir()
    (folder / "table.dat").write_bytes(b"t" * 10)
    (folder / "inner").symlink_to(big)
    (tmp_path / "evil.ms").symlink_to(big)
    assert Product.measure(folder) == 10
    assert Product.measure(tmp_path / "evil.ms") < 100  # the link itself, not its target
    assert Product.measure(tmp_path / "missing") == 0
