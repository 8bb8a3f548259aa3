"""sails.atomic: the old file or the new one, never a torn one; no temporary left behind."""

from __future__ import annotations

import json

import pytest

from sails.atomic import replacing, write_bytes_atomic, write_json_atomic, write_text_atomic


def test_writes_replace_the_file_and_leave_nothing_beside(tmp_path):
    p = tmp_path / "a.json"
    p.write_text("old")
    assert write_json_atomic(p, {"x": 1}, indent=1) == p
    assert json.loads(p.read_text()) == {"x": 1}
    write_text_atomic(tmp_path / "t.txt", "h\u00e9")
    write_bytes_atomic(tmp_path / "b.bin", b"\0\1")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "h\u00e9"
    assert (tmp_path / "b.bin").read_bytes() == b"\0\1"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.json", "b.bin", "t.txt"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    p = tmp_path / "page.png"
    p.write_text("old")
    with pytest.raises(RuntimeError), replacing(p, suffix=".png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".png"
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["page.png"]
