"""Resumable downloads against a hostile loopback server (real HTTP over 127.0.0.1)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sails.config import Download
from sails.errors import DownloadError, TransientError
from sails.transfer import RemoteFile, download_file, download_many, make_client, part_path
from transfer_hostile import Behaviour, HostileServer

POLICY = Download(retries=4, backoff_seconds=0.01, timeout_seconds=5, parallel_files=3)


def payload(n: int, seed: int = 1) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"x" * (n % 32)


@pytest.fixture
def server():
    with HostileServer() as srv:
        yield srv


@pytest.fixture
def client():
    with make_client(POLICY) as c:
        yield c


def test_dropped_connection_resumes_with_identical_bytes(server, client, tmp_path):
    body = payload(3_000_000)
    url = server.add("/f.bin", body, Behaviour(drop_after=700_000, drops=3))
    res = download_file(client, RemoteFile(url, tmp_path / "f.bin", size=len(body)), POLICY)
    assert (tmp_path / "f.bin").read_bytes() == body
    assert not part_path(tmp_path / "f.bin").exists()
    assert server.requests["/f.bin"] == 4
    # Every byte crossed the wire exactly once: resumed, never restarted.
    assert server.sent["/f.bin"] == len(body)
    assert res.fetched == len(body)
    assert server.ranges == [None, "bytes=700000-", "bytes=1400000-", "bytes=2100000-"]


def test_resume_from_existing_part_file(server, client, tmp_path):
    body = payload(500_000, seed=2)
    url = server.add("/g.bin", body)
    dest = tmp_path / "g.bin"
    part_path(dest).write_bytes(body[:123_456])
    res = download_file(client, RemoteFile(url, dest), POLICY)
    assert dest.read_bytes() == body
    assert res.resumed_from == 123_456
    assert server.sent["/g.bin"] == len(body) - 123_456


def test_server_ignoring_range_restarts_cleanly(server, client, tmp_path):
    body = payload(400_000, seed=3)
    url = server.add("/h.bin", body, Behaviour(drop_after=100_000, ignore_range=True))
    download_file(client, RemoteFile(url, tmp_path / "h.bin"), POLICY)
    assert (tmp_path / "h.bin").read_bytes() == body


def test_repeated_503_then_success(server, client, tmp_path):
    body = payload(10_000)
    url = server.add("/busy", body, Behaviour(fail_first=3, fail_status=503))
    slept: list[float] = []
    download_file(client, RemoteFile(url, tmp_path / "busy"), POLICY, sleep=slept.append)
    assert (tmp_path / "busy").read_bytes() == body
    assert server.requests["/busy"] == 4
    assert len(slept) == 3 and slept[2] > slept[0]  # exponential backoff


def test_503_forever_gives_a_transient_error(server, client, tmp_path):
    url = server.add("/down", b"abc", Behaviour(fail_first=100, fail_status=503))
    with pytest.raises(TransientError, match="HTTP 503"):
        download_file(client, RemoteFile(url, tmp_path / "down"), POLICY, sleep=lambda s: None)
    assert server.requests["/down"] == POLICY.retries + 1
    assert not (tmp_path / "down").exists()


def test_404_is_a_clear_permanent_failure(server, client, tmp_path):
    url = server.add("/gone", b"", Behaviour(status=404))
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download_file(client, RemoteFile(url, tmp_path / "gone"), POLICY)
    assert not isinstance(info.value, TransientError)
    assert info.value.hint and "ingest" in info.value.hint
    assert server.requests["/gone"] == 1  # no retries on 4xx
    assert not (tmp_path / "gone").exists()


def test_stalled_server_times_out_and_retries(server, tmp_path):
    body = payload(1000)
    url = server.add("/slow", body, Behaviour(stall_first=1))
    policy = Download(retries=2, backoff_seconds=0.01, timeout_seconds=0.3)
    with make_client(policy) as c:
        download_file(c, RemoteFile(url, tmp_path / "slow"), policy)
    assert (tmp_path / "slow").read_bytes() == body
    assert server.requests["/slow"] == 2


def test_size_disagreeing_with_listing_is_rejected(server, client, tmp_path):
    body = payload(5000)
    url = server.add("/short", body)
    with pytest.raises(DownloadError, match="listing says 6000 bytes, the server says 5000"):
        download_file(client, RemoteFile(url, tmp_path / "short", size=6000), POLICY)
    assert not (tmp_path / "short").exists()


def test_server_announcing_more_than_it_has(server, client, tmp_path):
    """Content-Length says 8000, only 5000 bytes exist: resumed, then caught lying."""
    body = payload(5000)
    url = server.add("/liar", body, Behaviour(announce=8000))
    with pytest.raises(DownloadError, match="announced 8000 bytes, then 5000"):
        download_file(client, RemoteFile(url, tmp_path / "liar"), POLICY)
    assert not (tmp_path / "liar").exists()
    assert not part_path(tmp_path / "liar").exists()


def test_checksum_mismatch_refetches_then_fails(server, client, tmp_path):
    body = payload(2000)
    url = server.add("/sum", body)
    good = "md5:" + hashlib.md5(body).hexdigest()
    download_file(client, RemoteFile(url, tmp_path / "ok", checksum=good), POLICY)
    assert (tmp_path / "ok").read_bytes() == body
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_file(client, RemoteFile(url, tmp_path / "bad", checksum="0" * 64), POLICY)
    assert not (tmp_path / "bad").exists()


def test_finished_file_is_not_fetched_again(server, client, tmp_path):
    body = payload(3000)
    url = server.add("/once", body)
    rf = RemoteFile(url, tmp_path / "once", size=len(body))
    download_file(client, rf, POLICY)
    res = download_file(client, rf, POLICY)
    assert res.skipped and server.requests["/once"] == 1


def test_parallel_batch_keeps_going_and_reports_failure(server, client, tmp_path):
    files = [RemoteFile(server.add(f"/p{i}", payload(20_000, i)), tmp_path / f"p{i}")
             for i in range(5)]
    files.append(RemoteFile(server.add("/p404", b"", Behaviour(status=404)), tmp_path / "x"))
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_many(client, files, POLICY)
    for i in range(5):
        assert (tmp_path / f"p{i}").read_bytes() == payload(20_000, i)


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MiB tmpfs (root here) that the test can grow; unmounted afterwards."""
    mnt = tmp_path / "tiny"
    if not _mount_tmpfs(mnt, "1m"):
        pytest.skip("cannot mount tmpfs here; test_disk_full_rlimit covers the behaviour")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_keeps_partial_data_then_resumes(server, client, tiny_fs):
    body = payload(3_000_000, seed=9)
    url = server.add("/big", body)
    dest = tiny_fs / "big.bin"
    with pytest.raises(DownloadError, match="disk full") as info:
        download_file(client, RemoteFile(url, dest, size=len(body)), POLICY)
    assert not isinstance(info.value, TransientError)
    kept = part_path(dest).stat().st_size
    assert 0 < kept < len(body)
    assert body.startswith(part_path(dest).read_bytes())
    # Space is freed: the next attempt resumes from what was kept.
    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_fs)], check=True)
    sent_before = server.sent["/big"]
    res = download_file(client, RemoteFile(url, dest, size=len(body)), POLICY)
    assert dest.read_bytes() == body
    assert res.resumed_from == kept
    assert server.sent["/big"] - sent_before == len(body) - kept


def test_disk_full_rlimit(server, tmp_path):
    """Same failure through RLIMIT_FSIZE in a child process (works without root)."""
    body = payload(2_000_000, seed=10)
    url = server.add("/capped", body)
    dest = tmp_path / "capped.bin"
    code = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, 500_000))
        from sails.config import Download
        from sails.errors import DownloadError
        from sails.transfer import RemoteFile, download_file, make_client
        policy = Download(retries=1, backoff_seconds=0.01)
        try:
            with make_client(policy) as c:
                download_file(c, RemoteFile({url!r}, Path({str(dest)!r})), policy)
        except DownloadError as exc:
            print(exc.one_line())
            sys.exit(7)
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 7, r.stderr
    assert "disk full" in r.stdout
    assert part_path(dest).stat().st_size == 500_000
    with make_client(POLICY) as c:
        download_file(c, RemoteFile(url, dest, size=len(body)), POLICY)
    assert dest.read_bytes() == body


def test_rich_progress_on_a_terminal_and_concurrent_fallback(server, client, tmp_path):
    from rich.console import Console

    from sails.transfer import LogProgress, RichProgress

    out = io.StringIO()
    files = [RemoteFile(server.add(f"/r{i}", payload(50_000, i)), tmp_path / f"r{i}",
                        size=50_000) for i in range(3)]
    with RichProgress(Console(file=out, force_terminal=True, width=120)) as bars:
        assert isinstance(bars, RichProgress)
        with RichProgress(Console(file=io.StringIO())) as second:
            assert isinstance(second, LogProgress)  # one live display per process
        download_many(client, files, POLICY, progress=bars)
    assert "total (3 files)" in out.getvalue()
    assert all((tmp_path / f"r{i}").stat().st_size == 50_000 for i in range(3))


def test_redirects_stay_on_http_and_never_downgrade():
    """Issue #22: redirects were followed anywhere; now only over http(s), never https->http."""
    import httpx

    from sails.errors import DownloadError
    from sails.transfer.fetch import allowed_redirect_origins, check_redirect

    def answer(url: str, location: str) -> httpx.Response:
        # As the hook sees it: httpx sets next_request only after the hooks ran.
        req = httpx.Request("GET", url)
        return httpx.Response(302, headers={"Location": location}, request=req)

    mirrors = allowed_redirect_origins(Download())
    check_redirect(answer("https://almascience.eso.org/x", "https://almascience.nrao.edu/x"),
                   mirrors)
    check_redirect(answer("http://127.0.0.1/x", "/y"))
    for url, loc in (("https://a.org/x", "http://a.org/x"), ("http://a.org/x", "ftp://a.org/x"),
                     ("https://almascience.eso.org/x", "https://evil.example/x")):
        with pytest.raises(DownloadError, match="refusing a redirect"):
            check_redirect(answer(url, loc), mirrors)
