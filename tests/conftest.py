"""Shared fixtures: simulated MOUS built once per test session (real CASA, child processes).

Other areas' tests reuse these:

- ``sim_tiny``: 12 antennas, 1 EB, 2 targets ("HOPS-56" with continuum + C18O line,
  "G34.43+0.24 MM'1" - a legal name with a space, a quote and a plus), no phase errors,
  bright sky. Seconds to build.
- ``sim_tiny_phase``: the same sky and seed with 60 deg rms residual phase errors.
- ``sim_selfcal``: demo-sized MOUS (20 antennas, 2 EBs x 2 targets, 4 science spws,
  60 deg phase errors) on which self-calibration pays off. About 10 s to build.

Each is a :class:`SimMous` (``.path``, ``.truth``, ``.ms``, ``.mous_uid``, ``.mous_fs``).
Treat them as read-only: copy an MS before modifying it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

CHECKS = Path(__file__).with_name("sim_casa_checks.py")


@dataclass(frozen=True)
class SimMous:
    path: Path
    truth: dict[str, Any]

    @property
    def ms(self) -> list[Path]:
        return [self.path / eb["ms"] for eb in self.truth["ebs"]]

    @property
    def mous_uid(self) -> str:
        return self.truth["mous_uid"]

    @property
    def mous_fs(self) -> str:
        return self.truth["mous_fs"]

    def target(self, name: str) -> dict[str, Any]:
        return next(t for t in self.truth["targets"] if t["name"] == name)


def _simulate(root: Path, spec, seed: int) -> SimMous:
    from sails.sim import load_truth, simulate_mous

    path = simulate_mous(root, spec, seed)
    return SimMous(path, load_truth(path))


@pytest.fixture(scope="session")
def sim_tiny(tmp_path_factory) -> SimMous:
    from sails.sim.presets import tiny

    return _simulate(tmp_path_factory.mktemp("sim-tiny"), tiny()[0], seed=1)


@pytest.fixture(scope="session")
def sim_tiny_phase(tmp_path_factory) -> SimMous:
    from sails.sim.presets import tiny

    spec = replace(tiny()[0], phase_rms_deg=60.0)
    return _simulate(tmp_path_factory.mktemp("sim-tiny-phase"), spec, seed=1)


@pytest.fixture(scope="session")
def sim_selfcal(tmp_path_factory) -> SimMous:
    from sails.sim.presets import selfcal_mous

    return _simulate(tmp_path_factory.mktemp("sim-selfcal"), selfcal_mous(), seed=1)


@dataclass(frozen=True)
class SimRaw:
    """A simulated raw delivery (``raw``) and its SRDP twin (``srdp``: the same MOUS and
    calibrated visibilities, delivered as a restore) in separate archive roots."""

    raw: SimMous
    srdp: SimMous


@pytest.fixture(scope="session")
def sim_raw(tmp_path_factory) -> SimRaw:
    """The ``raw`` preset: tiny MOUS as ASDMs + caltables + calapply.txt (about 10 s)."""
    from sails.sim import load_truth
    from sails.sim.presets import raw
    from sails.sim.raw import simulate_raw_mous

    root = tmp_path_factory.mktemp("sim-raw")
    path = simulate_raw_mous(root / "raw", raw()[0], seed=1, srdp_root=root / "srdp")
    twin = root / "srdp" / path.name
    return SimRaw(SimMous(path, load_truth(path)), SimMous(twin, load_truth(twin)))


def run_casa_check(op: str, workdir: Path, timeout: float = 600, **args: Any) -> dict[str, Any]:
    """Run one op of tests/sim_casa_checks.py in a CASA child process; return its JSON."""
    from sails.casaenv import casa_env

    workdir.mkdir(parents=True, exist_ok=True)
    argf, outf = workdir / f"{op}.args.json", workdir / f"{op}.out.json"
    argf.write_text(json.dumps({"op": op, **args}))
    proc = subprocess.run([sys.executable, str(CHECKS), str(argf), str(outf)], cwd=workdir,
                          env=casa_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise AssertionError(f"CASA check {op} failed:\n{proc.stdout[-2000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return json.loads(outf.read_text())


@pytest.fixture(scope="session")
def casa_check():
    """``casa_check(op, workdir, **args)``: see tests/sim_casa_checks.py for the ops."""
    return run_casa_check


def pytest_runtest_setup(item):
    """``slurm``-marked tests need a real cluster: skipped without one, failed if required."""
    if item.get_closest_marker("slurm") is not None:
        from slurm_support import require_slurm

        require_slurm()


# Under pytest-xdist (`make test` runs two workers, ``--dist loadfile``) each test module stays
# on one worker, so a module's expensive fixtures are built once. Heavy modules go first, so
# the last module to start is a short one (no long tail on one worker).
HEAVY_FIRST = ("sources/test_source_image.py", "pipeline/test_sizes.py",
               "imaging/test_chunked_cubes.py", "pipeline/test_pipeline_canfar.py",
               "pipeline/test_faults.py", "pipeline/test_pipeline.py")
# The modules with a ``slurm``-marked test hold a shared lock while they run; a test that
# restarts the controller takes it exclusively (``slurm_lock.exclusive()``), so it never
# restarts the controller under another worker's jobs.
SLURM_LOCK = Path(tempfile.gettempdir()) / "sails-tests-slurm.lock"
SLURM_MODULES = pytest.StashKey[set[str]]()


def _module_key(item) -> str:
    return Path(str(item.fspath)).relative_to(Path(__file__).parent).as_posix()


def pytest_collection_modifyitems(config, items):
    """Heavy modules first (a stable sort: every module's tests stay together, in order);
    which modules use SLURM, from the marks."""
    config.stash[SLURM_MODULES] = {_module_key(i) for i in items
                                   if i.get_closest_marker("slurm")}
    rank = {m: n for n, m in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda i: rank.get(_module_key(i), len(rank)))


class SlurmLock:
    """The shared lock of the SLURM modules, upgradable for one test."""

    def __init__(self, fh) -> None:
        self.fh = fh

    @contextlib.contextmanager
    def exclusive(self):
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fh, fcntl.LOCK_SH)


@pytest.fixture(scope="module", autouse=True)
def slurm_lock(request):
    """Held (shared) through a SLURM module: None elsewhere."""
    if _module_key(request.node) not in request.config.stash.get(SLURM_MODULES, set()):
        yield None
        return
    with open(SLURM_LOCK, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)
        try:
            yield SlurmLock(fh)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
