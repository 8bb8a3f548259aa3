"""A stand-in for the source_image stage in the engine tests (no CASA): it records the
members it saw and makes one file, or fails when told (``TOY_FAIL`` in the source folder)."""

from __future__ import annotations

from sails.catalog import Product
from sails.errors import SailsError
from sails.stages.base import Outcome


def run(ctx) -> Outcome:
    folder = ctx.mous_dir
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "TOY_FAIL").exists():
        raise SailsError("toy source stage told to fail")
    members = [m["mous_id"] for m in ctx.catalog.source(ctx.source)["members"]]
    out = folder / "joint.txt"
    out.write_text("\n".join(members))
    return Outcome.done([Product("cont_image", str(out),
                                 metrics={"members": [{"mous_id": m} for m in members]})],
                        f"combined {len(members)} members")
