"""The temporary Prefect API of `sails run --prefect` is not open to anyone on loopback.

The server is started the way the embedded mode starts it (settings from
sails.flows.prefect_env.configure, then Prefect's own temporary-server machinery), in a
child process with no PREFECT_* variables of ours: an anonymous request is refused (401),
one with a wrong secret too, and Prefect's client, which has the run's secret, works.
The full `sails run --prefect` over that authenticated server is
test_pipeline.py::test_run_through_prefect_embedded_api.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import base64, json, os, sys
from pathlib import Path
from sails.flows.prefect_env import configure

configure(Path(sys.argv[1]))
import httpx
from prefect.client.orchestration import get_client
from prefect.server.api.server import SubprocessASGIServer

server = SubprocessASGIServer()
server.start(timeout=120)
try:
    url = server.api_url + "/flows/filter"
    def basic(s):
        return {"Authorization": "Basic " + base64.b64encode(s.encode()).decode()}
    out = {
        "anonymous": httpx.post(url, json={}).status_code,
        "wrong": httpx.post(url, json={}, headers=basic("sails:guess")).status_code,
        "health": httpx.get(server.api_url + "/health").status_code,
        "secret_len": len(os.environ["PREFECT_API_AUTH_STRING"]),
        "same": os.environ["PREFECT_API_AUTH_STRING"]
                == os.environ["PREFECT_SERVER_API_AUTH_STRING"],
    }
    with get_client(sync_client=True) as client:  # the run's own client: authenticated
        out["client_flows"] = len(client.read_flows())
        out["client_url"] = str(client.api_url)
    out["server_url"] = server.api_url
finally:
    server.stop()
print("RESULT " + json.dumps(out))
"""


@pytest.mark.timeout(300)
def test_temporary_prefect_api_needs_the_runs_secret(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))
    assert out["anonymous"] == 401 and out["wrong"] == 401, out
    assert out["health"] == 200  # Prefect's own readiness probe stays open
    assert out["same"] and out["secret_len"] >= 30
    assert out["client_flows"] == 0  # an authenticated call that worked
    assert out["client_url"].rstrip("/") == out["server_url"].rstrip("/")


def test_each_run_gets_a_new_secret(tmp_path):
    code = ("import os, sys; from pathlib import Path; "
            "from sails.flows.prefect_env import configure; configure(Path(sys.argv[1])); "
            "print(os.environ['PREFECT_API_AUTH_STRING'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    seen = {subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,  # noqa: S603
                           capture_output=True, text=True, check=True).stdout.strip()
            for _ in range(2)}
    assert len(seen) == 2 and all(len(s) >= 30 for s in seen)
