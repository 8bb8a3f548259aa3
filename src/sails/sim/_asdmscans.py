"""Give an ``exportasdm`` ASDM the scan structure ALMA's ASDMs have (used by the raw delivery).

CASA's MS2ASDM writes every ExecBlock as one scan with the intent hard-wired to
``OBSERVE_TARGET`` and no spectral window names; ``importasdm`` then gives a measurement set
whose calibrators look like targets, with no scan boundaries and unnamed windows, which is not
what an archive ASDM restores to. The simulator exports one integration per subscan
(``subscanduration`` shorter than an integration), and this module rewrites the XML tables so
that the ASDM holds the MS's scans as ALMA's correlator writes them:

- ``Main.xml``: each row's ``scanNumber`` / ``subscanNumber`` from the MS scan it falls in
  (subscans numbered by field within a scan, as in a mosaic scan);
- ``Subscan.xml``: one row per (scan, subscan), ``ON_SOURCE`` unless the MS says otherwise;
- ``Scan.xml``: one row per scan with the MS's scan intents (``CALIBRATE_PHASE`` ...);
- ``SpectralWindow.xml``: the windows' names (``X...#ALMA_RB_06#BB_1#SW-01#FULL_RES``);
- ``ExecBlock.xml`` / ``SBSummary.xml``: the EB's and scheduling block's archive UIDs (which
  ``importasdm`` writes into the MS's OBSERVATION ``SCHEDULE``).

Pure text processing of the XML as MS2ASDM writes it (one ``<row>`` per table row, values
padded with spaces): no CASA import here. The binary data (``ASDMBinary/``) are untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ROW = re.compile(r"<row>.*?</row>", re.S)
NS = 1_000_000_000  # ASDM times are integer nanoseconds on the MS's MJD-seconds scale


@dataclass(frozen=True)
class Span:
    """The integrations of one field in one MS scan: ``[start_s, end_s]`` (MJD seconds, the
    rows' TIME +- INTERVAL/2), its MS scan number and OBS_MODE."""

    scan: int
    field_id: int
    field_name: str
    start_s: float
    end_s: float
    obs_mode: str


def _field(row: str, name: str) -> str:
    m = re.search(rf"<{name}>(.*?)</{name}>", row, re.S)
    if m is None:
        raise ValueError(f"ASDM row without <{name}>: {row[:200]}")
    return m.group(1).strip()


def _set(row: str, name: str, value: str) -> str:
    return re.sub(rf"<{name}>.*?</{name}>", f"<{name}> {value} </{name}>", row, count=1,
                  flags=re.S)


def _split(text: str) -> tuple[str, list[str], str]:
    rows = _ROW.findall(text)
    if not rows:
        return text, [], ""
    head = text[: text.index(rows[0])]
    tail = text[text.rindex(rows[-1]) + len(rows[-1]):]
    return head, rows, tail


def _join(head: str, rows: list[str], tail: str) -> str:
    return head + "\n  ".join(rows) + tail


def _intents(obs_mode: str) -> tuple[list[str], str]:
    """``CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_FLUX#ON_SOURCE`` -> scan intents, subscan
    intent."""
    parts = [p.strip() for p in obs_mode.split(",") if p.strip()]
    scan = list(dict.fromkeys(p.split("#", 1)[0] for p in parts)) or ["OBSERVE_TARGET"]
    sub = next((p.split("#", 1)[1] for p in parts if "#" in p), "ON_SOURCE")
    return scan, sub


def _array(values: list[str]) -> str:
    return f"1 {len(values)} " + " ".join(values) + " "


def _entity(row: str, name: str, uid: str | None) -> str:
    if not uid:
        return row
    return re.sub(rf'(<{name}>\s*<EntityRef entityId=")[^"]*"', rf'\g<1>{uid}"', row, count=1)


def _execblocks(asdm: Path, eb_id: str, uids: dict[str, str]) -> None:
    """Keep the one ExecBlock the data are in (MS2ASDM may leave a stub for the last
    integration) and give it, and its scheduling block, the archive's UIDs."""
    for table, key, ref in (("ExecBlock.xml", "execBlockUID", "execblock"),
                            ("SBSummary.xml", "sbSummaryUID", "schedblock")):
        path = asdm / table
        head, rows, tail = _split(path.read_text())
        if table == "ExecBlock.xml":
            rows = [r for r in rows if _field(r, "execBlockId") == eb_id]
        path.write_text(_join(head, [_entity(r, key, uids.get(ref)) for r in rows], tail))


def restructure(asdm: Path, spans: list[Span], spw_names: list[str],
                uids: dict[str, str] | None = None) -> dict[str, int]:
    """Rewrite ``asdm``'s Main/Subscan/Scan/SpectralWindow tables from ``spans`` (and the
    ExecBlock / scheduling block UIDs from ``uids``: ``execblock``, ``schedblock``); returns
    counts (scans, subscans, main rows)."""
    asdm = Path(asdm)
    subscan_of: dict[tuple[int, int], int] = {}
    for s in sorted(spans, key=lambda s: s.start_s):
        n = sum(1 for k in subscan_of if k[0] == s.scan)
        subscan_of.setdefault((s.scan, s.field_id), n + 1)

    def span_at(t_s: float, field_id: int) -> Span:
        for s in spans:
            if s.field_id == field_id and s.start_s - 1e-3 <= t_s <= s.end_s + 1e-3:
                return s
        raise ValueError(f"ASDM integration at {t_s:.3f} s (field {field_id}) is in no scan")

    main = asdm / "Main.xml"
    head, rows, tail = _split(main.read_text())
    eb_id = _field(rows[0], "execBlockId")
    out: list[str] = []
    times: dict[tuple[int, int], set[int]] = {}
    for row in rows:
        t_s = int(_field(row, "time")) / NS
        fid = int(_field(row, "fieldId").rsplit("_", 1)[1])
        s = span_at(t_s, fid)
        row = _set(row, "scanNumber", str(s.scan))
        row = _set(row, "subscanNumber", str(subscan_of[(s.scan, fid)]))
        times.setdefault((s.scan, fid), set()).add(int(_field(row, "time")))
        out.append(row)
    main.write_text(_join(head, out, tail))
    _execblocks(asdm, eb_id, uids or {})

    sub_path = asdm / "Subscan.xml"
    head, rows, tail = _split(sub_path.read_text())
    template = rows[0]
    sub_rows = []
    by_scan: dict[int, list[Span]] = {}
    for s in sorted(spans, key=lambda s: (s.scan, subscan_of[(s.scan, s.field_id)])):
        by_scan.setdefault(s.scan, []).append(s)
        n_int = len(times.get((s.scan, s.field_id), ())) or 1
        row = _set(template, "scanNumber", str(s.scan))
        row = _set(row, "subscanNumber", str(subscan_of[(s.scan, s.field_id)]))
        row = _set(row, "startTime", str(round(s.start_s * NS)))
        row = _set(row, "endTime", str(round(s.end_s * NS)))
        row = _set(row, "fieldName", s.field_name)
        row = re.sub(r"<subscanIntent>.*?</subscanIntent>",
                     f"<subscanIntent>{_intents(s.obs_mode)[1]}</subscanIntent>", row)
        row = _set(row, "numIntegration", str(n_int))
        row = _set(row, "numSubintegration", _array(["0"] * n_int))
        row = _set(row, "execBlockId", eb_id)
        sub_rows.append(row)
    sub_path.write_text(_join(head, sub_rows, tail))

    scan_path = asdm / "Scan.xml"
    head, rows, tail = _split(scan_path.read_text())
    template = rows[0]
    scan_rows = []
    for scan, members in sorted(by_scan.items()):
        intents, _ = _intents(members[0].obs_mode)
        row = _set(template, "scanNumber", str(scan))
        row = _set(row, "startTime", str(round(min(m.start_s for m in members) * NS)))
        row = _set(row, "endTime", str(round(max(m.end_s for m in members) * NS)))
        row = _set(row, "numIntent", str(len(intents)))
        row = _set(row, "numSubscan", str(len(members)))
        row = re.sub(r"<scanIntent>.*?</scanIntent>",
                     f"<scanIntent> {_array(intents)}</scanIntent>", row, flags=re.S)
        row = re.sub(r"<calDataType>.*?</calDataType>",
                     f"<calDataType> {_array(['FULL_RESOLUTION_CROSS'] * len(intents))}"
                     "</calDataType>", row, flags=re.S)
        row = _set(row, "calibrationOnLine", _array(["false"] * len(intents)))
        row = _set(row, "execBlockId", eb_id)
        scan_rows.append(row)
    scan_path.write_text(_join(head, scan_rows, tail))

    spw_path = asdm / "SpectralWindow.xml"
    head, rows, tail = _split(spw_path.read_text())
    named = []
    for row in rows:
        i = int(_field(row, "spectralWindowId").rsplit("_", 1)[1])
        row = re.sub(r"\s*<name>.*?</name>", "", row, flags=re.S)
        if i < len(spw_names) and spw_names[i]:
            row = row.replace("</row>", f"<name> {spw_names[i]} </name> </row>")
        named.append(row)
    spw_path.write_text(_join(head, named, tail))
    return {"scans": len(scan_rows), "subscans": len(sub_rows), "main_rows": len(out)}

