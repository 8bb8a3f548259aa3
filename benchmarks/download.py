"""Download throughput against curl, and the cost of an interrupted-then-resumed transfer.

Serves a generated 2 GiB file (sparse, with random blocks; in a temporary folder that is
deleted afterwards) from ``sails.fakes.archive.ArchiveServer`` on 127.0.0.1 (in a child process),
then in one run:

1. throughput: ``curl -o`` vs ``sails.transfer.download_file`` of the same file, alternated,
   ``--rounds`` times each; ratio = our median throughput / curl's (goal >= 0.9), also
   best-of and CPU seconds (the machine may be shared: CPU time is load-independent);
2. crash + resume: a child process downloading the file is SIGKILLed halfway, then the
   transfer is resumed; bytes fetched twice = server bytes sent - file size (goal <= 1%);
3. in-process interruption (an exception mid-transfer, like Ctrl-C) + resume, same measure.

Run: PYTHONPATH=src .venv/bin/python benchmarks/download.py [--size-mb 2048] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

from sails.config import Download
from sails.transfer import Progress, RemoteFile, download_file, make_client, part_path

MOUS = "uid___A001_Xbe_X1"

# The server runs in its own process (as the archive does), so that neither client shares
# a Python interpreter with it; /_stats reports the body bytes it has sent.
SERVER = """
import json, sys
from sails.fakes.archive import ArchiveServer

def stats(handler, params):
    body = json.dumps({"bytes_sent": server.bytes_sent}).encode()
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)

server = ArchiveServer(sys.argv[1], extra_routes={"/_stats": stats}).start()
print(server.url, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
server.stop()
"""


class ServerProcess:
    def __init__(self, root: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError("the archive server did not start")

    @property
    def bytes_sent(self) -> int:
        return httpx.get(self.url + "/_stats").json()["bytes_sent"]

    def srdp_url(self, mous: str) -> str:
        return f"{self.url}/srdp/{mous}/"

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def pick_out_dir(scratch: Path, size: int, wanted: str | None) -> Path:
    """Where downloads land: RAM (/dev/shm) when it has room, so that disk write-back on a
    shared machine does not drown the difference between the two clients."""
    if wanted:
        base = Path(wanted)
    elif Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > 3 * size:
        base = Path("/dev/shm")
    else:
        base = scratch
    return Path(tempfile.mkdtemp(prefix="sails-bench-out-", dir=base))


def make_file(path: Path, size: int) -> None:
    """Sparse file of ``size`` bytes with 1 MiB random blocks every 128 MiB."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        for off in range(0, size, 128 << 20):
            fh.seek(off)
            fh.write(os.urandom(min(1 << 20, size - off)))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def time_curl(url: str, out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``curl -o``."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(["curl", "-s", "-S", "--fail", "-o", str(out), url], check=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def time_ours(url: str, out: Path, size: int, policy: Download) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one download_file (all threads of this process)."""
    with make_client(policy) as client:
        c0 = time.process_time()
        t0 = time.perf_counter()
        download_file(client, RemoteFile(url, out, size=size), policy)
        return time.perf_counter() - t0, time.process_time() - c0


class _Interrupt(Progress):
    """Raises KeyboardInterrupt once ``limit`` bytes have arrived (an in-process stop)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.got = limit, 0

    def advance(self, name: str, nbytes: int) -> None:
        self.got += nbytes
        if self.got >= self.limit:
            raise KeyboardInterrupt


def crash_and_resume(server: ServerProcess, url: str, out: Path, size: int,
                     policy: Download) -> tuple[int, int, float]:
    """SIGKILL a child download at ~50%, resume here. Returns (server bytes, kept, seconds)."""
    code = textwrap.dedent(f"""
        from pathlib import Path
        from sails.config import Download
        from sails.transfer import RemoteFile, download_file, make_client
        policy = Download()
        with make_client(policy) as c:
            download_file(c, RemoteFile({url!r}, Path({str(out)!r}), size={size}), policy)
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    before = server.bytes_sent
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    part = part_path(out)
    while child.poll() is None:
        if part.exists() and part.stat().st_size >= size // 2:
            os.kill(child.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    child.wait()
    kept = part.stat().st_size
    time.sleep(0.2)  # let the server notice the hang-up and settle its count
    with make_client(policy) as client:
        download_file(client, RemoteFile(url, out, size=size), policy)
    return server.bytes_sent - before, kept, time.perf_counter() - t0


def interrupt_and_resume(server: ServerProcess, url: str, out: Path, size: int,
                         policy: Download) -> tuple[int, int]:
    before = server.bytes_sent
    with make_client(policy) as client, contextlib.suppress(KeyboardInterrupt):
        download_file(client, RemoteFile(url, out, size=size), policy,
                      progress=_Interrupt(size // 2))
    kept = part_path(out).stat().st_size
    time.sleep(0.2)
    with make_client(policy) as client:
        download_file(client, RemoteFile(url, out, size=size), policy)
    return server.bytes_sent - before, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a new temp folder)")
    ap.add_argument("--out-dir", default=None,
                    help="where downloads land (default: /dev/shm if it has room)")
    args = ap.parse_args()
    if not shutil.which("curl"):
        sys.exit("curl is needed for the comparison")
    size = args.size_mb << 20
    scratch = Path(tempfile.mkdtemp(prefix="sails-bench-dl-", dir=args.dir))
    policy = Download()
    out_dir = None
    try:
        src_dir = scratch / "archive" / MOUS
        src_dir.mkdir(parents=True)
        src = src_dir / "big.bin"
        make_file(src, size)
        want = sha256(src)
        out_dir = pick_out_dir(scratch, size, args.out_dir)
        out = out_dir / "big.bin"
        with ServerProcess(scratch / "archive") as server:
            url = server.srdp_url(MOUS) + "big.bin"
            curl_s, ours_s, curl_cpu, ours_cpu = [], [], [], []
            for _ in range(args.rounds):  # alternated, so load from elsewhere hits both
                wall, cpu = time_curl(url, out)
                assert out.stat().st_size == size
                out.unlink()
                curl_s.append(wall)
                curl_cpu.append(cpu)
                wall, cpu = time_ours(url, out, size, policy)
                assert out.stat().st_size == size
                out.unlink()
                ours_s.append(wall)
                ours_cpu.append(cpu)
            mb = size / 1e6
            med = statistics.median
            print(f"file: {size} bytes ({args.size_mb} MiB), {args.rounds} rounds each,"
                  f" served by sails.fakes.archive.ArchiveServer (own process) on 127.0.0.1,"
                  f" written to {out_dir.parent}; load average {os.getloadavg()[0]:.1f}"
                  f" on {os.cpu_count()} cores")
            for name, walls, cpus in (("curl -o", curl_s, curl_cpu),
                                      ("sails.transfer", ours_s, ours_cpu)):
                print(f"{name:<17}: median {med(walls):6.2f} s = {mb / med(walls):5.0f} MB/s,"
                      f" best {min(walls):5.2f} s = {mb / min(walls):5.0f} MB/s,"
                      f" CPU {med(cpus):5.2f} s  (runs: {', '.join(f'{t:.2f}' for t in walls)})")
            paired = med([c / o for c, o in zip(curl_s, ours_s, strict=True)])
            print(f"throughput ratio : median {med(curl_s) / med(ours_s):.3f},"
                  f" best-of {min(curl_s) / min(ours_s):.3f}, median of back-to-back pairs"
                  f" {paired:.3f}  (ours / curl; goal >= 0.9);"
                  f" CPU ours / curl {med(ours_cpu) / med(curl_cpu):.2f}")

            sent, kept, secs = crash_and_resume(server, url, out, size, policy)
            ok = sha256(out) == want
            twice = sent - size
            print(f"crash + resume   : child SIGKILLed with {kept} bytes on disk; server sent "
                  f"{sent} bytes in total ({secs:.1f} s); fetched twice {twice} bytes = "
                  f"{100 * twice / size:.3f}% of the file (goal <= 1%); bytes identical: {ok}")
            out.unlink()

            sent, kept = interrupt_and_resume(server, url, out, size, policy)
            ok = sha256(out) == want
            twice = sent - size
            print(f"interrupt+resume : stopped in-process at {kept} bytes; fetched twice "
                  f"{twice} bytes = {100 * twice / size:.3f}% (goal <= 1%); "
                  f"bytes identical: {ok}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
