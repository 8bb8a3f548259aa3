"""What a simulated MOUS looks like: plain dataclasses, validated, JSON round-trippable.

The spec says *what* to observe (band, array, spectral setup, targets and their sky, scan
plan, corruption); the seed decides every random choice (uids, dates, antenna subset, phase
screens, noise). Nothing here imports CASA: the spec travels to the CASA child as JSON.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from sails.constants import C_KMS
from sails.errors import UserInputError

#: Default line per band: (name, rest frequency GHz) - the C18O ladder.
BAND_LINES: dict[int, tuple[str, float]] = {
    3: ("C18O_1-0", 109.782173),
    6: ("C18O_2-1", 219.560354),
    7: ("C18O_3-2", 329.330553),
}
#: Default sky centre frequencies (GHz) of basebands 1..4 per band. The line window replaces
#: the baseband whose default is closest to the line's sky frequency.
BAND_BASEBANDS: dict[int, tuple[float, float, float, float]] = {
    3: (97.5, 99.5, 109.75, 111.5),
    6: (217.0, 219.5, 231.0, 233.0),
    7: (329.3, 331.5, 341.5, 343.5),
}
#: Receiver temperature-like system temperatures (K) and aperture efficiencies per band,
#: used for the radiometer-equation noise.
BAND_TSYS_K = {3: 70.0, 6: 90.0, 7: 140.0}
BAND_ETA_A = {3: 0.71, 6: 0.68, 7: 0.63}
BAND_RANGE_GHZ = {3: (84.0, 116.0), 6: (211.0, 275.0), 7: (275.0, 373.0)}
DATACOLUMNS = ("corrected", "data")
N_CONFIG_ANTENNAS = 43  # every alma.cycle10.N.cfg lists 43 pads
#: The arrays of one ALMA group OUS: 12-m (main array), 7-m (ACA) and total power.
ARRAYS = ("12m", "7m", "TP")
#: Pads of the array file each array draws its antennas from (TP has no interferometer file).
ARRAY_MAX_ANTENNAS = {"12m": N_CONFIG_ANTENNAS, "7m": 10, "TP": 4}
MAX_POINTINGS = 37  # three hexagonal rings

_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")


def check_source_name(name: str, what: str = "target name") -> str:
    """ALMA source names are data: spaces, quotes, ``+``, ``;`` and ``*`` are legal.

    Rejected are only things that can never be a source name and would break a path or a log
    line: path separators, control characters, empty or padded names, absurd lengths.
    """
    if not isinstance(name, str) or not name.strip():
        raise UserInputError(f"empty {what}")
    if name != name.strip():
        raise UserInputError(f"{what} {name!r} has leading or trailing blanks")
    if _BAD_NAME.search(name):
        raise UserInputError(
            f"{what} {name!r} contains a path separator or a control character",
            hint="ALMA source names may contain spaces, quotes and +, but not / \\ or control"
            " characters",
        )
    if len(name) > 64:
        raise UserInputError(f"{what} {name[:20]!r}... is longer than 64 characters")
    return name


@dataclass
class Component:
    """A continuum component, offset from its target's phase centre (east, north)."""

    dx_arcsec: float = 0.0
    dy_arcsec: float = 0.0
    flux_jy: float = 0.01  # at the MOUS reference frequency
    spectral_index: float = 2.0
    shape: str = "point"  # "point" | "gaussian"
    major_arcsec: float = 0.0  # FWHM
    minor_arcsec: float = 0.0
    pa_deg: float = 0.0  # east of north

    def validate(self) -> None:
        if self.shape not in ("point", "gaussian"):
            raise UserInputError(f"unknown component shape {self.shape!r} (point or gaussian)")
        if not self.flux_jy > 0:
            raise UserInputError("component flux must be positive")
        if self.shape == "gaussian" and not (self.major_arcsec >= self.minor_arcsec > 0):
            raise UserInputError("gaussian component needs major >= minor > 0 (arcsec)")


@dataclass
class LineBlob:
    """One Gaussian emitter of line emission with a Gaussian profile (derived from LineSpec)."""

    dx_arcsec: float
    dy_arcsec: float
    major_arcsec: float
    minor_arcsec: float
    pa_deg: float
    flux_jykms: float
    vlsr_kms: float
    fwhm_kms: float


@dataclass
class LineSpec:
    """A line with a compact core and an extended arc with a velocity gradient (a streamer)."""

    name: str = "C18O_2-1"
    rest_freq_ghz: float = 219.560354
    vsys_kms: float = 6.0  # LSRK, radio convention
    core_flux_jykms: float = 0.6
    core_fwhm_kms: float = 1.5
    core_size_arcsec: float = 0.4
    arc_flux_jykms: float = 0.6  # summed over the arc
    arc_radius_arcsec: float = 2.0
    arc_start_deg: float = 20.0  # position angle (east of north) of the arc's near end
    arc_span_deg: float = 110.0
    arc_n: int = 8
    arc_width_arcsec: float = 0.5
    arc_fwhm_kms: float = 0.8
    arc_dv_kms: float = 2.5  # far end is redshifted by this much relative to vsys

    def blobs(self) -> list[LineBlob]:
        out = [LineBlob(0.0, 0.0, self.core_size_arcsec, self.core_size_arcsec, 0.0,
                        self.core_flux_jykms, self.vsys_kms, self.core_fwhm_kms)]
        n = self.arc_n
        for i in range(n):
            frac = (i + 0.5) / n if n else 0.0
            pa = math.radians(self.arc_start_deg + frac * self.arc_span_deg)
            # The arc also falls in towards the core: the radius shrinks near the start.
            r = self.arc_radius_arcsec * (0.55 + 0.45 * frac)
            out.append(LineBlob(
                r * math.sin(pa), r * math.cos(pa), self.arc_width_arcsec,
                self.arc_width_arcsec, 0.0, self.arc_flux_jykms / n,
                self.vsys_kms + 0.15 + frac * self.arc_dv_kms, self.arc_fwhm_kms))
        return out

    @property
    def integrated_flux_jykms(self) -> float:
        return self.core_flux_jykms + self.arc_flux_jykms

    def velocity_range_kms(self) -> tuple[float, float]:
        """Where the emission is (each blob's centre +- one FWHM)."""
        bs = self.blobs()
        return (min(b.vlsr_kms - b.fwhm_kms for b in bs), max(b.vlsr_kms + b.fwhm_kms for b in bs))

    def sky_freq_ghz(self) -> float:
        return self.rest_freq_ghz * (1.0 - self.vsys_kms / C_KMS)

    def validate(self) -> None:
        if self.rest_freq_ghz <= 0 or self.core_flux_jykms < 0 or self.arc_flux_jykms < 0:
            raise UserInputError("line needs a positive rest frequency and non-negative fluxes")
        if self.core_fwhm_kms <= 0 or self.arc_fwhm_kms <= 0 or self.arc_n < 0:
            raise UserInputError("line widths must be positive")


@dataclass
class TargetSpec:
    name: str
    ra_deg: float
    dec_deg: float
    components: list[Component] = field(default_factory=list)
    line: LineSpec | None = None
    #: Mosaic pointings as (east, north) arcsec offsets from (ra_deg, dec_deg); None or one
    #: entry is a single pointing. Each pointing becomes a FIELD row with the target's name.
    pointings: list[list[float]] | None = None

    def pointing_offsets(self) -> list[tuple[float, float]]:
        if not self.pointings:
            return [(0.0, 0.0)]
        return [(float(p[0]), float(p[1])) for p in self.pointings]

    @property
    def is_mosaic(self) -> bool:
        return len(self.pointing_offsets()) > 1

    # More lines of the same source (a line-rich hot core: lines in the continuum windows
    # that no catalogue window excludes). After ``pointings``: positional constructions stay valid.
    extra_lines: list[LineSpec] = field(default_factory=list)

    def all_lines(self) -> list[LineSpec]:
        return ([self.line] if self.line else []) + list(self.extra_lines)

    def validate(self) -> None:
        check_source_name(self.name)
        if self.pointings is not None:
            if not 1 <= len(self.pointings) <= MAX_POINTINGS or any(
                    len(p) != 2 for p in self.pointings):
                raise UserInputError(
                    f"target {self.name!r}: 1 to {MAX_POINTINGS} pointings of (east, north)"
                    " arcsec offsets")
            offs = self.pointing_offsets()
            if len(set(offs)) != len(offs):
                raise UserInputError(f"target {self.name!r}: duplicate mosaic pointings")
        if not (0.0 <= self.ra_deg < 360.0) or not (-90.0 < self.dec_deg < 47.0):
            raise UserInputError(
                f"target {self.name!r}: RA must be in [0, 360) deg and Dec below +47 deg"
                " (never rises above 20 deg elevation at ALMA otherwise)")
        for c in self.components:
            c.validate()
        for ln in self.all_lines():
            ln.validate()


@dataclass
class SpwSpec:
    """A science window (the FULL_RES one; the CH_AVG partner is added automatically)."""

    baseband: int
    center_ghz: float  # LSRK sky frequency the window is tuned to
    nchan: int
    chan_width_mhz: float
    is_line: bool = False

    @property
    def bandwidth_mhz(self) -> float:
        return self.nchan * self.chan_width_mhz


@dataclass
class MousSpec:
    """One member OUS: its science goal, instrument set-up and the scan plan of each EB."""

    targets: list[TargetSpec]
    band: int = 6
    config: int = 2  # alma.cycle10.<config>.cfg
    n_antennas: int = 12
    n_ebs: int = 1
    spws: list[SpwSpec] | None = None  # default: from band_spws()
    continuum_nchan: int = 16
    line_nchan: int = 64
    line_chan_khz: float = 244.140625
    integration_s: float = 6.048
    bandpass_scan_s: float = 60.0
    phasecal_scan_s: float = 30.0
    target_scan_s: float = 60.0
    n_cycles: int = 3  # phase-cal / target(s) cycles per EB
    wvr: bool = True  # WVR window (spw 0) and CALIBRATE_WVR intents on calibrator scans
    phase_rms_deg: float = 0.0  # residual antenna phase errors on the calibrated data
    phase_timescale_s: float = 120.0
    noise: bool = True
    noise_scale: float = 1.0  # multiplies the radiometer-equation noise
    tsys_k: float | None = None  # default per band
    datacolumn: str = "corrected"  # "corrected": raw DATA + calibrated CORRECTED_DATA
    flags: bool = True  # quack first integration, one antenna out for one scan, shadowing
    ref_freq_ghz: float | None = None  # component fluxes are given here; default: mean spw
    proposal_id: str | None = None  # default from the seed
    mous_uid: str | None = None  # default from the seed
    start_date: str | None = None  # "YYYY-MM-DD" of the first EB; default from the seed
    eb_spacing_days: int = 3
    label: str = ""
    array: str = "12m"  # "12m" | "7m" (ACA, aca.cycle10.cfg) | "TP" (a delivered FITS cube)
    group_ous_uid: str | None = None  # members of one group OUS share it; default: derived
    tp_noise_mjy: float = 5.0  # TP cube rms per channel (mJy/beam)
    # SQLD windows (one per baseband, total-power detector data, after the WVR window) as
    # real ALMA data has: the science windows then have the higher archive numbers.
    sqld: bool = False

    # ------------------------------------------------------------------ derived values
    def science_spws(self) -> list[SpwSpec]:
        return self.spws if self.spws is not None else band_spws(self)

    def reference_freq_ghz(self) -> float:
        """Bandwidth-weighted mean science frequency: where an MFS image's flux is read."""
        if self.ref_freq_ghz:
            return self.ref_freq_ghz
        spws = self.science_spws()
        bw = sum(s.bandwidth_mhz for s in spws)
        return sum(s.center_ghz * s.bandwidth_mhz for s in spws) / bw

    def line(self) -> LineSpec | None:
        for t in self.targets:
            if t.line:
                return t.line
        return None

    def validate(self) -> MousSpec:
        if self.band not in BAND_BASEBANDS:
            raise UserInputError(f"unknown band {self.band!r}", hint="use band 3, 6 or 7")
        if not 1 <= int(self.config) <= 10:
            raise UserInputError(f"unknown array configuration {self.config!r} (1..10)")
        if self.array not in ARRAYS:
            raise UserInputError(f"unknown array {self.array!r}",
                                 hint=f"use one of {', '.join(ARRAYS)}")
        top = ARRAY_MAX_ANTENNAS[self.array]
        low = 1 if self.array == "TP" else 2
        if not low <= int(self.n_antennas) <= top:
            raise UserInputError(
                f"{self.array} n_antennas must be between {low} and {top}, got"
                f" {self.n_antennas}")
        if not 1 <= int(self.n_ebs) <= 3:
            raise UserInputError(f"a MOUS has 1 to 3 execution blocks, got {self.n_ebs}")
        if not 1 <= len(self.targets) <= 3:
            raise UserInputError(f"a MOUS has 1 to 3 science targets, got {len(self.targets)}")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise UserInputError(f"duplicate target names in {names!r}")
        for t in self.targets:
            t.validate()
        if self.datacolumn not in DATACOLUMNS:
            raise UserInputError(
                f"datacolumn must be one of {DATACOLUMNS}, not {self.datacolumn!r}")
        if self.phase_rms_deg < 0 or self.noise_scale < 0 or self.phase_timescale_s <= 0:
            raise UserInputError("phase rms, noise scale and phase timescale must be >= 0")
        if self.integration_s <= 0 or min(self.bandpass_scan_s, self.phasecal_scan_s,
                                          self.target_scan_s) < self.integration_s:
            raise UserInputError("scan lengths must be at least one integration")
        if not 1 <= self.n_cycles <= 50:
            raise UserInputError("n_cycles must be between 1 and 50")
        lo, hi = BAND_RANGE_GHZ[self.band]
        spws = self.science_spws()
        if not 1 <= len(spws) <= 4:
            raise UserInputError("1 to 4 science spectral windows (one per baseband)")
        for s in spws:
            if not lo - 5 <= s.center_ghz <= hi + 5:
                raise UserInputError(
                    f"spw at {s.center_ghz} GHz is outside band {self.band} ({lo}-{hi} GHz)")
            if not 1 <= s.nchan <= 4096 or s.chan_width_mhz <= 0:
                raise UserInputError("spw needs 1..4096 channels of positive width")
        if self.array == "TP" and self.line() is None:
            raise UserInputError("a TP MOUS needs a target with a line (TP delivers line cubes)")
        from sails.ids import parse_uid

        if self.mous_uid is not None:
            parse_uid(self.mous_uid, "MOUS uid")
        if self.group_ous_uid is not None:
            parse_uid(self.group_ous_uid, "group OUS uid")
        if self.start_date is not None and not re.fullmatch(r"\d{4}-\d\d-\d\d", self.start_date):
            raise UserInputError(f"start_date must look like 2024-05-01, not {self.start_date!r}")
        return self

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MousSpec:
        return _build(cls, data)


def band_spws(spec: MousSpec) -> list[SpwSpec]:
    """Four windows, one per baseband; the line window (if any) sits on the line."""
    centers = list(BAND_BASEBANDS[spec.band])
    line = spec.line()
    line_bb = None
    if line is not None:
        f = line.sky_freq_ghz()
        line_bb = min(range(4), key=lambda i: abs(centers[i] - f))
        centers[line_bb] = round(f, 6)
    cont_width = 2000.0 / spec.continuum_nchan
    out = []
    for i, c in enumerate(centers):
        if i == line_bb:
            out.append(SpwSpec(i + 1, c, spec.line_nchan, spec.line_chan_khz / 1000.0, True))
        else:
            out.append(SpwSpec(i + 1, c, spec.continuum_nchan, cont_width, False))
    return out


def _build(cls: type, data: Any) -> Any:
    """Tiny dataclass-from-dict for our nested specs (unknown keys are an error)."""
    if not isinstance(data, dict):
        raise UserInputError(f"expected a mapping for {cls.__name__}, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise UserInputError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    sub = {"targets": TargetSpec, "components": Component, "line": LineSpec, "spws": SpwSpec,
           "extra_lines": LineSpec}
    kwargs = {}
    for k, v in data.items():
        if k in sub and v is not None:
            kwargs[k] = [_build(sub[k], x) for x in v] if isinstance(v, list) else _build(sub[k], v)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def to_jsonable(obj: Any) -> Any:
    if is_dataclass(obj):
        return asdict(obj)
    return obj
