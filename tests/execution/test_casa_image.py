"""The fake CANFAR's bare CASA image, and the shipped job runtime inside it (#22, defect 7).

A monolithic CASA image has CASA's distributions and nothing of ours: the fake's sessions
run there, and the job runtime sails ships must work there, including the readback of
auto-selfcal's version that failed at the very end of every CANFAR self-cal run.
"""

from __future__ import annotations

import subprocess

from sails.execution.runtime import ensure_runtime
from sails.fakes.casa_image import container_path, ensure_casa_image, image_python
from sails.project import init_project


def _bare(code: str, **env: str) -> subprocess.CompletedProcess:
    image = ensure_casa_image()
    return subprocess.run(  # noqa: S603
        [str(image_python(image)), "-c", code], capture_output=True, text=True, timeout=120,
        env={"PATH": container_path(image), "LANG": "C.UTF-8", "HOME": "/tmp", **env})


def test_image_holds_casa_and_nothing_of_ours():
    image = ensure_casa_image()
    assert ensure_casa_image() == image  # built once, cached
    out = _bare(
        "import importlib.util as u\n"
        "for m in ('casatools', 'casatasks', 'casadata', 'casaplotms', 'numpy', 'scipy',\n"
        "          'matplotlib', 'sails', 'auto_selfcal', 'prefect', 'typer', 'httpx'):\n"
        "    print(m, u.find_spec(m) is not None)\n")
    assert out.returncode == 0, out.stderr
    found = dict(line.split() for line in out.stdout.splitlines())
    assert {m for m, ok in found.items() if ok == "True"} == {
        "casatools", "casatasks", "casadata", "casaplotms", "numpy", "scipy", "matplotlib"}


def test_shipped_runtime_reads_auto_selfcal_version_in_the_bare_image(tmp_path):
    rt = ensure_runtime(init_project(tmp_path / "p").root)
    out = _bare("import importlib.metadata as md\n"
                "import sails.casa.steps.selfcal as s\n"
                "print(md.version('auto-selfcal'), s.auto_selfcal_version())\n"
                "import auto_selfcal, casatasks\n"
                "print(auto_selfcal.__file__)\n",
                PYTHONPATH=str(rt))
    assert out.returncode == 0, out.stderr
    versions, where = out.stdout.splitlines()[:2]
    assert versions == "2.1 2.1"
    assert where.startswith(str(rt))  # the vendored copy, not an installed one
