"""Deployment names must not drift from the code: every prefect.yaml entrypoint is a flow."""

import importlib.util
from pathlib import Path

import yaml
from prefect.flows import Flow

ROOT = Path(__file__).resolve().parents[2]


def test_every_deployment_points_at_an_existing_flow():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = spec["deployments"]
    assert {d["name"] for d in deployments} == {"monitor", "process-mous"}
    for d in deployments:
        path, func = d["entrypoint"].split(":")
        module_spec = importlib.util.spec_from_file_location("entry_" + func, ROOT / path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        flow = getattr(module, func)
        assert isinstance(flow, Flow), d["entrypoint"]
        assert flow.name == d["name"]
        params = set(flow.parameters.properties)
        assert set(d.get("parameters", {})) <= params, (d["name"], params)
