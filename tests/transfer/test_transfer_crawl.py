"""The recursive crawler: below the start URL only, index pages and odd links skipped."""

from __future__ import annotations

import pytest

from sails.config import Download
from sails.errors import DownloadError
from sails.transfer import crawl, make_client
from sails.transfer.crawl import parse_size
from transfer_hostile import HostileServer

POLICY = Download(retries=1, backoff_seconds=0.01)

# nginx-style autoindex (<pre>, sizes after the link), with every kind of link to ignore.
ROOT = """<html><head><title>Index of /restore/job1/</title></head><body>
<h1>Index of /restore/job1/</h1><hr><pre><a href="../">../</a>
<a href="?C=M;O=A">sort</a>
<a href="uid___A002_X1_X1.ms/">uid___A002_X1_X1.ms/</a>      25-Nov-2024 12:00       -
<a href="weblog%20restore/">weblog restore/</a>      25-Nov-2024 12:00       -
<a href="README.txt">README.txt</a>                 25-Nov-2024 12:00    1234
<a href="/restore/">up</a> <a href="/restore/job2/x.ms/">elsewhere</a>
<a href="http://other.example/restore/job1/evil">other host</a>
<a href="%2e%2e/%2e%2e/etc/passwd">encoded dots</a>
<a href="uid___A002_X1_X1.ms/#frag">fragment</a>
<a href="mailto:archive@example.org">mail</a>
</pre><hr></body></html>
"""
MS = """<html><body><table>
<tr><td><a href="/restore/job1/">Parent Directory</a></td></tr>
<tr><td><a href="table.dat">table.dat</a></td><td>2024-11-25 12:00</td><td>1.2K</td></tr>
<tr><td><a href="ANTENNA/">ANTENNA/</a></td><td>2024-11-25 12:00</td><td>-</td></tr>
<tr><td><a href="../uid___A002_X1_X1.ms/table.dat">loop back</a></td></tr>
</table></body></html>
"""


@pytest.fixture
def site():
    with HostileServer() as srv:
        srv.add("/restore/job1/", ROOT.encode())
        srv.add("/restore/job1/uid___A002_X1_X1.ms/", MS.encode())
        srv.add("/restore/job1/uid___A002_X1_X1.ms/ANTENNA/",
                b'<a href="table.f0">table.f0</a>')
        srv.add("/restore/job1/weblog%20restore/", b'<a href="index.html">index.html</a>')
        yield srv


def test_crawl_lists_files_below_the_start_url_only(site):
    with make_client(POLICY) as c:
        files = crawl(c, site.url + "/restore/job1", POLICY)  # no trailing slash: added
    rel = {f.relpath: f for f in files}
    assert sorted(rel) == ["README.txt", "uid___A002_X1_X1.ms/ANTENNA/table.f0",
                           "uid___A002_X1_X1.ms/table.dat", "weblog restore/index.html"]
    assert rel["README.txt"].size == 1234  # exact size from the listing
    assert rel["uid___A002_X1_X1.ms/table.dat"].size is None  # "1.2K" is not exact
    assert rel["uid___A002_X1_X1.ms/table.dat"].approx_size == 1228
    # Each directory page was read once; nothing outside /restore/job1/ was requested.
    assert all(n == 1 for n in site.requests.values())
    assert set(site.requests) == {"/restore/job1/", "/restore/job1/uid___A002_X1_X1.ms/",
                                  "/restore/job1/uid___A002_X1_X1.ms/ANTENNA/",
                                  "/restore/job1/weblog%20restore/"}


def test_crawl_of_a_missing_restore_fails_clearly(site):
    with make_client(POLICY) as c, pytest.raises(DownloadError, match="HTTP 404"):
        crawl(c, site.url + "/restore/expired/", POLICY)


@pytest.mark.parametrize("text,exact,approx", [
    ("1234", 1234, 1234), ("25-Nov-2024 12:00    1234", 1234, 1234), ("1.2K", None, 1228),
    ("34M", None, 34 << 20), ("  - ", None, None), ("2024-11-25 12:00", None, None)])
def test_parse_size(text, exact, approx):
    assert parse_size(text) == (exact, approx)
