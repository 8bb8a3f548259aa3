"""The chunk plan of a large line cube (pure: no CASA, no files).

CASA's parallel cube imaging needs ``mpicasa``, which the pip wheels lack; PHANGS-ALMA, ACES
and casa-pclean instead image channel chunks in separate processes and concatenate them.
A chunk is a contiguous block of output channels with the same gridding, weighting and
velocity grid as the whole cube (its start is the cube's start plus its first channel times
the width), the same thresholds (from one noise estimate made before the chunks) and, after
concatenation, one restoring beam (the whole cube is restored again with the common beam of
every channel's PSF, as tclean's ``restoringbeam='common'`` does for an unchunked cube).
"""

from __future__ import annotations

from typing import Any


def chunk_count(nchan: int, min_channels: int, wanted: int) -> int:
    """How many chunks a cube of ``nchan`` channels is imaged in: 1 (not chunked) when
    chunking is off (``min_channels`` 0) or the cube is smaller, else ``wanted`` (at least
    2, at most one chunk per 2 channels)."""
    if min_channels <= 0 or nchan < min_channels or wanted < 2:
        return 1
    return max(1, min(wanted, nchan // 2))


def split_channels(nchan: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous (first channel, channel count) blocks covering ``nchan`` channels,
    as even as possible (the first ones one channel longer)."""
    if k < 1 or nchan < k:
        raise ValueError(f"cannot split {nchan} channels into {k} chunks")
    base, extra = divmod(nchan, k)
    out, first = [], 0
    for i in range(k):
        n = base + (1 if i < extra else 0)
        out.append((first, n))
        first += n
    return out


def edge_channels(nchan: int) -> int:
    """Channels at each end of a cube that the edge-emission check (and the chunked cube's
    noise estimate) looks at: a tenth of the cube, at least one."""
    return max(1, nchan // 10)


def chunk_plan(cube: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """The chunks of a planned cube (``imaging_plan``'s cube: ``nchan``, ``start_kms``,
    ``width_kms``, ``imagename``): index, channels and velocity start of each."""
    stem = cube["imagename"]
    out = []
    for i, (first, n) in enumerate(split_channels(int(cube["nchan"]), k)):
        out.append({"index": i, "first": first, "nchan": n,
                    "start_kms": float(cube["start_kms"]) + first * float(cube["width_kms"]),
                    "imagename": f"{stem}.chunk{i:02d}", "key": f"{stem}#{i:02d}"})
    return out


# The CASA images of a deconvolved cube that are put together channel by channel before the
# whole cube is restored (tclean's restoration reads psf, residual, model, sumwt and pb).
CONCAT_EXTS = ("psf", "residual", "model", "sumwt", "pb", "weight", "mask")
