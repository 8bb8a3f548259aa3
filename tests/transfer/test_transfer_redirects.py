"""Redirects of downloads, over real loopback HTTP (issue #22: they were followed anywhere).

Three servers: ``a`` (127.0.0.1) answers with redirects; ``b`` listens on 127.0.0.2 (another
host) and ``c`` on 127.0.0.1 but another port (another origin). A download redirected to
either is refused with the reason, unless the host is in ``[download] redirect_hosts`` or is
one of the ``[archive]`` URLs' hosts; a redirect on the same origin is followed. The check
runs where httpx really calls it (a response hook, before ``next_request`` exists), which is
why a check that read ``next_request`` never refused anything.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sails.config import Download
from sails.errors import DownloadError
from sails.transfer import RemoteFile, download_file, make_client

BODY = b"visibilities" * 1000
POLICY = Download(retries=1, backoff_seconds=0.01, timeout_seconds=5)


class _Server:
    def __init__(self, host: str, redirects: dict[str, str] | None = None) -> None:
        outer = self
        self.redirects = redirects or {}
        self.hits: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.hits.append(self.path)
                if self.path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[self.path].format(**PORTS))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


PORTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def servers():
    b = _Server("127.0.0.2")
    c = _Server("127.0.0.1")
    a = _Server("127.0.0.1", {"/to-b": "http://127.0.0.2:{b}/f", "/to-c": "http://127.0.0.1:{c}/f",
                              "/same": "/f", "/ftp": "ftp://127.0.0.1:{c}/f"})
    PORTS.update(a=a.port, b=b.port, c=c.port)
    yield a, b, c
    for s in (a, b, c):
        s.close()


def _get(path: str, tmp_path, policy: Download = POLICY, archive_urls=()):
    url = f"http://127.0.0.1:{PORTS['a']}{path}"
    with make_client(policy, archive_urls=archive_urls) as client:
        return download_file(client, RemoteFile(url, tmp_path / "f.bin"), policy)


@pytest.mark.parametrize(("path", "where"), [("/to-b", "b"), ("/to-c", "c")])
def test_redirect_to_another_host_or_port_is_refused(servers, tmp_path, path, where):
    a, b, c = servers
    other = {"b": b, "c": c}[where]
    before = len(other.hits)
    with pytest.raises(DownloadError, match="redirect_hosts") as err:
        _get(path, tmp_path)
    host = f"127.0.0.{2 if where == 'b' else 1}:{other.port}"
    assert f"host {host} is not in [download] redirect_hosts" in str(err.value)
    assert len(other.hits) == before  # never contacted
    assert not (tmp_path / "f.bin").exists()


def test_redirect_on_the_same_origin_is_followed(servers, tmp_path):
    assert _get("/same", tmp_path).bytes == len(BODY)
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_allowed_hosts_and_archive_hosts_are_followed(servers, tmp_path):
    a, b, c = servers
    allowed = Download(**{**POLICY.model_dump(), "redirect_hosts": [f"127.0.0.2:{b.port}"]})
    assert _get("/to-b", tmp_path, allowed).bytes == len(BODY)
    (tmp_path / "f.bin").unlink()
    # The configured archive's host is trusted (a DataLink URL on c).
    res = _get("/to-c", tmp_path, archive_urls=[f"http://127.0.0.1:{c.port}/datalink/sync"])
    assert res.bytes == len(BODY)
    # host without a port means the default port only
    only_default = Download(**{**POLICY.model_dump(), "redirect_hosts": ["127.0.0.2"]})
    (tmp_path / "f.bin").unlink()
    with pytest.raises(DownloadError, match="redirect_hosts"):
        _get("/to-b", tmp_path, only_default)


def test_redirect_to_another_scheme_is_refused(servers, tmp_path):
    with pytest.raises(DownloadError, match="refusing a redirect"):
        _get("/ftp", tmp_path)


def test_redirect_hosts_setting_is_checked():
    with pytest.raises(ValueError, match="host or host:port"):
        Download(redirect_hosts=["https://mirror.example/path"])
    assert Download(redirect_hosts=[" Mirror.Example:8443 "]).redirect_hosts == [
        "mirror.example:8443"]
