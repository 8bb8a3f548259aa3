"""The request handler base of every fake service: HTTP/1.1 keep-alive as the real ones
speak it, with TCP_NODELAY as real web servers set it (nginx ``tcp_nodelay``): without it
each response waits out the client's 40 ms delayed ACK between its headers and body."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


class Http11Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
