"""Ready-made simulations: ``tiny`` (tests, seconds), ``selfcal`` (one demo-sized MOUS with
strong phase errors), ``demo`` (two MOUS, three targets, for the pipeline demo), ``group``
and ``group-tiny`` (one group OUS: a 12-m mosaic, a 7-m MOUS and a TP cube of one streamer).

Each preset is a function returning a list of :class:`MousSpec`; ``customize`` applies the
CLI's overrides (counts, band, names, phase rms) on top of a preset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sails.errors import UserInputError
from sails.sim.mosaic import hex_spacing_arcsec, hexagonal_pointings
from sails.sim.spec import BAND_BASEBANDS, BAND_LINES, Component, LineSpec, MousSpec, TargetSpec

# Sky positions of made-up but plausible star-forming regions, with names of the kinds ALMA
# archives hold (hyphens, plus signs, dots).
_SKY = [
    ("HOPS-56", 83.86542, -5.15972),
    ("HOPS-315", 83.88204, -5.09842),
    ("G34.43+0.24", 283.32771, 1.41917),
    ("IRAS16293B", 248.09458, -24.47556),
    ("Elias29", 246.85917, -24.37472),
    ("L1527", 69.97458, 26.05278),
]


def default_line(band: int, strength: float = 1.0) -> LineSpec:
    name, rest = BAND_LINES[band]
    return LineSpec(name=name, rest_freq_ghz=rest, core_flux_jykms=0.6 * strength,
                    arc_flux_jykms=0.6 * strength)


def disk(flux_jy: float, extended: bool = True) -> list[Component]:
    """A compact source plus (optionally) a resolved envelope, thermal dust spectrum."""
    comps = [Component(0.0, 0.0, flux_jy, 2.3, "point")]
    if extended:
        comps.append(Component(0.6, -0.4, 1.6 * flux_jy, 2.0, "gaussian", 1.2, 0.7, 35.0))
    return comps


def tiny() -> list[MousSpec]:
    """Seconds to generate: 12 antennas, 1 EB, 2 targets, few channels, bright sky."""
    t1 = TargetSpec("HOPS-56", 83.86542, -5.15972,
                    [Component(0.0, 0.0, 0.05, 2.3, "point")],
                    LineSpec(core_flux_jykms=2.0, arc_flux_jykms=1.5))
    t2 = TargetSpec("G34.43+0.24 MM'1", 83.95, -5.05,
                    [Component(2.0, -1.5, 0.04, 2.0, "gaussian", 1.0, 0.6, 60.0),
                     Component(-2.5, 2.0, 0.03, 2.5, "point")])
    return [MousSpec(targets=[t1, t2], band=6, config=1, n_antennas=12, n_ebs=1,
                     continuum_nchan=8, line_nchan=32, line_chan_khz=488.28125,
                     bandpass_scan_s=30.0, phasecal_scan_s=18.0, target_scan_s=36.0,
                     n_cycles=3, label="tiny")]


def selfcal_mous(phase_rms_deg: float = 60.0) -> MousSpec:
    """Demo-sized MOUS (20 antennas, 2 EBs x 2 targets, 4 spws) where self-cal pays off."""
    t1 = TargetSpec("HOPS-56", 83.86542, -5.15972, disk(0.008), default_line(6))
    t2 = TargetSpec("HOPS-315", 83.88204, -5.09842, disk(0.005, extended=False))
    return MousSpec(targets=[t1, t2], band=6, config=2, n_antennas=20, n_ebs=2,
                    continuum_nchan=16, line_nchan=64, line_chan_khz=244.140625,
                    integration_s=10.08, bandpass_scan_s=60.0, phasecal_scan_s=30.0,
                    target_scan_s=90.0, n_cycles=4, phase_rms_deg=phase_rms_deg,
                    phase_timescale_s=90.0, label="selfcal")


def selfcal() -> list[MousSpec]:
    return [selfcal_mous()]


def demo() -> list[MousSpec]:
    """Two MOUS, three targets: one MOUS with 60 deg phase errors, one nearly clean."""
    b = MousSpec(targets=[TargetSpec("G34.43+0.24", 283.32771, 1.41917, disk(0.012),
                                     default_line(6, 1.5))],
                 band=6, config=2, n_antennas=16, n_ebs=1, continuum_nchan=16,
                 line_nchan=64, integration_s=10.08, target_scan_s=120.0, n_cycles=3,
                 phase_rms_deg=10.0, label="demo-b")
    return [replace(selfcal_mous(), label="demo-a"), b]


#: The group OUS of the ``group`` presets (its members share project and group uid).
GROUP_OUS_UID = {"group": "uid://A001/X15a2/X2c0", "group-tiny": "uid://A001/X15a2/X2d0"}
GROUP_PROPOSAL = "2023.1.00412.S"
GROUP_SOURCE = ("Per-emb-2", 53.07467, 30.82994)


def streamer_line(arc_flux_jykms: float, core_flux_jykms: float) -> LineSpec:
    """A streamer of tens of arcsec: an arc of radius 20" (about 30" long, 18" wide) falling
    onto a compact core, redshifted by 2 km/s along its length (C18O 2-1)."""
    return LineSpec(vsys_kms=7.0, core_flux_jykms=core_flux_jykms, core_fwhm_kms=1.2,
                    core_size_arcsec=0.8, arc_flux_jykms=arc_flux_jykms,
                    arc_radius_arcsec=20.0, arc_start_deg=200.0, arc_span_deg=110.0, arc_n=8,
                    arc_width_arcsec=18.0, arc_fwhm_kms=0.8, arc_dv_kms=2.0)


def streamer_components(line: LineSpec, arc_flux_jy: float,
                        core_flux_jy: float) -> list[Component]:
    """The same streamer in dust continuum: a compact point source (component 0) and one
    Gaussian per arc blob of the line (so line and continuum trace one extended sky)."""
    arc = line.blobs()[1:]
    comps = [Component(0.0, 0.0, core_flux_jy, 2.3, "point")]
    comps += [Component(round(b.dx_arcsec, 4), round(b.dy_arcsec, 4), arc_flux_jy / len(arc),
                        2.0, "gaussian", b.major_arcsec, b.minor_arcsec, 0.0) for b in arc]
    return comps


def group_specs(*, n_pointings: int = 19, n12: int = 12, n7: int = 10, cont_nchan: int = 16,
                line_nchan: int = 64, line_chan_khz: float = 244.140625,
                integration_s: float = 6.048, target_scan_s: float = 84.0, n_cycles: int = 3,
                label: str = "group") -> list[MousSpec]:
    """One group OUS: a 12-m hexagonal mosaic, a single-pointing 7-m MOUS and a TP cube,
    all of one extended sky (the streamer), one project, one group OUS uid."""
    name, ra, dec = GROUP_SOURCE
    line = streamer_line(arc_flux_jykms=12.0, core_flux_jykms=1.5)
    comps = streamer_components(line, arc_flux_jy=0.4, core_flux_jy=0.03)
    top_ghz = max(BAND_BASEBANDS[6])
    spacing = hex_spacing_arcsec(top_ghz, 12.0)
    mosaic = TargetSpec(name, ra, dec, comps, line, hexagonal_pointings(n_pointings, spacing))
    single = TargetSpec(name, ra, dec, comps, line)
    common = dict(band=6, n_ebs=1, continuum_nchan=cont_nchan, line_nchan=line_nchan,
                  line_chan_khz=line_chan_khz, integration_s=integration_s,
                  bandpass_scan_s=30.0, phasecal_scan_s=18.0, n_cycles=n_cycles,
                  proposal_id=GROUP_PROPOSAL, group_ous_uid=GROUP_OUS_UID[label])
    # member uids follow the group's, as the archive numbers them
    gous = GROUP_OUS_UID[label]
    base = int(gous.rsplit("X", 1)[1], 16)
    member = [f"{gous.rsplit('/', 1)[0]}/X{base + k:x}" for k in (1, 3, 5)]
    twelve = MousSpec(targets=[mosaic], config=1, n_antennas=n12, target_scan_s=target_scan_s,
                      label=f"{label}-12m", array="12m", mous_uid=member[0], **common)
    # The ACA gets more time, as the ALMA OT asks for (about 2x the 12-m time for 7-m).
    seven = MousSpec(targets=[single], config=1, n_antennas=n7,
                     target_scan_s=2 * target_scan_s, label=f"{label}-7m", array="7m",
                     mous_uid=member[1], **common)
    tp = MousSpec(targets=[mosaic], config=1, n_antennas=3, target_scan_s=target_scan_s,
                  label=f"{label}-tp", array="TP", mous_uid=member[2], **common)
    return [twelve, seven, tp]


def group() -> list[MousSpec]:
    return group_specs()


def group_tiny() -> list[MousSpec]:
    """The same group, fast: fewer antennas, channels and integrations."""
    return group_specs(n_pointings=7, n12=10, n7=8, cont_nchan=4, line_nchan=24,
                       line_chan_khz=488.28125, integration_s=10.08, target_scan_s=70.0, n_cycles=2,
                       label="group-tiny")


def raw() -> list[MousSpec]:
    """The tiny MOUS as a raw delivery (ASDMs, caltables, calapply.txt, README, scriptForPI:
    :mod:`sails.sim.raw`) instead of an SRDP restore."""
    return [replace(s, label="raw") for s in tiny()]


#: Hot-core lines (real rest frequencies, GHz) that the shipped catalogue does not hold, in
#: band 6's default continuum basebands: a catalogue window cannot exclude them.
HOT_CORE_LINES = (
    ("H2S_220-211", 216.710436), ("CH3OH_514-422", 216.945521), ("OCS_19-18", 231.060983),
    ("13CS_5-4", 231.220686), ("CH3OH_18316-17413", 232.418521),
    ("CH3OH_10-38-11-29", 232.945797),
)


def hot_core_lines(vsys_kms: float, flux_jykms: float = 7.0) -> list[LineSpec]:
    """Compact, broad (5 km/s) lines of a hot core; 12CO 2-1 (catalogued) on top."""
    out = [LineSpec(name=n, rest_freq_ghz=f, vsys_kms=vsys_kms, core_flux_jykms=flux_jykms,
                    core_fwhm_kms=5.0, core_size_arcsec=0.3, arc_flux_jykms=0.0, arc_n=0)
           for n, f in HOT_CORE_LINES]
    out.append(LineSpec(name="12CO_2-1", rest_freq_ghz=230.538, vsys_kms=vsys_kms,
                        core_flux_jykms=flux_jykms, core_fwhm_kms=6.0, core_size_arcsec=0.4,
                        arc_flux_jykms=0.0, arc_n=0))
    return out


def linerich(vsys_kms: float = 57.3) -> list[MousSpec]:
    """A line-rich hot core (50 mJy point continuum, seven strong lines in the continuum
    windows, C18O 2-1 in the line window) at a systemic velocity nobody configured; the
    continuum windows have 64 channels so the lines are resolved from the continuum. Archive
    spw numbering with WVR, SQLD, FULL_RES + CH_AVG windows. Small enough for tests (12
    antennas, one EB)."""
    t = TargetSpec("G34.43+0.24", 283.32771, 1.41917,
                   [Component(0.0, 0.0, 0.05, 2.5, "point")],
                   LineSpec(vsys_kms=vsys_kms, core_flux_jykms=2.0, arc_flux_jykms=1.5),
                   extra_lines=hot_core_lines(vsys_kms))
    return [MousSpec(targets=[t], band=6, config=1, n_antennas=12, n_ebs=1,
                     continuum_nchan=64, line_nchan=48, line_chan_khz=488.28125,
                     bandpass_scan_s=30.0, phasecal_scan_s=18.0, target_scan_s=36.0,
                     n_cycles=3, sqld=True, label="linerich")]


PRESETS: dict[str, Callable[[], list[MousSpec]]] = {
    "tiny": tiny,
    "raw": raw,
    "selfcal": selfcal,
    "demo": demo,
    "group": group,
    "group-tiny": group_tiny,
    "linerich": linerich,
}


# Presets simulated as raw deliveries rather than SRDP restores.
RAW_PRESETS = frozenset({"raw"})


def preset(name: str) -> list[MousSpec]:
    try:
        return PRESETS[name]()
    except KeyError:
        raise UserInputError(f"unknown preset {name!r}",
                             hint=f"choose one of {', '.join(PRESETS)}") from None


def customize(specs: list[MousSpec], *, n_mous: int | None = None, n_targets: int | None = None,
              n_ebs: int | None = None, band: int | None = None,
              phase_rms_deg: float | None = None, n_antennas: int | None = None,
              names: list[str] | None = None, datacolumn: str | None = None) -> list[MousSpec]:
    """Apply command-line style overrides to a preset's MOUS list (validated later)."""
    if band is not None and band not in BAND_LINES:
        raise UserInputError(f"unknown band {band!r}", hint="use band 3, 6 or 7")
    base_count = len(specs)
    if n_mous is not None:
        if not 1 <= n_mous <= 50:
            raise UserInputError(f"n_mous must be between 1 and 50, got {n_mous}")
        specs = [specs[i % base_count] for i in range(n_mous)]
    out: list[MousSpec] = []
    sky_i = 0
    name_iter = iter(names or [])
    for k, spec in enumerate(specs):
        targets = list(spec.targets)
        new_band = band if band is not None else spec.band
        if n_targets is not None:
            if not 1 <= n_targets <= 3:
                raise UserInputError(f"a MOUS has 1 to 3 science targets, got {n_targets}")
            while len(targets) < n_targets:
                base = targets[-1]
                targets.append(replace(base, name=f"{base.name}-{len(targets) + 1}",
                                       ra_deg=base.ra_deg + 0.05, dec_deg=base.dec_deg + 0.04,
                                       components=disk(0.006), line=None))
            targets = targets[:n_targets]
        if k >= base_count:
            # a repeated preset MOUS: move it on the sky and rename its targets
            name, ra, dec = _SKY[(3 + sky_i) % len(_SKY)]
            if sky_i >= len(_SKY) - 3:
                name = f"{name}-{k}"
            sky_i += 1
            targets = [replace(t, name=f"{name}-{j + 1}" if j else name,
                               ra_deg=(ra + 0.03 * j) % 360, dec_deg=dec + 0.02 * j)
                       for j, t in enumerate(targets)]
        renamed = []
        for t in targets:
            nm = next(name_iter, None)
            t = replace(t, name=nm) if nm is not None else t
            if band is not None and t.line is not None:
                t = replace(t, line=default_line(new_band) if new_band != spec.band else t.line)
            renamed.append(t)
        changes: dict = {"targets": renamed, "band": new_band}
        if band is not None and band != spec.band:
            changes["spws"] = None
        if n_ebs is not None:
            changes["n_ebs"] = n_ebs
        if phase_rms_deg is not None:
            changes["phase_rms_deg"] = phase_rms_deg
        if n_antennas is not None:
            changes["n_antennas"] = n_antennas
        if datacolumn is not None:
            changes["datacolumn"] = datacolumn
        out.append(replace(spec, **changes))
    leftover = list(name_iter)
    if leftover:
        raise UserInputError(f"{len(leftover)} more target names than targets: {leftover!r}")
    return out
