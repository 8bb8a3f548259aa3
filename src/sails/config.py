"""Project configuration: one ``sails.toml`` at the project-space root, ``SAILS_*`` overrides.

Environment overrides use ``__`` between section and key, e.g.
``SAILS_EXECUTION__CASA_SLOTS=4`` or ``SAILS_IMAGING__ROBUST=0.5``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from sails.errors import ConfigError
from sails.execution.names import BACKEND_NAMES
from sails.pipeline import PIPELINE, Runs
from sails.qa.settings import QaSettings
from sails.sources import DEFAULT_TOLERANCE_ARCSEC, MATCH_NAMES, WITHIN, Rules

CONFIG_NAME = "sails.toml"
BackendName = Literal[BACKEND_NAMES]  # type: ignore[valid-type]  # one list: execution.names


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Layout(_Section):
    """Folder names inside the project space (relative) or absolute paths."""

    datasets: str = "datasets"
    datasets_raw: str = "datasets_raw"
    srdp_weblogs: str = "SRDP_weblogs"
    db: str = "db"
    schemas: str = "schemas"
    reports: str = "reports"
    logs: str = "logs"
    work: str = "work"
    catalog_name: str = "sails.sqlite"


class Resources(_Section):
    cores: int = Field(2, ge=1)
    ram_gb: int = Field(8, ge=1)
    time_minutes: int | None = Field(
        None, ge=1, description="batch time limit (slurm); unset: the stage's own time limit, "
        "else [slurm] time_minutes")


def _default_resources() -> dict[str, Resources]:
    """Each stage's job resources as the stage table declares them."""
    return {st.name: Resources(cores=st.cores, ram_gb=st.ram_gb) for st in PIPELINE}


def _by_stage(value: dict[str, Any], what: str) -> dict[str, Any]:
    """Keys named by stage (older names accepted, e.g. selfcal for auto_selfcal's job)."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        try:
            name = PIPELINE.config_key(key)
        except KeyError:
            raise ValueError(f"unknown stage {key!r} in {what}; known: "
                             f"{list(PIPELINE.names)}") from None
        if name != key and name in value:
            continue  # the stage's own key wins over an older alias
        out[name] = item
    return out


class Execution(_Section):
    backend: BackendName = "local"
    stage_backends: dict[str, BackendName] = Field(default_factory=dict)
    casa_slots: int = Field(0, ge=0, le=1024,
                            description="parallel CASA jobs; 0 = number of cores")
    lease_seconds: float = Field(3600.0, gt=0)
    catalog_busy_seconds: float = Field(
        60.0, gt=0, le=3600, description="how long a catalog write waits for another "
        "process's; a run outlasts longer locks (it waits, then carries on)")
    max_attempts: int = Field(3, ge=1)
    retry_backoff_seconds: float = Field(
        60.0, ge=0, description="first wait before retrying a transient stage failure; "
        "doubles with each attempt")
    retry_backoff_max_seconds: float = Field(3600.0, ge=0, description="longest such wait")
    separate_pools: bool = Field(
        True, description="downloads take download.parallel_mous slots, never a CASA slot "
        "(false: one pool of casa_slots for every stage)")
    warm_casa: bool = Field(
        True, description="local backend: fork each CASA job from a launcher that has "
        "CASA's libraries loaded (saves their 2-4 s import per job; each job keeps its own "
        "process, log and result.json); false: a fresh `python -m sails.casa` per job")
    use_prefect: bool = Field(False, description="`sails run` runs through Prefect flows "
                              "(embedded API) unless --no-prefect")

    @field_validator("stage_backends", mode="after")
    @classmethod
    def _known_job_stages(cls, value: dict[str, str]) -> dict[str, str]:
        value = _by_stage(value, "execution.stage_backends")
        local_only = [k for k in value if PIPELINE.get(k).runs == Runs.ORCHESTRATOR]
        if local_only:
            raise ValueError(f"{local_only} run(s) in the orchestrator, not as jobs: "
                             "no backend to choose")
        return value

    def effective_slots(self) -> int:
        return self.casa_slots or (os.cpu_count() or 1)


# registry-host[:port]/path[:tag][@sha256:digest], as skaha takes an image.
_IMAGE_REF = re.compile(r"[a-z0-9][a-z0-9.-]*(:[0-9]+)?(/[A-Za-z0-9._-]+)+"
                        r"(:[A-Za-z0-9._-]{1,128})?(@sha256:[0-9a-f]{64})?")


def check_image_ref(value: str, what: str) -> str:
    """An image reference a platform can pull; refused here, not when a job is submitted."""
    if not _IMAGE_REF.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not an image reference "
                         f"(registry/path[:tag], e.g. images.canfar.net/casa-6/casa:6.6.4-34)")
    return value


class Images(_Section):
    """Container images per stage kind (CANFAR backend)."""

    casa: str = "images.canfar.net/casa-6/casa:6.6.4-34"
    pipeline: str = "images.canfar.net/casa-6/casa-pipeline:6.5.4-9"
    python: str = "images.canfar.net/skaha/astroml:latest"

    @field_validator("casa", "pipeline", "python", mode="after")
    @classmethod
    def _image_refs(cls, value: str, info: Any) -> str:
        return check_image_ref(value, f"[images] {info.field_name}")


class Platform(_Section):
    """Path mapping between this machine's mount and the platform's view of the project.

    Checked when the configuration is read (a mapping that cannot work must not wait for
    the first job submitted hours into a run): both prefixes or neither, each an absolute,
    normalised path other than ``/``.
    """

    vm_prefix: str = ""
    platform_prefix: str = ""

    @model_validator(mode="after")
    def _prefixes(self) -> Platform:
        vm, plat = self.vm_prefix, self.platform_prefix
        if bool(vm) != bool(plat):
            raise ValueError("[platform] needs both vm_prefix and platform_prefix, or neither "
                             "(e.g. /mnt/arc/projects/x and /arc/projects/x)")
        for key, value in (("vm_prefix", vm), ("platform_prefix", plat)):
            if not value:
                continue
            if not value.isprintable():
                raise ValueError(f"[platform] {key} holds a control character")
            path = PurePosixPath(value)
            if not path.is_absolute():
                raise ValueError(f"[platform] {key} must be an absolute path (got {value!r})")
            if path == PurePosixPath("/"):
                raise ValueError(f"[platform] {key} cannot be / (it would map every path)")
            if ".." in path.parts or str(path) != value.rstrip("/"):
                raise ValueError(f"[platform] {key} must be a normalised path "
                                 f"(no '.', '..' or '//'; got {value!r})")
        return self


class Canfar(_Section):
    """CANFAR headless sessions (the ``canfar`` backend). Credentials never live here."""

    url: str = Field("", description="skaha API URL incl. version; empty: CANFAR_URL, else "
                     "the canfar client's active server (`canfar login`)")
    token_file: str = Field("", description="file holding a bearer token (else CANFAR_TOKEN "
                            "or the canfar client's saved login)")
    python: str = Field("python3", description="the CASA Python inside the image")
    stage_images: dict[str, str] = Field(
        default_factory=dict,
        description="stage -> [images] key (casa/pipeline/python) or a full image ref; "
        "default casa")

    @field_validator("stage_images", mode="after")
    @classmethod
    def _known_stages(cls, value: dict[str, str]) -> dict[str, str]:
        out = _by_stage(value, "canfar.stage_images")
        for stage, image in out.items():
            if image not in Images.model_fields:  # else a full reference
                check_image_ref(image, f"canfar.stage_images.{stage} (an [images] key: "
                                f"{', '.join(Images.model_fields)}; or a full image)")
        return out

    poll_initial_seconds: float = Field(5.0, gt=0)
    poll_max_seconds: float = Field(60.0, gt=0)
    pending_deadline_seconds: float = Field(3600.0, gt=0)
    max_resubmits: int = Field(2, ge=0)
    request_retries: int = Field(5, ge=0, description="retries of a busy/unreachable service")
    request_backoff_seconds: float = Field(2.0, ge=0)
    http_timeout_seconds: int = Field(30, ge=1, le=300)
    manifest_grace_seconds: float = Field(
        60.0, ge=0, description="wait this long for result.json to appear on the mount")
    env: dict[str, str] = Field(default_factory=dict, description="extra job environment")


class Slurm(_Section):
    """SLURM batch jobs (the ``slurm`` backend): sbatch, squeue/scontrol (sacct if present)."""

    partition: str = Field("", description="empty: the cluster's default partition")
    account: str = ""
    qos: str = ""
    sbatch_options: list[str] = Field(
        default_factory=list, description="extra sbatch options, one per item, e.g. "
        "[\"--constraint=skylake\"]")
    python: list[str] = Field(
        default_factory=list, description="the CASA Python as an argument list, e.g. "
        "[\"apptainer\", \"exec\", \"casa.sif\", \"python3\"]; empty: the Python running sails")
    time_minutes: int = Field(1440, ge=1, description="time limit of a job whose stage and "
                              "resources set none")
    poll_initial_seconds: float = Field(2.0, gt=0)
    poll_max_seconds: float = Field(30.0, gt=0)
    controller_timeout_seconds: float = Field(
        900.0, gt=0, description="the controller unreachable this long: give up the wait "
        "(the job keeps running; the next run reattaches)")
    command_timeout_seconds: float = Field(60.0, gt=0, description="one sbatch/squeue call")
    manifest_grace_seconds: float = Field(
        30.0, ge=0, description="wait this long for result.json on a shared file system")
    env: dict[str, str] = Field(default_factory=dict, description="extra job environment")


class Archive(_Section):
    tap_url: str = "https://almascience.eso.org/tap"
    datalink_url: str = "https://almascience.eso.org/datalink/sync"
    timeout_seconds: float = Field(60.0, gt=0)
    max_rows: int = Field(200_000, ge=1, description="TAP MAXREC; a longer result is an error")
    datalink_workers: int = Field(4, ge=1, description="MOUS resolved in parallel")
    expand_product_listings: bool = Field(
        True, description="list the files inside the product tarball instead of the tarball")


# The ALMA archive's mirrors (the hosts DataLink hands out download URLs on).
ALMA_ARCHIVE_HOSTS = ("almascience.eso.org", "almascience.nrao.edu", "almascience.nao.ac.jp",
                      "almascience.org")
_HOST_ENTRY = re.compile(r"([a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")


class Download(_Section):
    parallel_files: int = Field(4, ge=1)
    parallel_mous: int = Field(2, ge=1, le=64, description="MOUS downloading at once (their "
                               "own pool, beside execution.casa_slots)")
    retries: int = Field(5, ge=0)
    timeout_seconds: float = Field(60.0, gt=0)
    backoff_seconds: float = Field(1.0, ge=0)
    chunk_bytes: int = Field(1 << 20, ge=1024)
    redirect_hosts: list[str] = Field(
        default_factory=lambda: list(ALMA_ARCHIVE_HOSTS),
        description="hosts (host, or host:port for a non-default port) a download may be "
        "redirected to, besides its own host and the [archive] URLs' hosts")

    @field_validator("redirect_hosts", mode="after")
    @classmethod
    def _host_entries(cls, value: list[str]) -> list[str]:
        out = [v.strip().lower() for v in value]
        bad = [v for v in out if not _HOST_ENTRY.fullmatch(v)]
        if bad:
            raise ValueError(f"redirect_hosts entries must be host or host:port, no scheme "
                             f"or path (got {bad[0]!r})")
        return out


_SELFCAL_STAGE_ONLY = ("use_xvfb", "export_fits", "keep_input_copies", "timeout_hours", "extra",
                       "apply_full_res")


class Selfcal(_Section):
    """auto-selfcal options (names as auto_selfcal's own keywords) and how the stage runs it.

    ``None`` means "auto-selfcal's own default". ``extra`` passes any other auto_selfcal
    keyword (checked against its signature in the job: an unknown name is an error).
    """

    do_amp_selfcal: bool = True
    apply_to_target_ms: bool = False
    uvcontsub_target_ms: bool = False
    spectral_average: bool = True
    inf_EB_gaincal_combine: str = "scan"
    gaincal_minsnr: float = 2.0
    minsnr_to_proceed: float = 2.95
    delta_beam_thresh: float = 0.05
    gaincal_unflag_minsnr: float | None = None
    optimize_spw_combine: bool | None = None
    spectral_solution_fraction: float | None = None
    apply_cal_mode_default: str | None = None
    allow_cocal: bool | None = None
    scale_fov: float | None = None
    weblog: bool = True
    # How the stage runs it
    use_xvfb: bool = False  # plotms under Xvfb crashed here and hung auto-selfcal; opt in
    export_fits: bool = True
    keep_input_copies: bool = False
    # The final solutions applied (sails' applycal) to full-resolution copies of the split
    # data, from which the line cubes are made (auto-selfcal's .selfcal.ms is averaged).
    apply_full_res: bool = True
    timeout_hours: float = Field(48.0, gt=0)
    extra: dict[str, Any] = Field(default_factory=dict)

    def auto_selfcal_options(self) -> dict[str, Any]:
        """Keyword arguments for ``auto_selfcal(...)`` (unset ones left to its defaults)."""
        opts = {k: v for k, v in self.model_dump().items()
                if k not in _SELFCAL_STAGE_ONLY and v is not None}
        opts.update(self.extra)
        return opts


class ExtraLine(_Section):
    name: str
    species: str
    transition: str
    rest_ghz: float = Field(gt=0)


class Imaging(_Section):
    """Continuum and cube imaging (the ``image`` stage)."""

    weighting: Literal["briggs", "natural", "uniform"] = "briggs"
    robust: float = Field(0.5, ge=-2, le=2)
    pixels_per_beam: float = Field(5.0, gt=1)
    pb_factor: float = Field(1.5, gt=0, description="image width in units of the PB FWHM")
    pblimit: float = Field(0.2, gt=0, lt=1)
    nterms2_fractional_bw: float = Field(0.1, gt=0)
    systemic_velocity_kms: float | None = Field(
        None, description="LSRK radio; None: from the data, else the spw set-up, else 0")
    target_velocities_kms: dict[str, float] = Field(
        default_factory=dict, description="per-target systemic velocity (by source name)")
    findcont: bool = Field(True, description="find line-free ranges from the data (cont.dat)")
    cont_ranges_ghz: dict[str, dict[str, list[tuple[float, float]]]] = Field(
        default_factory=dict, description="per-target line-free LSRK GHz ranges by archive "
        "spw id, e.g. {\"HOPS-56\" = {\"25\" = [[216.0, 216.4]]}}; replaces found ranges")
    velocity_window_kms: float = Field(20.0, gt=0)
    channel_width_kms: float | None = Field(None, gt=0)
    interpolation: Literal["linear", "nearest", "cubic"] = "linear"
    line_free_margin_kms: float = Field(10.0, ge=0)
    min_linefree_fraction: float = Field(0.1, ge=0, lt=1)
    uvcontsub_fitorder: int = Field(1, ge=0, le=2)
    edge_fit_fraction: float = Field(0.1, gt=0, lt=0.5, description="a line window with no "
                                     "catalogue line-free channel: continuum fitted (order 0) "
                                     "to this fraction of its channels at each edge")
    edge_clip_sigma: float = Field(5.0, gt=0, description="dirty-cube edge-emission check")
    multiscale_threshold_sigma: float = Field(4.0, gt=0)
    singlescale_threshold_sigma: float = Field(2.0, gt=0)
    cont_threshold_sigma: float = Field(2.5, gt=0)
    cont_max_rounds: int = Field(3, ge=1, description="re-clean while the noise estimate drops")
    moment_mask_hi_sigma: float = Field(4.0, gt=0)
    moment_mask_lo_sigma: float = Field(2.0, gt=0)
    niter: int = Field(100000, ge=0)
    chunk_min_channels: int = Field(
        0, ge=0, description="cubes with at least this many channels are imaged as channel "
        "chunks, each its own job (0: never)")
    chunks: int = Field(0, ge=0, le=256, description="chunks per such cube; 0: twice "
                        "execution.casa_slots (they pack around the continuum job)")
    gain: float = Field(0.1, gt=0)
    cyclefactor: float = Field(1.0, gt=0)
    scales: list[int] = Field(default_factory=lambda: [0, 5, 15])
    # auto-multithresh, ALMA 12-m pipeline values
    sidelobethreshold: float = 2.0
    noisethreshold: float = 4.25
    lownoisethreshold: float = 1.5
    minbeamfrac: float = 0.3
    negativethreshold: float = 0.0
    cube_negativethreshold: float = 15.0
    growiterations: int = Field(75, ge=0)
    lines: list[ExtraLine] = Field(default_factory=list)
    make_cubes: bool = True
    selfcal_line_peaks: bool = Field(True, description="with self-calibrated cubes, also a "
                                     "dirty cube of the line's channels of the data before "
                                     "self-cal for the before/after line peak")
    all_spw_cubes: bool = Field(False, description="also a native-resolution cube of every "
                                "science spw (as the ALMA pipeline makes), kind spw_cube")
    keep_contsub: bool = False
    previews: bool = True
    timeout_minutes: float | None = Field(None, gt=0)


class Storage(_Section):
    """Disk: a budget the engine admits stages against, limits that cut imaging plans down
    (like the ALMA pipeline's hif_checkproductsize), and what cleanup removes."""

    budget_gb: float | None = Field(None, gt=0, description="most the project space may "
                                    "hold; a stage whose predicted peak would exceed it waits")
    free_floor_gb: float = Field(0.5, ge=0, description="free space always left on the disk")
    max_cube_gb: float | None = Field(None, gt=0, description="largest cube (CASA + FITS)")
    max_products_gb: float | None = Field(None, gt=0, description="largest product set of "
                                          "one target")
    pb_level_factor: float = Field(1.0, gt=0, description="mitigation: image width down to "
                                   "this x the PB FWHM")
    max_binning: int = Field(4, ge=1, description="mitigation: most cube channels binned")
    cleanup: bool = Field(True, description="the cleanup stage removes intermediates (else "
                          "it is skipped)")
    remove_splits: bool = True
    remove_selfcal_work: bool = True  # working copies, iteration images, *.selfcal.ms
    keep_selfcal_ms: bool = False
    remove_casa_images: bool = True  # once the FITS are written
    remove_download_work: bool = True  # tarballs / .part files after verified extraction
    remove_raw_delivery: bool = True  # datasets_raw/<mous> once restored into verified MS


class Casa(_Section):
    """Monolithic CASA installations for the restore stage's pinned-CASA path."""

    installs: dict[str, list[str]] = Field(
        default_factory=dict, description="CASA version -> the command that starts it, as an "
        "argument list (e.g. \"6.5.4\" = [\"apptainer\", \"exec\", \"casa-6.5.4.sif\", \"casa\"])")
    allow_delivery_scripts: bool = Field(
        False, description="restore raw deliveries by running their scriptForPI with the "
        "matching install (code from outside: off by default; otherwise the CASA-wheels "
        "restore applies calapply.txt's applycal calls and runs nothing from the delivery)")
    script_timeout_minutes: float = Field(720.0, gt=0)

    @field_validator("installs", mode="after")
    @classmethod
    def _argument_lists(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for version, argv in value.items():
            if not argv or not all(isinstance(a, str) and a for a in argv):
                raise ValueError(f"[casa] installs.{version!r} must be a non-empty list of "
                                 "arguments")
        return value


class Sources(_Section):
    """How targets of different MOUS are grouped into sources (:mod:`sails.sources`);
    ``sails sources --dry-run`` shows the rules and what they would change."""

    tolerance_arcsec: float = Field(DEFAULT_TOLERANCE_ARCSEC, gt=0, description="most "
                                    "distance of two members joined by name or position")
    within: Literal[WITHIN] = Field("name", description="group: only same group OUS and "  # type: ignore[valid-type]
                                    "name; name: also the same name within the tolerance;"
                                    " position: also any names within it")
    match_names: Literal[MATCH_NAMES] = "normalised"  # type: ignore[valid-type]
    aliases: dict[str, str] = Field(default_factory=dict, description="target name -> "
                                    "source name (names the metadata spells differently)")
    exclude: list[str] = Field(default_factory=list, description="members that stand "
                               "alone: a MOUS uid, 'uid://..:NAME', or a target name")

    # The source_image stage (joint 12-m + 7-m imaging, TP feather).
    weighting: Literal["briggs", "natural", "uniform"] = Field(
        "briggs", description="joint images' weighting (with robust)")
    robust: float = Field(0.5, ge=-2, le=2)
    pblimit: float = Field(0.1, gt=0, lt=1, description="joint mosaics' PB limit: lower than "
                           "[imaging]'s, as a 7-m-only edge has a low joint PB response")
    pb_factor: float = Field(2.0, gt=0, description="image width in 7-m PB FWHM")
    scales: list[int] = Field(default_factory=lambda: [0, 5, 15, 45], description=
                              "multiscale scales (pixels; 5 pixels a 12-m beam): up to the "
                              "7-m beam's scales, which the joint image must clean")
    joint_cyclefactor: float = Field(
        2.0, gt=0, description="cyclefactor of a continuum of more than one array: its PSF "
        "is the 12-m's where the 12-m mosaic sees the sky and the 7-m's beyond, so minor "
        "cycles stop sooner (at 1.0 group-tiny's joint continuum diverged twice)")
    statwt: Literal["auto", "always", "never"] = Field(
        "auto", description="statwt on copies of the members' data: auto = when the "
        "arrays' weights are off the radiometer ratio by more than weight_tolerance")
    weight_tolerance: float = Field(2.0, gt=1)
    sdfactor: float = Field(1.0, gt=0, description="feather's scale factor of the TP cube")

    def rules(self) -> Rules:
        return Rules(tolerance_arcsec=self.tolerance_arcsec, within=self.within,
                     match_names=self.match_names, aliases=dict(self.aliases),
                     exclude=tuple(self.exclude))


class Settings(BaseSettings):
    """The effective configuration: defaults < sails.toml < SAILS_* environment."""

    model_config = SettingsConfigDict(
        env_prefix="SAILS_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    project_name: str = "sails-project"
    layout: Layout = Field(default_factory=Layout)
    execution: Execution = Field(default_factory=Execution)
    resources: dict[str, Resources] = Field(default_factory=_default_resources)
    images: Images = Field(default_factory=Images)
    platform: Platform = Field(default_factory=Platform)
    canfar: Canfar = Field(default_factory=Canfar)
    slurm: Slurm = Field(default_factory=Slurm)
    archive: Archive = Field(default_factory=Archive)
    download: Download = Field(default_factory=Download)
    selfcal: Selfcal = Field(default_factory=Selfcal)
    imaging: Imaging = Field(default_factory=Imaging)
    qa: QaSettings = Field(default_factory=QaSettings)
    storage: Storage = Field(default_factory=Storage)
    sources: Sources = Field(default_factory=Sources)
    casa: Casa = Field(default_factory=Casa)

    @field_validator("resources", mode="after")
    @classmethod
    def _complete_resources(cls, value: dict[str, Resources]) -> dict[str, Resources]:
        """A file naming some stages keeps the defaults for the others."""
        return {**_default_resources(), **_by_stage(value, "resources")}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # env beats the file (passed as init kwargs); no .env or secrets dir lookups.
        return (env_settings, init_settings)

    def resources_for(self, stage: str) -> Resources:
        return self.resources.get(stage) or _default_resources().get(stage, Resources())

    def backend_for(self, stage: str) -> str:
        return self.execution.stage_backends.get(stage, self.execution.backend)


def _format_validation(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "(top level)"
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        parts.append(f"{key}: {e['msg']}{shown}")
    return f"invalid configuration in {source}: " + "; ".join(parts)


# SAILS_* variables that are not settings (the rest must name a section or key).
OTHER_SAILS_VARIABLES = frozenset({
    "SAILS_PROJECT", "SAILS_SHARED_TESTDATA", "SAILS_JOB_ID", "SAILS_DOCS_SCREENSHOTS",
    "SAILS_QA_USER",  # who records a `sails qa` verdict
    "SAILS_REQUIRE_SLURM",  # CI started a SLURM: slurm tests must run, not skip
    "SAILS_TEST_FORCE_DIVERGENCE",  # test hook of the imaging healing ladder (docs/qa.md)
})


def check_environment(environ: Mapping[str, str]) -> None:
    """A ``SAILS_*`` variable naming no setting is an error, not silently ignored."""
    fields = {name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in environ if k.upper().startswith("SAILS_")
                     and k.upper() not in OTHER_SAILS_VARIABLES
                     and k.upper()[len("SAILS_"):].split("__", 1)[0] not in fields)
    if unknown:
        raise ConfigError(f"unknown SAILS_* environment variable(s): {', '.join(unknown)}",
                          hint="settings are SAILS_<SECTION>__<KEY>, e.g. "
                          "SAILS_EXECUTION__CASA_SLOTS; see `sails config show`")


def load_settings(path: Path | None) -> Settings:
    """Read ``sails.toml`` at ``path`` (or defaults when None) and apply env overrides."""
    check_environment(os.environ)
    data: dict[str, Any] = {}
    source = "defaults and SAILS_* environment"
    if path is not None:
        source = f"{path} or SAILS_* environment"
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not UTF-8 text") from None
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(
            _format_validation(exc, source), hint="fix the key named, then retry"
        ) from None
    except SettingsError as exc:  # e.g. SAILS_EXECUTION='not json'
        raise ConfigError(f"invalid SAILS_* environment: {exc}",
                          hint="a section variable (SAILS_EXECUTION) must hold a JSON "
                          "object; or set keys one by one (SAILS_EXECUTION__CASA_SLOTS)"
                          ) from None


DEFAULT_TOML = """\
# ALMA-SAILS project configuration.
# Every key is optional: the values shown are the defaults. Any key can be overridden from
# the environment as SAILS_<SECTION>__<KEY>, e.g. SAILS_EXECUTION__CASA_SLOTS=4.

project_name = "sails-project"

[layout]
# Folders inside this project space (or absolute paths).
datasets = "datasets"          # calibrated measurement sets, splits, products per MOUS
datasets_raw = "datasets_raw"  # raw ASDMs that still need a calibration restore
srdp_weblogs = "SRDP_weblogs"  # weblog_restore folders from SRDP deliveries
db = "db"                      # the SQLite catalog
schemas = "schemas"            # a dump of the catalog schema, for people and tools
reports = "reports"            # `sails report` output
logs = "logs"                  # CASA and stage logs, per MOUS
work = "work"                  # temporary areas (downloads in flight, job staging)

[execution]
backend = "local"     # "local" (child processes here), "canfar" (headless sessions) or
                      # "slurm" (sbatch on a cluster)
# stage_backends = { auto_selfcal = "canfar", image = "canfar" }  # per CASA stage
# (download always runs in the orchestrator; `sails run --backend X` sets every CASA stage)
casa_slots = 0        # CASA jobs in parallel; 0 = number of cores
separate_pools = true # downloads take download.parallel_mous slots, never a CASA slot
lease_seconds = 3600  # a claimed stage whose lease expires is recovered by the next run
catalog_busy_seconds = 60  # a catalog write waits this long for another process's
max_attempts = 3      # transient failures retried this many times
retry_backoff_seconds = 60        # wait before a retry, doubled each attempt ...
retry_backoff_max_seconds = 3600  # ... up to this
warm_casa = true      # local jobs fork from a launcher with CASA loaded (false: cold start)
use_prefect = false   # true: `sails run` runs through Prefect flows (embedded, no server)

# Per-stage job resources (cores, RAM in GB; time_minutes = batch time limit) for the
# CANFAR and SLURM backends.
[resources.auto_selfcal]
cores = 4
ram_gb = 16

[resources.image]
cores = 4
ram_gb = 16

[images]
casa = "images.canfar.net/casa-6/casa:6.6.4-34"

[platform]
# Path mapping (CANFAR): what this machine calls vm_prefix, jobs see as platform_prefix.
vm_prefix = ""         # e.g. "/mnt/arc/projects/streamers"
platform_prefix = ""   # e.g. "/arc/projects/streamers"

[canfar]
# url = "https://ws-uv.canfar.net/skaha/v1"  # default: CANFAR_URL, else `canfar login`'s server
# Credentials: `canfar login cadc` (or srcnet) on this machine, or CANFAR_TOKEN/CANFAR_URL,
# or token_file = "/path/readable/only/by/you". Never put a token in this file.
python = "python3"          # the CASA Python inside the image
# stage_images = { auto_selfcal = "casa", image = "casa" }
poll_initial_seconds = 5
poll_max_seconds = 60
pending_deadline_seconds = 3600  # destroy and resubmit a session Pending for longer
max_resubmits = 2

[slurm]
# partition = "batch"       # empty: the cluster's default partition
# account = "my-alloc"
# qos = "normal"
# sbatch_options = ["--constraint=skylake"]
# python = ["apptainer", "exec", "/path/casa.sif", "python3"]  # default: this Python
time_minutes = 1440         # jobs whose stage/resources set no time limit
poll_initial_seconds = 2
poll_max_seconds = 30

[archive]
tap_url = "https://almascience.eso.org/tap"   # or the .nrao.edu / .nao.ac.jp mirrors
datalink_url = "https://almascience.eso.org/datalink/sync"
timeout_seconds = 60
max_rows = 200000     # TAP MAXREC: a result longer than this is refused, never cut silently

[download]
parallel_files = 4
parallel_mous = 2     # MOUS downloading at once, beside the CASA slots (separate_pools)
retries = 5
# A redirect may stay on its own host, or go to redirect_hosts (host, or host:port for a
# non-default port) and the [archive] URLs' hosts; any other target is refused.
# Default: the ALMA mirrors, almascience.{eso.org,nrao.edu,nao.ac.jp} and almascience.org.
# redirect_hosts = ["almascience.eso.org", "mirror.example.org:8443"]

[selfcal]
# auto-selfcal keywords (see docs/selfcal.md); unset ones keep auto-selfcal's defaults.
do_amp_selfcal = true
apply_to_target_ms = false   # also write the solutions into the split *_targets.ms copies
uvcontsub_target_ms = false  # uses the findcont stage's cont.dat
spectral_average = true
use_xvfb = false             # opt in: plotms weblog plots under Xvfb (see docs/selfcal.md)
# extra = { scale_fov = 1.5 }

[imaging]
weighting = "briggs"
robust = 0.5
pixels_per_beam = 5.0       # cell = longest-baseline fringe / this
pb_factor = 1.5             # image width in PB FWHM (rounded to an FFT-friendly size)
pblimit = 0.2
nterms2_fractional_bw = 0.1 # mtmfs nterms=2 above this fractional bandwidth
# systemic_velocity_kms = 6.0 # LSRK, radio; unset: from the data, else the spw set-up
findcont = true             # line-free ranges from the data (cont.dat per MOUS)
velocity_window_kms = 20.0  # cubes cover systemic +- this
# channel_width_kms = 0.5   # default: native
line_free_margin_kms = 10.0 # line-free = outside systemic +- (window + margin)
cont_threshold_sigma = 2.5
multiscale_threshold_sigma = 4.0   # cubes: multiscale to this, then
singlescale_threshold_sigma = 2.0  # single-scale inside the mask to this
scales = [0, 5, 15]         # pixels
make_cubes = true
chunk_min_channels = 0      # cubes this long (channels) are imaged as chunks in parallel jobs
chunks = 0                  # chunks per cube; 0 = 2 x execution.casa_slots
# Extra lines for cubes, beside the shipped catalogue:
# [[imaging.lines]]
# name = "CH3OH_4-3"
# species = "CH3OH"
# transition = "4(2,2)-3(1,2)"
# rest_ghz = 218.440063

[qa]
# Score thresholds (docs/qa.md): each sub-score is 1 at *_good, 0 at *_bad.
rms_ratio_good = 1.5        # image rms / theoretical
rms_ratio_bad = 4.0
needs_look_below = 0.5      # targets scoring below this are listed in "needs a look"
heal = true                 # retry diverging deconvolution (lower gain, higher cyclefactor,
heal_max_attempts = 4       # smaller scales, tighter mask), each attempt recorded
[storage]
# budget_gb = 2000            # most the project space may hold; stages wait for room
free_floor_gb = 0.5           # always leave this much free on the disk
# max_cube_gb = 100           # a larger planned cube is cut down (image size to
# max_products_gb = 500       # pb_level_factor x PB, channel binning, fewer cubes, skip)
cleanup = true                # remove intermediates once a MOUS's products are recorded
remove_splits = true          # split *_targets.ms
remove_selfcal_work = true    # auto-selfcal working copies and iteration images
keep_selfcal_ms = false       # keep the self-calibrated *.selfcal.ms
remove_casa_images = true     # CASA image folders once their FITS are written
remove_download_work = true   # tarballs and partial downloads after verified extraction
remove_raw_delivery = true    # a raw delivery once the restore stage restored it

[sources]
# Targets of different MOUS observing the same sky form one source (docs/sources.md);
# `sails sources --dry-run` shows what these rules group.
tolerance_arcsec = 20.0       # same name (or, with within = "position", any name) this close
within = "name"               # "group": same group OUS + name only; "name": also same name
                              # within the tolerance; "position": also any name within it
match_names = "normalised"    # or "exact" (case, spaces, '_', '-', '.' then count)
# aliases = { "M 83" = "M83" }                     # target name -> source name
# exclude = ["uid://A001/X1/X2", "uid://A001/X1/X3:NGC 253", "Sgr B2"]  # stand alone
# The source_image stage: joint 12-m + 7-m images and the TP feather (docs/sources.md).
weighting = "briggs"
robust = 0.5
pblimit = 0.1                 # the joint PB falls low where only the 7-m sees the sky
pb_factor = 2.0               # image width in 7-m PB FWHM
scales = [0, 5, 15, 45]       # multiscale, pixels (5 pixels a 12-m beam)
joint_cyclefactor = 2.0       # tclean cyclefactor of a joint (12-m + 7-m) continuum
statwt = "auto"               # statwt on copies: "auto" (when the arrays' weights are off
                              # the radiometer ratio by more than weight_tolerance),
                              # "always" or "never"
weight_tolerance = 2.0
sdfactor = 1.0                # feather's TP scale factor

[casa]
# The restore stage (raw deliveries without an SRDP restore) applies the delivery's
# calapply.txt with the installed CASA wheels and runs nothing from the delivery. With
# allow_delivery_scripts = true it runs the delivery's scriptForPI instead, with the
# installation matching the README's CASA version (code from outside: off by default).
allow_delivery_scripts = false
# installs = { "6.5.4" = ["apptainer", "exec", "casa-6.5.4.sif", "casa"] }
"""
