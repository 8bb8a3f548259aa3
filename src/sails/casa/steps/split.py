"""Split the science targets of one EB into ``<eb>_targets.ms`` (the name auto_selfcal expects).

The calibrated column (``CORRECTED_DATA`` or ``DATA``) becomes ``DATA`` of the output; only
scans with an ``OBSERVE_TARGET`` intent and the science spws are kept. The output is written
inside the job's staging folder, so a killed job never leaves a half-written MS in place.
"""

from __future__ import annotations

import shutil
from typing import Any

from sails.casa.steps.summary import check_is_ms
from sails.casa.tools import opened

_COLUMN_ARG = {"CORRECTED_DATA": "corrected", "DATA": "data"}


def split_targets(ctx, vis: str, outputvis: str, spws: list[int], datacolumn: str,
                  intent: str = "*OBSERVE_TARGET*", field: str = "") -> dict[str, Any]:
    """``split`` ``vis`` -> ``ctx.out/outputvis``; returns the output path and its row count."""
    from casatasks import split

    if datacolumn not in _COLUMN_ARG:
        raise ValueError(f"datacolumn must be one of {sorted(_COLUMN_ARG)}, not {datacolumn!r}")
    if not spws:
        raise ValueError(f"no science spws given for {vis}")
    check_is_ms(vis)
    out = ctx.out / outputvis
    if out.exists():  # only possible inside this job's own staging folder
        shutil.rmtree(out)
    spw_sel = ",".join(str(int(s)) for s in sorted(spws))
    split(vis=vis, outputvis=str(out), intent=intent, spw=spw_sel, field=field,
          datacolumn=_COLUMN_ARG[datacolumn], keepflags=True)
    if not (out / "table.dat").is_file():
        raise RuntimeError(f"split wrote no {outputvis} (selection intent={intent!r} "
                           f"spw={spw_sel!r} matched nothing?)")
    with opened("table", str(out)) as tb:
        nrows = int(tb.nrows())
        cols = list(tb.colnames())
    if nrows == 0:
        raise RuntimeError(f"split of {vis} produced an empty {outputvis}")
    return {
        "vis": vis,
        "outputvis": ctx.final_path(out),
        "n_rows": nrows,
        "source_spws": sorted(int(s) for s in spws),
        "datacolumn_in": datacolumn,
        "columns": [c for c in cols if c.endswith("DATA")],
        "intent": intent,
    }


STEPS = {"split_targets": split_targets}
