"""The simulated archive server: SRDP autoindex tree, DataLink listings, tarballs, routes."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import httpx
import pytest
from astropy.io.votable import parse_single_table

from sails.fakes.archive import ArchiveServer, human_size
from sails.fakes.tap import shared_testdata_dir
from transfer_fixtures import make_mous, tree_bytes

REAL = shared_testdata_dir() / "alma-archive" / "alma-datalink.xml"
MOUS = "uid___A001_X1_X2"
RAWMOUS = "uid___A001_X1_X3"


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    make_mous(root, MOUS, ebs=("uid___A002_Xa_X1", "uid___A002_Xa_X2"),
              raw=("uid___A002_Xa_X1",))
    make_mous(root, RAWMOUS, raw=("uid___A002_Xb_X1", "uid___A002_Xb_X2"), weblog=False, seed=1)
    (root / "not-a-mous").mkdir()
    return root


@pytest.fixture(scope="module")
def server(sim_root):
    with ArchiveServer(sim_root) as srv:
        yield srv


def hrefs(page: str) -> list[str]:
    return re.findall(r'<a href="([^"]*)"', page)


def test_autoindex_pages_are_apache_like(server):
    r = httpx.get(server.srdp_url(MOUS))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    links = hrefs(r.text)
    assert links[:4] == ["?C=N;O=D", "?C=M;O=A", "?C=S;O=A", "?C=D;O=A"]
    assert "/srdp/" in links  # parent
    assert "uid___A002_Xa_X1.ms/" in links and "weblog_restore/" in links
    assert "truth.json" not in r.text  # simulation truth is not part of a delivery
    # Sort links work: descending by name reverses the order.
    down = hrefs(httpx.get(server.srdp_url(MOUS) + "?C=N;O=D").text)
    names = [h for h in links if not h.startswith(("?", "/"))]
    assert [h for h in down if not h.startswith(("?", "/"))] == names[::-1]
    top = httpx.get(server.url + "/srdp/").text
    assert f"{MOUS}/" in hrefs(top) and "not-a-mous/" not in hrefs(top)


def test_files_sizes_ranges_and_head(server, sim_root):
    path = "uid___A002_Xa_X1.ms/table.f0"
    data = (sim_root / MOUS / path).read_bytes()
    url = server.srdp_url(MOUS) + path
    listing = httpx.get(server.srdp_url(MOUS) + "uid___A002_Xa_X1.ms/").text
    assert human_size(len(data)) in listing
    r = httpx.get(url)
    assert r.content == data and int(r.headers["content-length"]) == len(data)
    assert r.headers["accept-ranges"] == "bytes"
    r = httpx.get(url, headers={"Range": "bytes=100-"})
    assert r.status_code == 206 and r.content == data[100:]
    assert r.headers["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    r = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    r = httpx.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    r = httpx.head(url)
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["content-length"]) == len(data)


def test_redirects_hidden_and_traversal(server):
    r = httpx.get(server.srdp_url(MOUS) + "uid___A002_Xa_X1.ms")
    assert r.status_code == 301 and r.headers["location"].endswith(".ms/")
    r = httpx.get(server.url + "/srdp")
    assert r.status_code == 301 and r.headers["location"] == "/srdp/"
    assert httpx.get(server.srdp_url(MOUS) + "truth.json").status_code == 404
    for bad in ("/srdp/../../etc/passwd", "/srdp/%2e%2e/%2e%2e/etc/passwd",
                f"/srdp/{MOUS}/%2e%2e/{RAWMOUS}/truth.json"):
        with httpx.Client() as c:
            r = c.send(c.build_request("GET", server.url + bad))
        assert r.status_code in (400, 404), bad
    assert httpx.get(server.url + "/nowhere").status_code == 404


def test_datalink_has_the_real_response_shape(server):
    real = parse_single_table(str(REAL))
    r = httpx.get(server.datalink_url(MOUS))
    assert r.headers["content-type"].startswith("application/x-votable+xml")
    ours = parse_single_table(io.BytesIO(r.content))
    assert [f.name for f in ours.fields] == [f.name for f in real.fields]
    assert [f.datatype for f in ours.fields] == [f.datatype for f in real.fields]
    rows = ours.array
    sem = list(rows["semantics"])
    assert sem.count("#documentation") == 1 and sem.count("#progenitor") == 1
    assert sem.count("#this") == 2  # the tarball and its DataLink service row
    for row in rows:
        if row["access_url"]:
            got = httpx.get(row["access_url"])
            assert got.status_code == 200
            assert len(got.content) == int(row["content_length"])
    svc = [row["service_def"] for row in rows if row["service_def"]]
    assert svc == [f"DataLink.2019.1.00123.S_{MOUS}_001_of_001.tar"]
    assert f"?ID=2019.1.00123.S_{MOUS}_001_of_001.tar" in r.text  # meta RESOURCE accessURL


def test_product_tarball_content_and_nested_listing(server, sim_root):
    r = httpx.get(server.datalink_url(MOUS))
    table = parse_single_table(io.BytesIO(r.content)).array
    tar_url = next(row["access_url"] for row in table if row["semantics"] == "#this"
                   and row["access_url"])
    with tarfile.open(fileobj=io.BytesIO(httpx.get(tar_url).content)) as tf:
        names = tf.getnames()
    prefix = "2019.1.00123.S/science_goal.uid___A001_X0_X0/group.uid___A001_X0_X1/" \
             f"member.{MOUS}/"
    assert all(n.startswith(prefix) for n in names)
    assert f"{prefix}calibrated/uid___A002_Xa_X1.ms/table.f0" in names
    assert f"{prefix}calibrated/weblog_restore/pipeline-2024/html/index.html" in names
    assert not any("asdm.sdm" in n or "truth.json" in n for n in names)
    # The nested (#this) listing names every file of the tarball, each fetchable.
    nested_id = f"2019.1.00123.S_{MOUS}_001_of_001.tar"
    nested = parse_single_table(io.BytesIO(
        httpx.get(server.url + "/datalink/sync", params={"ID": nested_id}).content)).array
    src = tree_bytes(sim_root / MOUS)
    expected = {k for k in src if k != "truth.json" and ".asdm.sdm" not in k}
    got = {}
    for row in nested:
        assert row["ID"] == nested_id and row["semantics"] == "#this"
        got[row["access_url"].split(nested_id + "/", 1)[1]] = int(row["content_length"])
    assert {k.replace("%20", " ") for k in got} == expected
    one = next(row["access_url"] for row in nested if row["access_url"].endswith("index.html"))
    assert httpx.get(one).content == src["weblog_restore/pipeline-2024/html/index.html"]


def test_raw_only_mous_and_unknown_id(server):
    table = parse_single_table(io.BytesIO(httpx.get(server.datalink_url(RAWMOUS)).content)).array
    assert sorted(table["semantics"]) == ["#documentation", "#progenitor", "#progenitor"]
    assert all(".asdm.sdm.tar" in u for u in table["access_url"] if "README" not in u)
    bad = parse_single_table(io.BytesIO(
        httpx.get(server.url + "/datalink/sync", params={"ID": "uid://A001/X9/X9"}).content))
    assert "NotFoundFault" in bad.array["error_message"][0]


def test_extra_routes_get_and_post(sim_root):
    seen = []

    def tap(handler, params):
        seen.append((handler.command, params))
        body = b"ok " + params.get("QUERY", "").encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with ArchiveServer(sim_root, extra_routes={"/tap/sync": tap}) as srv:
        assert httpx.get(srv.url + "/tap/sync", params={"QUERY": "SELECT 1"}).text \
            == "ok SELECT 1"
        r = httpx.post(srv.url + "/tap/sync", data={"REQUEST": "doQuery", "QUERY": "SELECT 2"})
        assert r.text == "ok SELECT 2"
    assert seen[1] == ("POST", {"REQUEST": "doQuery", "QUERY": "SELECT 2"})


def test_cli_serve_command(sim_root):
    code = ("import typer; from sails.cli.simserve import serve_command; "
            "app = typer.Typer(); app.command()(serve_command); app()")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src"), COLUMNS="200")
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("sails-archive-cache-*"))
    proc = subprocess.Popen([sys.executable, "-c", code, str(sim_root), "--port", "0"],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:\d+)", first)
        assert m, first
        assert "serving 2 MOUS" in first
        r = httpx.get(m.group(1) + f"/srdp/{MOUS}/", timeout=10)
        assert r.status_code == 200
        r = httpx.get(m.group(1) + f"/datalink/sync?ID={MOUS}", timeout=10)  # builds a tar
        assert r.status_code == 200
        ours = set(tmp.glob("sails-archive-cache-*")) - before
        assert len(ours) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
    assert not any(p.exists() for p in ours)  # SIGTERM ends cleanly: cache removed
