"""Synthetic MOUS folders (fake measurement-set trees, weblogs, raw ASDMs) for the tests.

No CASA: a "measurement set" here is a folder of table files with random bytes, which is
all the transfer code can see anyway.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SUBTABLES = ("", "ANTENNA", "FIELD", "SPECTRAL_WINDOW", "STATE")


def fake_table_tree(path: Path, rng: random.Random, main_bytes: int = 20_000) -> None:
    for sub in SUBTABLES:
        d = path / sub
        d.mkdir(parents=True, exist_ok=True)
        (d / "table.dat").write_bytes(rng.randbytes(900 + 7 * len(sub)))
        (d / "table.info").write_text(f"Type = Measurement Set {sub}\n")
        (d / "table.f0").write_bytes(rng.randbytes(main_bytes if not sub else 1500))


def make_mous(root: Path, mous_fs: str, *, ebs: tuple[str, ...] = (), raw: tuple[str, ...] = (),
              weblog: bool = True, project: str = "2019.1.00123.S", seed: int = 0,
              main_bytes: int = 20_000) -> Path:
    rng = random.Random(seed)
    d = root / mous_fs
    d.mkdir(parents=True, exist_ok=True)
    for eb in ebs:
        fake_table_tree(d / f"{eb}.ms", rng, main_bytes)
    for eb in raw:
        asdm = d / f"{eb}.asdm.sdm"
        (asdm / "ASDMBinary").mkdir(parents=True, exist_ok=True)
        (asdm / "ASDM.xml").write_text("<ASDM/>\n")
        (asdm / "Main.xml").write_bytes(rng.randbytes(4000))
        (asdm / "ASDMBinary" / f"{eb}_X1").write_bytes(rng.randbytes(main_bytes))
    if weblog:
        html = d / "weblog_restore" / "pipeline-2024" / "html"
        html.mkdir(parents=True, exist_ok=True)
        (html / "index.html").write_text('<html><a href="t1-1.html">t1</a></html>\n')
        (html / "t1-1.html").write_text("<html>listobs</html>\n")
        (html / "plot with space.png").write_bytes(rng.randbytes(3000))
    (d / "truth.json").write_text(json.dumps({"project_code": project, "secret": True}))
    return d


def tree_bytes(root: Path) -> dict[str, bytes]:
    """relative path -> content of every regular file below ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}
