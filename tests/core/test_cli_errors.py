"""The CLI as a user meets it: bad input is one clear line, a non-zero exit, no traceback."""

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

SAILS = [sys.executable, "-m", "sails.cli.entry"]


def sails(*args, cwd=None, env=None):
    e = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), NO_COLOR="1", COLUMNS="200")
    e.pop("SAILS_PROJECT", None)
    if env:
        e.update(env)
    return subprocess.run([*SAILS, *args], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=120)


def assert_clean_error(r, *needles):
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out, out
    assert out.strip().count("\n") <= 1, out  # one line (Rich may wrap nothing at 200 cols)
    for n in needles:
        assert n in out, out


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "proj"
    r = sails("init", str(root))
    assert r.returncode == 0, r.stdout + r.stderr
    return root


def test_init_status_show(project):
    r = sails("--project", str(project), "status", "--json")
    assert r.returncode == 0 and '"counts": {}' in r.stdout
    r = sails("status", cwd=project / "datasets")
    assert r.returncode == 0, r.stderr


def test_malformed_uid(project):
    assert_clean_error(sails("-p", str(project), "show", "uid://A001/oops"),
                       "malformed MOUS uid")


def test_unknown_mous(project):
    assert_clean_error(sails("-p", str(project), "retry", "uid://A001/X1/X2"),
                       "not in the catalog")


def test_unknown_stage(project):
    assert_clean_error(sails("-p", str(project), "reset", "uid://A001/X1/X2", "--stage", "x"),
                       "unknown stage 'x'")


def test_no_project(tmp_path):
    assert_clean_error(sails("status", cwd=tmp_path), "no project space found")


def test_wrong_type_in_config(tmp_path, project):
    root = tmp_path / "p"
    shutil.copytree(project, root)
    (root / "sails.toml").write_text("[download]\nparallel_files = 'four'\n")
    before = (root / "db" / "sails.sqlite").read_bytes()
    assert_clean_error(sails("-p", str(root), "status"), "download.parallel_files")
    assert (root / "db" / "sails.sqlite").read_bytes() == before


def test_corrupt_catalog(tmp_path, project):
    root = tmp_path / "p"
    shutil.copytree(project, root)
    cat = root / "db" / "sails.sqlite"
    for extra in ("-wal", "-shm"):
        Path(f"{cat}{extra}").unlink(missing_ok=True)
    cat.write_bytes(b"garbage" * 1000)
    assert_clean_error(sails("-p", str(root), "status"), "not a usable SQLite catalog")
    assert cat.read_bytes() == b"garbage" * 1000


@contextlib.contextmanager
def read_only(path: Path):
    """Make ``path`` read-only for this process too: a read-only bind mount as root (root
    ignores permission bits), permission bits otherwise."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
            yield
        finally:
            subprocess.run(["umount", str(path)], check=True)
    else:
        paths = [path, *path.rglob("*")]
        for p in paths:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p in paths:
                os.chmod(p, 0o755 if p.is_dir() else 0o644)


def test_read_only_project_space(tmp_path):
    root = tmp_path / "ro"
    assert sails("init", str(root)).returncode == 0
    con = sqlite3.connect(root / "db" / "sails.sqlite")
    con.execute("PRAGMA journal_mode=DELETE")  # WAL would need a writable -shm beside it
    con.close()
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with read_only(root):
        assert_clean_error(sails("-p", str(root), "retry", "uid://A001/X1/X2"), "catalog")
        assert_clean_error(sails("init", str(root / "sub")), "cannot create the project space")
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before
