"""Per-target overrides: ``overrides.toml`` at the project-space root, one section per
target (source) name, e.g.::

    ["G34.43+0.24 MM'1"]
    systemic_velocity_kms = 57.5
    velocity_window_kms = 15.0
    note = "broad outflow"

Names hold spaces, ``+`` and quotes, so sections are TOML quoted keys. A section applies to
the target of that name in every MOUS. Keys are checked like ``sails.toml`` (an unknown key
is an error naming it). ``AFFECTS`` declares, once, which stage each key changes: a stage
row records the fingerprint of the keys that affect it when it runs, and ``sails run``
sends a finished row whose fingerprint no longer matches back to pending ("override
changed"), that target's row only.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sails.errors import ConfigError

OVERRIDES_NAME = "overrides.toml"
STALE_REASON = "override changed"


class SelfcalOverride(BaseModel):
    """Self-cal for this target. auto-selfcal runs all targets of a MOUS together with one
    set of keywords ([selfcal] in sails.toml), so per target only its use can change."""

    model_config = ConfigDict(extra="forbid")

    skip: bool = Field(False, description="do not use self-cal: image the split data")


class TargetOverride(BaseModel):
    """What may change for one target; every key optional."""

    model_config = ConfigDict(extra="forbid")

    systemic_velocity_kms: float | None = None
    velocity_window_kms: float | None = Field(None, gt=0)
    robust: float | None = Field(None, ge=-2, le=2)
    cell_arcsec: float | None = Field(None, gt=0)
    imsize: int | None = Field(None, ge=16, le=16384)
    niter: int | None = Field(None, ge=0)
    gain: float | None = Field(None, gt=0)
    cyclefactor: float | None = Field(None, gt=0)
    scales: list[int] | None = None
    cont_threshold_sigma: float | None = Field(None, gt=0)
    multiscale_threshold_sigma: float | None = Field(None, gt=0)
    singlescale_threshold_sigma: float | None = Field(None, gt=0)
    mask: str | None = Field(None, description="CRTF region(s) to clean in (replaces the "
                             "auto-mask), e.g. 'circle[[83.865deg, -5.16deg], 3arcsec]'")
    continuum_ranges: dict[str, str] | None = Field(
        None, description="spw id (as in the product names) -> line-free channels, "
        "e.g. {\"0\" = \"0~40;60~127\"}")
    drop_spws: list[int] | None = None
    make_cubes: bool | None = None
    selfcal: SelfcalOverride | None = None
    skip: bool = Field(False, description="skip this target's imaging")
    note: str | None = Field(None, description="why (for people; changes nothing)")

    @field_validator("mask")
    @classmethod
    def _crtf(cls, v: str | None) -> str | None:
        if v is not None and not v.strip().lower().startswith(
                ("#crtf", "circle", "box", "centerbox", "rotbox", "poly", "ellipse",
                 "annulus")):
            raise ValueError("a mask is CRTF region text (circle[[ra, dec], r], box[...], "
                             "poly[...], optionally starting '#CRTFv0')")
        return v

    @field_validator("continuum_ranges")
    @classmethod
    def _ranges(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for spw, sel in (v or {}).items():
            if not spw.isdigit():
                raise ValueError(f"spw {spw!r} is not an spw id")
            for part in sel.split(";"):
                a, _, b = part.partition("~")
                if not (a.strip().isdigit() and (not b or b.strip().isdigit())):
                    raise ValueError(f"spw {spw}: {sel!r} is not a channel list like 0~9;20~31")
        return v


# Which stage each key changes (declared once). Keys not named here change nothing.
IMAGE_KEYS = ("systemic_velocity_kms", "velocity_window_kms", "robust", "cell_arcsec",
              "imsize", "niter", "gain", "cyclefactor", "scales", "cont_threshold_sigma",
              "multiscale_threshold_sigma", "singlescale_threshold_sigma", "mask",
              "continuum_ranges", "drop_spws", "make_cubes", "skip")
AFFECTS: dict[str, tuple[str, ...]] = {
    "image": IMAGE_KEYS + ("selfcal.skip",),
    "selfcal": ("selfcal.skip",),
}
# Imaging keys handed to the image job's configuration as they are.
IMAGING_CFG_KEYS = tuple(k for k in IMAGE_KEYS if k != "skip")


def _flat(o: TargetOverride) -> dict[str, Any]:
    """The keys set away from their defaults (``selfcal.skip`` style for the nested ones)."""
    data = o.model_dump(exclude_defaults=True, exclude={"selfcal"})
    if o.selfcal is not None:
        data.update({f"selfcal.{k}": v for k, v in
                     o.selfcal.model_dump(exclude_defaults=True).items()})
    return data


def fingerprint(o: TargetOverride | None, stage: str) -> str | None:
    """A short hash of the keys of ``o`` that affect ``stage`` (None when none is set, so a
    row that ran before any override matches an empty section)."""
    if o is None or stage not in AFFECTS:
        return None
    flat = _flat(o)
    used = {k: flat[k] for k in AFFECTS[stage] if k in flat}
    if not used:
        return None
    return hashlib.sha1(json.dumps(used, sort_keys=True).encode()).hexdigest()[:16]


def imaging_cfg(o: TargetOverride | None) -> dict[str, Any]:
    """The keys of ``o`` that replace ``[imaging]`` values for this target's image job."""
    if o is None:
        return {}
    return {k: v for k, v in o.model_dump(exclude_none=True).items() if k in IMAGING_CFG_KEYS}


def _format(err: ValidationError, name: str, path: Path) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "(section)"
        if e["type"] == "extra_forbidden":
            known = ", ".join(TargetOverride.model_fields)
            parts.append(f"unknown key {key!r} (known: {known})")
        else:
            parts.append(f"{key}: {e['msg']}")
    return f"{path}: [{json.dumps(name)}] " + "; ".join(parts)


def parse_overrides(text: str, path: Path) -> dict[str, TargetOverride]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}",
                          hint='quote target names: ["G34.43+0.24 MM\'1"]') from None
    out = {}
    for name, section in data.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: {name!r} must be a section named by a target, "
                              f"e.g. [{json.dumps(name)}]")
        try:
            out[name] = TargetOverride(**section)
        except ValidationError as exc:
            raise ConfigError(_format(exc, name, path),
                              hint="fix the key named, then retry") from None
    return out


def load_overrides(root: Path) -> dict[str, TargetOverride]:
    """Target name -> its overrides (empty when the project has no overrides.toml)."""
    path = Path(root) / OVERRIDES_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_overrides(text, path)


def for_target(root: Path, target: str) -> TargetOverride | None:
    return load_overrides(root).get(target)
