"""The stage table: every stage of the pipeline, declared once.

Each row says what the stage is called, at which scope it runs (one row per MOUS, per
target inside a MOUS, or per source: the targets of several MOUS observing the same sky,
:mod:`sails.sources`), which stages must be finished (done or skipped) before it may
start (for a source stage: by every member), whether it runs CASA jobs through a backend
or runs in the orchestrator itself, its default job resources, the module that implements
it and the CLI command that runs it. Source-scope rows live in the catalog's
``source_stages`` (reset when the membership changes) and the engine dispatches them like
the others. A MOUS stage may wait on a source stage: it then waits for that row of every
source its targets belong to (``cleanup`` keeps the members' data until their sources are
combined); a target stage may not.

The catalog builds its runnable query and its stage rows from this table; the config
(resources, per-stage backends), the engine (``--until``), the CLI (stage commands, help),
the report and ``sails status`` read it. Adding a stage is one row here plus one module
exposing ``run(ctx) -> Outcome``.

Nothing here imports the rest of the package: it is pure data, safe to import anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    MOUS = "mous"  # one row per MOUS (target '')
    TARGET = "target"  # one row per source name inside a MOUS
    SOURCE = "source"  # one row per source of several members (sails.catalog.sources)


class Pool(StrEnum):
    """Which concurrency a stage's rows draw from when ``execution.separate_pools`` is on:
    downloads wait on the network, so they must never hold a CASA slot while the CPU idles."""
    CPU = "cpu"  # execution.casa_slots
    NETWORK = "network"  # download.parallel_mous


class Runs(StrEnum):
    JOB = "job"  # builds CASA jobs, run by the configured backend (local, canfar)
    ORCHESTRATOR = "orchestrator"  # runs in the orchestrator process (HTTP, manifests)


@dataclass(frozen=True)
class Stage:
    name: str
    scope: Scope
    after: tuple[str, ...]  # prerequisites: each must be done or skipped
    runs: Runs
    module: str  # exposes run(ctx: StageContext) -> Outcome
    help: str
    cores: int = 1  # default job resources ([resources.<name>] overrides)
    ram_gb: int = 4
    command: str | None = None  # CLI command that runs it; None: the stage's name
    config_aliases: tuple[str, ...] = ()  # older config keys that meant this stage
    pool: Pool = Pool.CPU  # the slots its rows take (see Pool)

    @property
    def cli_command(self) -> str:
        return self.command or self.name


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class StageTable:
    """The ordered stages, with the lookups everything else needs."""

    def __init__(self, stages: tuple[Stage, ...]) -> None:
        self.stages = stages
        self._check()

    def _check(self) -> None:
        seen: dict[str, Stage] = {}
        for st in self.stages:
            if not _NAME.match(st.name):
                raise ValueError(f"stage name {st.name!r} must match {_NAME.pattern}")
            if st.name in seen:
                raise ValueError(f"stage {st.name!r} declared twice")
            for pre in st.after:
                if pre not in seen:
                    raise ValueError(f"stage {st.name!r}: prerequisite {pre!r} must come "
                                     "earlier in the table")
            for pre in st.after:
                if st.scope == Scope.TARGET and seen[pre].scope == Scope.SOURCE:
                    raise ValueError(f"stage {st.name!r}: a {st.scope} stage cannot wait on "
                                     f"the source stage {pre!r}")
            seen[st.name] = st

    # ---------------------------------------------------------------- lookups
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def __iter__(self):
        return iter(self.stages)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def get(self, name: str) -> Stage:
        for st in self.stages:
            if st.name == name:
                return st
        raise KeyError(name)

    def at_scope(self, scope: Scope) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if s.scope == scope)

    def until(self, name: str) -> tuple[str, ...]:
        """Stage names up to and including ``name``, in table order."""
        return self.names[: self.names.index(name) + 1]

    def downstream(self, name: str) -> tuple[str, ...]:
        """``name`` and every stage that depends on it, directly or not (table order)."""
        out = [name]
        for st in self.stages:
            if st.name not in out and any(p in out for p in st.after):
                out.append(st.name)
        return tuple(s for s in self.names if s in out)

    def in_pool(self, pool: Pool, names: tuple[str, ...] | list[str] | None = None
                ) -> list[str]:
        """The stage names (of ``names``, default all) whose rows take ``pool``'s slots."""
        return [s.name for s in self.stages if s.pool == pool and (names is None
                                                                  or s.name in names)]

    def commands(self) -> dict[str, tuple[Stage, ...]]:
        """CLI command -> the stages it runs, in table order."""
        out: dict[str, list[Stage]] = {}
        for st in self.stages:
            out.setdefault(st.cli_command, []).append(st)
        return {k: tuple(v) for k, v in out.items()}

    def config_key(self, key: str) -> str:
        """The stage a config key (``[resources.X]``, ``stage_backends``) names."""
        for st in self.stages:
            if key == st.name or key in st.config_aliases:
                return st.name
        raise KeyError(key)

    def fingerprint(self) -> str:
        """Changes when a stage is added or its scope changes (the catalog then adds rows)."""
        return ";".join(f"{s.name}:{s.scope}" for s in self.stages)


PIPELINE = StageTable((
    Stage("download", Scope.MOUS, (), Runs.ORCHESTRATOR, "sails.stages.download",
          "Fetch the MOUS's data (SRDP restore or archive delivery), verified and resumable.",
          cores=1, ram_gb=2, pool=Pool.NETWORK),
    Stage("restore", Scope.MOUS, ("download",), Runs.JOB, "sails.stages.restore",
          "Restore the calibration of a raw delivery (CASA wheels applycal, or the delivery's"
          " scriptForPI on a pinned CASA); skipped when an SRDP restore was downloaded.",
          cores=1, ram_gb=8),
    Stage("verify", Scope.MOUS, ("restore",), Runs.JOB, "sails.stages.verify",
          "Describe each measurement set and check it against the catalog.",
          cores=1, ram_gb=4),
    Stage("split", Scope.MOUS, ("verify",), Runs.JOB, "sails.stages.split",
          "Split each EB's science targets and spws into datasets/<mous>/splits/.",
          cores=1, ram_gb=8),
    Stage("findcont", Scope.MOUS, ("split",), Runs.JOB, "sails.stages.findcont",
          "Find every target's line-free ranges from the data (cont.dat, like hif_findcont).",
          cores=1, ram_gb=4),
    Stage("auto_selfcal", Scope.MOUS, ("findcont",), Runs.JOB, "sails.stages.auto_selfcal",
          "Run auto-selfcal once on all of the MOUS's split data.",
          cores=4, ram_gb=16, command="selfcal", config_aliases=("selfcal",)),
    Stage("selfcal", Scope.TARGET, ("auto_selfcal",), Runs.ORCHESTRATOR,
          "sails.stages.selfcal",
          "Record each target's self-calibration result from the auto-selfcal run.",
          cores=1, ram_gb=1),
    Stage("image", Scope.TARGET, ("selfcal",), Runs.JOB, "sails.stages.image",
          "Image every target: continuum, cubes, moments, FITS.",
          cores=4, ram_gb=16),
    Stage("source_image", Scope.SOURCE, ("image",), Runs.JOB, "sails.stages.source_image",
          "Image each source of several MOUS jointly (12-m + 7-m, per line and the"
          " continuum, at their common spectral set-up) and feather its TP cube.",
          cores=4, ram_gb=16, command="source-image"),
    Stage("cleanup", Scope.MOUS, ("image", "source_image"), Runs.ORCHESTRATOR,
          "sails.stages.cleanup",
          "Remove intermediates (splits, self-cal working copies, CASA images; the storage"
          " section of sails.toml says which) once every target's products are recorded"
          " and the MOUS's sources are combined.",
          cores=1, ram_gb=1),
))


def stage(name: str) -> Stage:
    """The row of ``name`` (KeyError for an unknown one; see catalog.check_stage)."""
    return PIPELINE.get(name)


def markdown_table(table: StageTable = PIPELINE) -> str:
    """The stage table as docs/pipeline.md shows it (a test keeps the two equal)."""
    lines = ["| stage | scope | after | runs | pool | cores | RAM GB | command | module |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for st in table:
        lines.append(f"| `{st.name}` | {st.scope} | {', '.join(st.after) or '-'} | {st.runs} "
                     f"| {st.pool} "
                     f"| {st.cores} | {st.ram_gb} | `sails {st.cli_command}` | "
                     f"`{st.module}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
