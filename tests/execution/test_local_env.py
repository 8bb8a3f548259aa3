"""Local CASA children get an allow-listed environment: no orchestrator secrets in job logs."""

from __future__ import annotations

import json
import sys

from sails.execution.base import JobSpec
from sails.execution.local import LocalBackend
from sails.project import init_project

PRINT_ENV = "import json, os; print('ENV=' + json.dumps(dict(os.environ)))"


def test_child_sees_no_orchestrator_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("CANFAR_TOKEN", "secret-canfar-token")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:secret")
    monkeypatch.setenv("SAILS_EXECUTION__CASA_SLOTS", "1")  # an orchestrator setting
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    project = init_project(tmp_path / "p")
    out = tmp_path / "out"
    job = JobSpec(job_id="envjob", mous_id="uid://A001/X1/X1", stage="verify", target="",
                  payload={}, output_dir=out, log_dir=tmp_path / "logs", env={"MINE": "1"},
                  argv=[sys.executable, "-c", PRINT_ENV])
    LocalBackend(project).run(job)
    log = (tmp_path / "logs" / "envjob.stdout.log").read_text()
    assert "secret" not in log
    env = json.loads(log.split("ENV=", 1)[1].splitlines()[0])
    assert not {"CANFAR_TOKEN", "PREFECT_API_AUTH_STRING",
                 "SAILS_EXECUTION__CASA_SLOTS"} & set(env)
    assert env["MINE"] == "1" and env["LC_ALL"] == "C.UTF-8" and "PATH" in env
    assert env["CASASITECONFIG"].endswith("casasiteconfig.py")
