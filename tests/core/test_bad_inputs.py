"""Every bad input of the audit's kinds gives one ``error:`` line and exit 1 or 2, never an
"internal error" or a traceback (issue #22). Names with markup print as they are.

The table is :data:`CASES` (plus the TOML and catalog-file projects built below); the count
goes into the issue's note.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest

from cli_run import sails
from sails.project import init_project
from sails.sim.archive_rows import synthetic_rows, write_alminer_csv

MOUS = "uid://A001/X1/X1"
ALIAS = {"ALMA_source_name": "target_name", "RAJ2000": "s_ra", "MOUS_id": "member_ous_uid"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    good = write_alminer_csv(synthetic_rows(1, 1, spws=[25]), root / "good.csv")
    return root, good


def csv_with(work, col: str, value: str) -> str:
    """The good CSV with one cell (and its ObsCore twin) set to ``value``."""
    root, good = work
    rows = list(csv.DictReader(io.StringIO(good.read_text())))
    for c in (col, ALIAS.get(col)):
        if c:
            rows[0][c] = value
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    path = root / f"{col}-{abs(hash(value))}.csv"
    path.write_text(out.getvalue())
    return str(path)


def files(work) -> dict[str, str]:
    root, good = work
    made = {"empty": b"", "binary": b"\xff\xfe\x00garbage\x01",
            "nul": good.read_bytes().replace(b",", b",\x00", 3), "badxml": b"<VOTABLE><oops"}
    for name, data in made.items():
        (root / name).write_bytes(data)
    return {k: str(root / k) for k in made} | {"dir": str(root), "missing": str(root / "no")}


# (kind, arguments (P = the project, F[x] = a file above, CSV(col, value)), environment)
CASES = [
    ("arguments", ["bogus"], {}),
    ("arguments", ["status", "--bogus"], {}),
    ("arguments", ["reset"], {}),
    ("arguments", ["run", "-j", "abc"], {}),
    ("arguments", ["run", "-j", "0"], {}),
    ("arguments", ["run", "--until", "nosuch"], {}),
    ("arguments", ["reset", MOUS, "--stage", "nosuch"], {}),
    ("arguments", ["show", "not-a-uid"], {}),
    ("arguments", ["show", MOUS], {}),
    ("arguments", ["logs", MOUS, "--lines", "-5"], {}),
    ("arguments", ["ingest", "csv"], {}),
    ("huge numbers", ["run", "-j", "9" * 40], {}),
    ("huge numbers", ["logs", MOUS, "--lines", "9" * 40], {}),
    ("control characters", ["show", "uid://A001/X1/X1\x1b[31m\x07"], {}),
    ("NUL", ["show", "uid://A001/X1/X1\x00"], {}),
    ("names with markup", ["show", "x[/bold]"], {}),
    ("names with markup", ["run", "--until", "[red]x"], {}),
    ("CSV/ObsCore", ["ingest", "csv", "F[missing]"], {}),
    ("CSV/ObsCore", ["ingest", "csv", "F[empty]"], {}),
    ("CSV/ObsCore", ["ingest", "csv", "F[binary]"], {}),
    ("CSV/ObsCore", ["ingest", "csv", "F[dir]"], {}),
    ("CSV/ObsCore", ["ingest", "obscore", "F[badxml]"], {}),
    ("CSV/ObsCore", ["ingest", "obscore", "F[binary]"], {}),
    ("CSV/ObsCore", ["ingest", "csv", "CSV(MOUS_id,uid://bad)"], {}),
    ("CSV/ObsCore", ["ingest", "csv", "CSV(RAJ2000,400)"], {}),
    ("NUL", ["ingest", "csv", "F[nul]"], {}),
    ("huge numbers", ["ingest", "csv", "CSV(band_list," + "9" * 400 + ")"], {}),
    ("huge numbers", ["ingest", "csv", "CSV(RAJ2000,1e400)"], {}),
    ("huge numbers", ["ingest", "csv", "CSV(t_min," + "9" * 400 + ")"], {}),
    ("control characters", ["ingest", "csv", "CSV(ALMA_source_name,a\x1b[2Jb)"], {}),
    ("NUL", ["ingest", "csv", "CSV(ALMA_source_name,a\x00b)"], {}),
    ("URLs", ["ingest", "srdp", MOUS, "file:///etc/passwd"], {}),
    ("URLs", ["ingest", "srdp", MOUS, "ftp://example.org/x"], {}),
    ("URLs", ["ingest", "srdp", MOUS, "http://exa mple.org/x"], {}),
    ("URLs", ["ingest", "srdp", MOUS, "not a url"], {}),
    ("URLs", ["ingest", "srdp", MOUS, "https://user:secret@example.org/x"], {}),
    ("URLs", ["ingest", "srdp", MOUS, "http://example.org/\x7fx"], {}),
    ("environment", ["status"], {"SAILS_EXECUTION": "not json"}),
    ("environment", ["status"], {"SAILS_EXECUTION__CASA_SLOTS": "abc"}),
    ("environment", ["status"], {"SAILS_EXECUTION__CASA_SLOTS": "9" * 40}),
    ("environment", ["status"], {"SAILS_EXECUTON__CASA_SLOTS": "2"}),
    ("environment", ["status"], {"SAILS_EXECUTION__LEASE_SECONDS": "-1"}),
    ("environment", ["status"], {"SAILS_PLATFORM__VM_PREFIX": "/mnt/x"}),
    ("environment", ["status"], {"SAILS_PLATFORM__VM_PREFIX": "x",
                                 "SAILS_PLATFORM__PLATFORM_PREFIX": "/arc/x"}),
    ("environment", ["status"], {"SAILS_IMAGES__CASA": "casa 6.7"}),
]

TOMLS = {
    "not UTF-8": b"[execution]\ncasa_slots = 1 # \xff\xfe\n",
    "invalid": b"[execution\n",
    "unknown key": b"[execution]\ncasa_slotz = 2\n",
    "huge int": b"[execution]\ncasa_slots = 99999999999999999999\n",
    "above bound": b"[execution]\ncasa_slots = 100000\n",
    "NUL": b"[execution]\x00\n",
    # [platform] and image references: refused when read, not at the first job submitted
    "platform one prefix": b'[platform]\nvm_prefix = "/mnt/arc/projects/x"\n',
    "platform relative": b'[platform]\nvm_prefix = "mnt/x"\nplatform_prefix = "/arc/x"\n',
    "platform root": b'[platform]\nvm_prefix = "/"\nplatform_prefix = "/arc/x"\n',
    "platform dotdot": b'[platform]\nvm_prefix = "/mnt/x/../y"\nplatform_prefix = "/arc/x"\n',
    "platform control": b'[platform]\nvm_prefix = "/mnt/x\\u001b"\nplatform_prefix = "/a"\n',
    "image ref": b'[images]\ncasa = "not an image"\n',
    "stage image typo": b'[canfar.stage_images]\nimage = "csa"\n',
    "redirect host URL": b'[download]\nredirect_hosts = ["https://mirror.example/x"]\n',
}
CATALOGS = {"garbage": b"not a database" * 100, "truncated": b"SQLite format 3\x00" + bytes(50),
            "folder": None}


def _check(code: int, out: str, what) -> None:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert code in (1, 2), (what, code, out)
    assert len(errors) == 1, (what, out)
    assert "internal error" not in out and "Traceback" not in out, (what, out)


@pytest.fixture(scope="module")
def project(work):
    root, good = work
    project = init_project(root / "p")
    return project


def _resolve(arg: str, work) -> str:
    if arg.startswith("F[") and arg.endswith("]"):
        return files(work)[arg[2:-1]]
    if arg.startswith("CSV(") and arg.endswith(")"):
        col, value = arg[4:-1].split(",", 1)
        return csv_with(work, col, value)
    return arg


@pytest.mark.parametrize(("kind", "args", "env"), CASES,
                         ids=[f"{k}-{i}" for i, (k, _a, _e) in enumerate(CASES)])
def test_bad_input_is_one_clean_error(kind, args, env, work, project, capsys, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    argv = [_resolve(a, work) for a in args]
    if argv[:2] == ["ingest", "csv"] and len(argv) > 2:
        argv.append("--no-datalink")
    if argv[:2] == ["ingest", "srdp"]:  # the MOUS must exist for the URL to be judged
        project.catalog.upsert_mous({"mous_id": MOUS})
    code, out = sails(capsys, "-p", str(project.root), *argv)
    _check(code, out, (kind, args))


@pytest.mark.parametrize("name", sorted(TOMLS))
def test_bad_sails_toml(name, work, capsys):
    p = init_project(work[0] / f"toml-{abs(hash(name))}")
    (p.root / "sails.toml").write_bytes(TOMLS[name])
    code, out = sails(capsys, "-p", str(p.root), "status")
    _check(code, out, name)


@pytest.mark.parametrize("name", sorted(CATALOGS))
def test_bad_catalog_file(name, work, capsys):
    p = init_project(work[0] / f"cat-{name}")
    cat = p.catalog_path
    p.catalog.close()
    for f in (cat, Path(f"{cat}-wal"), Path(f"{cat}-shm")):
        f.unlink(missing_ok=True)
    if CATALOGS[name] is None:
        cat.mkdir()
    else:
        cat.write_bytes(CATALOGS[name])
    code, out = sails(capsys, "-p", str(p.root), "status")
    _check(code, out, name)
    shutil.rmtree(p.root)


def test_count():
    """The note's table: how many bad inputs of each kind are checked here."""
    kinds: dict[str, int] = {}
    for kind, _a, _e in CASES:
        kinds[kind] = kinds.get(kind, 0) + 1
    kinds["TOML"] = len(TOMLS)
    kinds["catalog files"] = len(CATALOGS)
    print("bad inputs checked:", kinds, "total", sum(kinds.values()))
    assert sum(kinds.values()) >= 45


MARKUP_NAMES = ["x[/bold]", "[canfar] src", "[red]M83[/red]", "a]b[c"]


def test_names_with_markup_print_as_they_are(work, capsys):
    """A source named ``x[/bold]`` crashed ingest --dry-run, show, and (in a recorded error)
    status for the whole project."""
    root, good = work
    project = init_project(root / "markup")
    rows = synthetic_rows(1, len(MARKUP_NAMES), spws=[25], names=MARKUP_NAMES)
    path = write_alminer_csv(rows, root / "markup.csv")
    code, out = sails(capsys, "-p", str(project.root), "ingest", "csv", str(path),
                      "--no-datalink", "--dry-run")
    assert code == 0 and all(n in out for n in MARKUP_NAMES), out
    code, out = sails(capsys, "-p", str(project.root), "ingest", "csv", str(path),
                      "--no-datalink")
    assert code == 0, out
    cat = project.catalog
    mous = cat.mous_ids()[0]
    from sails.catalog import new_owner

    owner = new_owner()
    row = cat.claim(cat.find_stage(mous, "download").id, owner, 60)
    cat.fail(row.id, owner, "[canfar] session x[/bold] failed")
    code, out = sails(capsys, "-p", str(project.root), "show", mous)
    assert code == 0 and "[canfar] session x[/bold] failed" in out, out
    assert all(n in out for n in MARKUP_NAMES), out
    code, out = sails(capsys, "-p", str(project.root), "status")
    assert code == 0 and "[canfar] session x[/bold]" in out, out


def test_skip_bad_skips_huge_numbers(work, capsys):
    """A huge integer was an OverflowError that --skip-bad did not skip (issue #22, 8)."""
    root, _good = work
    rows = synthetic_rows(2, 1, spws=[25])
    path = write_alminer_csv(rows, root / "two.csv")
    text = list(csv.DictReader(io.StringIO(path.read_text())))
    text[1]["t_min"] = "9" * 400
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(text[0]))
    w.writeheader()
    w.writerows(text)
    path.write_text(out.getvalue())
    project = init_project(root / "skip-bad")
    code, said = sails(capsys, "-p", str(project.root), "ingest", "csv", str(path),
                       "--no-datalink", "--skip-bad")
    assert code == 0 and "1 bad row(s) skipped" in said and "t_min" in said, said
    assert len(project.catalog.mous_ids()) == 1
