"""The survey report: content, links, incremental rebuilds, read-only catalog access, the
pages in a real headless Chromium, and the `sails report` / `sails logs` / `sails show` CLI."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from cli_run import sails
from report_project import (
    BLOCK_REASON,
    FAIL_REASON,
    MITIGATION,
    MOUS_A,
    MOUS_B,
    MOUS_F,
    OWNER,
    SKIP_REASON,
    TARGET_A1,
    TARGET_A2,
    TARGET_D,
    build_mixed_project,
    write_image,
)
from sails.catalog import Product
from sails.errors import CatalogError
from sails.ids import parse_uid
from sails.project import init_project
from sails.report import generate
from sails.report.data import page_stem
from sails.report.logs import find_logs, mentions_target, parse_name
from sails.stages.base import safe_name

ALL_MOUS = [MOUS_A, MOUS_B, "uid://A001/X2d1/X1c", "uid://A001/X2d1/X1e",
            "uid://A001/X2d1/X20", MOUS_F]
SRC = Path(__file__).resolve().parents[2] / "src"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def catalog_dump(path: Path) -> list[str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(con.iterdump())
    finally:
        con.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The mixed-state project and its report, built once for the read-only checks."""
    project = build_mixed_project(tmp_path_factory.mktemp("mixed"))
    before = catalog_dump(project.catalog_path)
    result = generate(project)
    return project, result, before


def target_page(project, mous: str, target: str) -> Path:
    return project.reports / "targets" / f"{page_stem(parse_uid(mous).fs, target)}.html"


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and a.get("src"):
            self.imgs.append(a["src"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])


def local_targets(page: Path) -> tuple[list[Path], int]:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    out = []
    for link in parser.imgs + parser.hrefs:
        parts = urlsplit(link)
        if parts.scheme or not parts.path:
            continue
        out.append((page.parent / unquote(parts.path)).resolve())
    return out, len(parser.imgs)


# ---------------------------------------------------------------------- content
def test_overview_lists_every_mous_target_and_reason(built):
    project, result, _ = built
    html = result.index.read_text(encoding="utf-8")
    for mous in ALL_MOUS:
        assert mous in html
    for reason in (FAIL_REASON, SKIP_REASON, BLOCK_REASON):
        assert reason in html  # in the reason column and in the cell's hover title
    assert 'title="verify: failed' in html
    # Archive names are escaped, never interpreted as markup.
    assert "Serpens &lt;SMM1&gt; &amp; &quot;co&quot;" in html
    assert "<SMM1>" not in html
    for state in ("pending", "running", "done", "failed", "skipped", "blocked"):
        assert f'class="st st-{state}"' in html
    assert "src=\"http" not in html and "href=\"http" not in html  # nothing from the network


def test_target_page_shows_products_metrics_and_logs(built):
    project, _, _ = built
    page = target_page(project, MOUS_A, TARGET_A1).read_text(encoding="utf-8")
    for text in ("Self-calibration", "16.4", "22.5", "\u00d71.37", "inf_EB, 300s, 60s",
                 "area -6.2 %", "Continuum", "1.05 mJy", "rms / theoretical",
                 "12CO_2-1", "moment 0, 1 and 8", "spectrum at the continuum peak",
                 "CORRECTED_DATA", "X1#ALMA_RB_06#BB_1#SW-01#FULL_RES", "3.1 %",
                 "verify-20240101T000000.casa.log", "A. Astronomer", "16:32:22.61"):
        assert text in page, text
    assert "Size limits" in page  # what the size limits cut, in order
    assert page.index(MITIGATION[0]["why"]) < page.index(MITIGATION[1]["why"])
    # Another target's log is counted but not listed on this page.
    assert "image-HOPS_370__core_" not in page
    skipped = target_page(project, MOUS_A, TARGET_A2).read_text(encoding="utf-8")
    assert SKIP_REASON in skipped and "running since" in skipped


def test_every_local_link_and_image_exists(built):
    project, _, _ = built
    pages = sorted(project.reports.rglob("*.html"))
    assert len(pages) == 2 + 7  # index, survey, one page per target
    n_imgs = 0
    for page in pages:
        targets, imgs = local_targets(page)
        n_imgs += imgs
        missing = [str(t) for t in targets if not t.exists()]
        assert not missing, f"{page.name}: {missing}"
    assert n_imgs >= 8  # 4 survey plots + continuum, self-cal pair, moments, spectrum


def test_missing_product_file_is_reported_not_linked(built):
    project, _, _ = built
    page = target_page(project, MOUS_F, "Per-emb-2").read_text(encoding="utf-8")
    assert "deleted.cont.I.pbcor.fits <span class=\"warn\">(missing on disk)" in page
    assert "preview unavailable: file not found: deleted.cont.I.pbcor.fits" in page


def test_report_never_writes_the_catalog(built):
    project, _, before = built
    assert catalog_dump(project.catalog_path) == before


def test_survey_plots_made(built):
    project, _, _ = built
    plots = sorted(p.name for p in (project.reports / "plots").glob("*.png"))
    assert plots == ["rms_vs_theoretical.png", "selfcal_snr_gain.png", "sky_map.png",
                     "stage_wall_times.png"]
    survey = (project.reports / "survey.html").read_text(encoding="utf-8")
    assert "median self-cal S/N gain" in survey and "1.37" in survey


# ---------------------------------------------------------------------- incremental
def test_rebuild_only_touches_changed_targets(tmp_path):
    project = build_mixed_project(tmp_path / "p")
    first = generate(project)
    assert first.pages_written == 7 and first.images_drawn == 4
    page_a1 = target_page(project, MOUS_A, TARGET_A1)
    page_a2 = target_page(project, MOUS_A, TARGET_A2)
    mtime_a1 = page_a1.stat().st_mtime_ns

    again = generate(project)
    assert (again.pages_written, again.pages_unchanged, again.images_drawn) == (0, 7, 0)

    cat = project.catalog
    row = cat.find_stage(MOUS_A, "image", TARGET_A2)
    cat.complete(row.id, OWNER, [Product("cont_image", str(tmp_path / "a2.cont.fits"),
                                         target=TARGET_A2, metrics={"rms": 1e-3})])
    write_image(tmp_path / "a2.cont.fits", seed=9)
    third = generate(project)
    assert third.pages_written == 1 and third.images_drawn == 1
    assert page_a1.stat().st_mtime_ns == mtime_a1
    assert "a2.cont.fits" in page_a2.read_text(encoding="utf-8")

    # A rewritten FITS (same path) redraws only the previews drawn from it: the continuum
    # and the spectrum taken at its peak.
    cont = next(Path(p["path"]) for p in cat.products(MOUS_A, TARGET_A1)
                if p["kind"] == "cont_image")
    time.sleep(0.01)
    write_image(cont, peak=0.2, seed=11)
    fourth = generate(project)
    assert fourth.pages_written == 1 and fourth.images_drawn == 2

    # A MOUS that leaves the catalog takes its pages with it.
    with cat.write() as con:
        con.execute("DELETE FROM mous WHERE mous_id = ?", (MOUS_B,))
    fifth = generate(project)
    assert fifth.pages_removed == 1
    assert not (project.reports / "targets" / parse_uid(MOUS_B).fs).exists()
    assert MOUS_B not in fifth.index.read_text(encoding="utf-8")


# ---------------------------------------------------------------------- every stage
def test_empty_and_just_ingested_catalogs(tmp_path):
    project = init_project(tmp_path / "empty")
    result = generate(project)
    assert "the catalog holds no MOUS yet" in result.index.read_text(encoding="utf-8")
    survey = (project.reports / "survey.html").read_text(encoding="utf-8")
    assert "no self-calibration results yet" in survey and "<img" not in survey

    cat = project.catalog
    cat.upsert_project({"project_code": "2022.1.00003.S"})
    cat.upsert_mous({"mous_id": "uid___A001_X1_X2", "project_code": "2022.1.00003.S"})
    cat.upsert_mous({"mous_id": "uid://A001/X1/X3"})  # no targets yet
    cat.upsert_target({"mous_id": "uid://A001/X1/X2", "alma_source_name": "NGC 1333 IRAS4A",
                       "obs_id": "o1"})  # no position, no band
    result = generate(project)
    html = result.index.read_text(encoding="utf-8")
    assert "uid://A001/X1/X2" in html and "uid://A001/X1/X3" in html
    assert "(no targets yet)" in html
    page = target_page(project, "uid://A001/X1/X2", "NGC 1333 IRAS4A").read_text("utf-8")
    assert "no measurement-set summary recorded yet" in page
    assert "no self-calibration results yet" in page and "no logs yet" in page


def test_missing_catalog_is_a_clear_error(tmp_path):
    project = init_project(tmp_path / "p")
    project.catalog.close()
    project.catalog_path.unlink()
    with pytest.raises(CatalogError, match="no catalog") as err:
        generate(project)
    assert "sails init" in err.value.one_line()


def test_unreadable_products_give_notes_not_errors(tmp_path):
    project = init_project(tmp_path / "p")
    cat = project.catalog
    mous, name = "uid://A001/X9/X9", "W3(OH)"
    cat.upsert_mous({"mous_id": mous})
    cat.upsert_target({"mous_id": mous, "alma_source_name": name, "obs_id": "o"})
    bogus = tmp_path / "not_fits.cont.I.pbcor.fits"
    bogus.write_text("this is not FITS")
    casa_image = tmp_path / "final.image"
    casa_image.mkdir()
    summary = tmp_path / "broken.summary.json"
    summary.write_text("{not json")
    row = cat.find_stage(mous, "download")
    cat.claim(row.id, OWNER)
    cat.complete(row.id, OWNER, [Product("ms_summary", str(summary), metrics={"n_scans": 7})])
    row = cat.find_stage(mous, "image", name)
    cat.claim(row.id, OWNER)
    cat.complete(row.id, OWNER, [Product("cont_image", str(bogus), target=name),
                                 Product("cont_image", str(casa_image), target=name),
                                 Product("cube", str(bogus.with_name("x.CS_5-4.cube.fits")),
                                         target=name)])
    result = generate(project)
    assert result.images_drawn == 0
    page = target_page(project, mous, name).read_text(encoding="utf-8")
    assert "not_fits.cont.I.pbcor.fits is not a readable FITS file" in page
    assert "final.image is a CASA image, not FITS" in page
    assert "broken.summary.json: unreadable JSON" in page and ">7<" in page
    assert "<h3>CS_5-4</h3>" in page, page[page.find("<h2>Lines"):][:800]
    assert "file not found: x.CS_5-4.cube.fits" in page


# ---------------------------------------------------------------------- logs
def test_log_names_and_newest_run(tmp_path):
    f = parse_name(tmp_path / "selfcal-HOPS_370-20240101T010000.casa.log")
    assert (f.stage, f.group, f.kind) == ("selfcal", "selfcal-HOPS_370", "casa")
    f = parse_name(tmp_path / "image-W3_OH-cont-20240101T010000.retry1.stdout.log")
    assert (f.stage, f.group, f.run, f.kind) == (
        "image", "image-W3_OH-cont", "image-W3_OH-cont-20240101T010000", "retry1.stdout")
    # Stages cut and sanitise target names in log names (sails.stages.base.safe_name).
    long = "Serpens Main SMM1-a + 'b' (the long name of a protostellar source)"
    name = f"selfcal-{safe_name(long, 40)}-20240101T010000.casa.log"
    assert mentions_target(name, long) and not mentions_target(name, "Serpens South")
    project = init_project(tmp_path / "p")
    d = project.logs / parse_uid(MOUS_A).fs
    d.mkdir(parents=True)
    for i, stamp in enumerate(("20240101T000000", "20240102T000000")):
        for kind in ("casa", "stdout"):
            p = d / f"verify-{stamp}.{kind}.log"
            p.write_text(kind)
            os.utime(p, (1e9 + i, 1e9 + i))
    (d / "split-20240101T000000.casa.log").write_text("x")
    newest = find_logs(project, MOUS_A, stage="verify")
    assert [x.path.name for x in newest] == ["verify-20240102T000000.stdout.log",
                                             "verify-20240102T000000.casa.log"]
    assert len(find_logs(project, MOUS_A, stage="verify", latest=False)) == 4
    assert len(find_logs(project, MOUS_A)) == 3


def test_cli_report_logs_and_show(built, capsys):
    project, _, _ = built
    root = str(project.root)
    code, out = sails(capsys, "-p", root, "report")
    assert code == 0 and "report written" in out and "index.html" in out
    code, out = sails(capsys, "-p", root, "logs", MOUS_A, "--stage", "verify")
    assert code == 0
    assert "verify-20240101T000000.casa.log" in out and "SEVERE something" in out
    assert "selfcal-" not in out
    code, out = sails(capsys, "-p", root, "logs", MOUS_B)
    assert code == 2
    assert out.count("\n") == 1 and "no logs for uid://A001/X1465/X2a0" in out
    code, out = sails(capsys, "-p", root, "logs", "not-a-uid")
    assert code == 2 and "malformed MOUS uid" in out
    code, out = sails(capsys, "-p", root, "show", MOUS_A)
    assert code == 0 and "results per target" in out and "(x1.37)" in out


def test_cli_logs_follow_prints_new_lines_and_stops_cleanly(built):
    project, _, _ = built
    log = project.logs / parse_uid(MOUS_A).fs / "verify-20240101T000000.casa.log"
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from sails.cli import main; main()", "-p", str(project.root),
         "logs", MOUS_A, "--stage", "verify", "--follow", "-n", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True)
    reader.start()
    seen: list[str] = []

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
            if text in seen[-1]:
                return

    try:
        wait_for("following")
        with log.open("a") as fh:
            fh.write("INFO fresh line 4242\n")
        wait_for("fresh line 4242")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=5)
    while not lines.empty():
        seen.append(lines.get())
    err = proc.stderr.read()
    assert any("fresh line 4242" in s for s in seen), "".join(seen)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and any("stopped following" in x for x in seen)


# ---------------------------------------------------------------------- headless Chromium
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium not installed (apt-get install chromium; .ci/run does): "
                "browser checks of the report skipped")


def browse(url: str, *args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="sails-chromium-") as profile:
        r = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", *args, url],
            capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def body_attr(dom: str, name: str) -> str | None:
    m = re.search(r"<body[^>]*\s" + re.escape(name) + r'="([^"]*)"', dom)
    return m.group(1) if m else None


def test_pages_in_headless_chromium(built, tmp_path):
    project, result, _ = built
    dom = browse(result.index.as_uri(), "--dump-dom")
    assert body_attr(dom, "data-filter-ready") == "1"  # the inline JS ran
    assert body_attr(dom, "data-broken-images") == "0"
    for mous in ALL_MOUS:
        assert mous in dom
    assert FAIL_REASON in dom

    # The state filter, driven from the URL fragment: only the failed MOUS stays visible.
    dom = browse(result.index.as_uri() + "#state=failed", "--dump-dom")
    rows = re.findall(r"<tr data-states=[^>]*>", dom)
    visible = [r for r in rows if " hidden" not in r]
    assert len(rows) == 7 and len(visible) == 1 and "verify" in dom
    assert 'data-project="2019.1.00001.S"' in visible[0] and "failed" in visible[0]

    for page in (target_page(project, MOUS_A, TARGET_A1), project.reports / "survey.html"):
        dom = browse(page.as_uri(), "--dump-dom")
        assert body_attr(dom, "data-images") == "4", page.name
        assert body_attr(dom, "data-broken-images") == "0", page.name

    # The broken-image check can fail: remove one preview from a copy of the report.
    copy = tmp_path / "copy"
    shutil.copytree(project.reports, copy / "reports")
    a1 = copy / "reports" / target_page(project, MOUS_A, TARGET_A1).relative_to(
        project.reports)
    next(a1.parent.glob(a1.stem + ".spec*.png")).unlink()
    dom = browse(a1.as_uri(), "--dump-dom")
    assert body_attr(dom, "data-broken-images") == "1"
    assert "image not found:" in dom

    shots = {"report-overview.png": (result.index, "1400,1000"),
             "report-target.png": (target_page(project, MOUS_A, TARGET_A1), "1400,2000")}
    for name, (page, size) in shots.items():
        out = tmp_path / name
        browse(page.as_uri(), f"--screenshot={out}", f"--window-size={size}")
        assert out.stat().st_size > 20_000
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("SAILS_DOCS_SCREENSHOTS"):
            DOCS.mkdir(exist_ok=True)
            shutil.copy(out, DOCS / name)


def test_names_with_markup_survive_in_the_browser(built):
    project, _, _ = built
    dom = browse(target_page(project, "uid://A001/X2d1/X1e", TARGET_D).as_uri(), "--dump-dom")
    assert "Serpens &lt;SMM1&gt; &amp; \"co\"" in dom
    assert body_attr(dom, "data-broken-images") == "0"


def test_previews_without_sky_wcs_and_spectrum_fallback(tmp_path):
    from astropy.io import fits

    from report_project import write_cube
    from sails.report import images

    cube = write_cube(tmp_path / "c.fits")
    info = images.spectrum_png(cube, tmp_path / "s.png", None, "CO")
    assert info["where"] == "brightest pixel"  # no continuum position given
    assert abs(info["x"] - 28) <= 1 and abs(info["y"] - 26.5) <= 1  # the source, not noise
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.arange(64.0).reshape(8, 8)).writeto(plain)
    got = images.continuum_png(plain, tmp_path / "p.png")
    assert got["peak"] == 63.0 and got["beam"] is None
    assert (tmp_path / "s.png").stat().st_size > 5000 and (tmp_path / "p.png").exists()
    blank = tmp_path / "blank.fits"
    fits.PrimaryHDU(np.full((8, 8), np.nan)).writeto(blank)
    with pytest.raises(images.PreviewError, match="all blank"):
        images.continuum_png(blank, tmp_path / "b.png")
