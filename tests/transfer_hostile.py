"""A deliberately misbehaving HTTP file server on 127.0.0.1 for the transfer tests.

Each path serves a byte string with a :class:`Behaviour`: drop the connection mid-body,
answer 5xx a few times, lie about sizes, ignore ``Range``, serve a truncated body...
Counters (requests, body bytes sent) let the tests prove what was fetched twice.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    status: int | None = None  # always answer this status (e.g. 404)
    fail_first: int = 0  # answer ``fail_status`` to the first N requests
    fail_status: int = 503
    drop_after: int | None = None  # close the connection after sending this many body bytes
    drops: int = 1  # ... on this many requests
    announce: int | None = None  # lie: announce this total size instead of the real one
    ignore_range: bool = False  # always answer 200 with the whole body
    truncated_first: int = 0  # the first N requests get a consistent but shortened body
    truncate_to: int = 0
    stall_first: int = 0  # the first N requests send headers then nothing (read timeout)


class HostileServer:
    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, Behaviour]] = {}
        self.requests: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.ranges: list[str | None] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def add(self, path: str, body: bytes, behaviour: Behaviour | None = None) -> str:
        self.files[path] = (body, behaviour or Behaviour())
        return self.url + path

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                entry = srv.files.get(self.path)
                if entry is None:
                    self.send_error(404)
                    return
                body, b = entry
                with srv._lock:
                    n = srv.requests.get(self.path, 0)
                    srv.requests[self.path] = n + 1
                    srv.ranges.append(self.headers.get("Range"))
                if b.status is not None:
                    self.send_error(b.status)
                    return
                if n < b.fail_first:
                    self.send_error(b.fail_status)
                    return
                if n < b.truncated_first:
                    body = body[: b.truncate_to]
                size = len(body)
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                total = b.announce if b.announce is not None else size
                if m and not b.ignore_range:
                    start = int(m.group(1))
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(total - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if n < b.stall_first:
                    srv._stop.wait(5)
                    self.close_connection = True
                    return
                chunk = body[start:]
                if b.drop_after is not None and n < b.drops:
                    chunk = body[start: start + b.drop_after]
                    self.close_connection = True
                elif b.announce is not None and b.announce != size:
                    self.close_connection = True
                with srv._lock:  # counted first: the client may finish before we return
                    srv.sent[self.path] = srv.sent.get(self.path, 0) + len(chunk)
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except OSError:
                    self.close_connection = True

        return Handler
