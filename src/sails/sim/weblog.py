"""A small stand-in for the pipeline weblog that an SRDP restore ships (static HTML)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any


def write_weblog(folder: Path, truth: dict[str, Any]) -> Path:
    """Write ``pipeline-<date>/html/index.html`` (+ one observation page); return index."""
    stamp = truth["ebs"][-1]["start_utc"].replace("/", "").replace(":", "")
    stamp = f"{stamp[:8]}T{stamp[9:]}"
    root = folder / f"pipeline-{stamp}" / "html"
    root.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    rows_eb = "".join(
        f"<tr><td>{esc(e['uid'])}</td><td>{esc(e['ms'])}</td><td>{esc(e['date'])}</td>"
        f"<td>{len(e['scans'])}</td><td>{e['flagged_fraction']:.3f}</td></tr>"
        for e in truth["ebs"])
    rows_t = "".join(
        f"<tr><td>{esc(t['name'])}</td><td>{t['ra_deg']:.6f}</td><td>{t['dec_deg']:.6f}</td>"
        "</tr>" for t in truth["targets"])
    rows_s = "".join(
        f"<tr><td>{s['id']}</td><td>{esc(s['name'])}</td><td>{s['center_ghz']:.6f}</td>"
        f"<td>{s['nchan']}</td><td>{s['chan_width_mhz']:.6f}</td></tr>"
        for s in truth["spws"])
    title = f"Pipeline restore: {esc(truth['mous_uid'])} ({esc(truth['proposal_id'])})"
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>
<p>Simulated by sails.sim (seed {truth['seed']}). Calibrated data restored into
{'CORRECTED_DATA' if truth['datacolumn'] == 'corrected' else 'DATA'}.</p>
<p><a href="t1-1.html">Observation overview</a></p>
<h2>Execution blocks</h2>
<table border="1"><tr><th>EB</th><th>MS</th><th>date</th><th>scans</th><th>flagged</th></tr>
{rows_eb}</table>
<h2>Science targets</h2>
<table border="1"><tr><th>name</th><th>RA (deg)</th><th>Dec (deg)</th></tr>{rows_t}</table>
</body></html>
"""
    (root / "index.html").write_text(page)
    (root / "t1-1.html").write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Overview</title></head><body>"
        f"<h1>Spectral windows</h1><table border='1'><tr><th>id</th><th>name</th>"
        f"<th>centre (GHz, LSRK)</th><th>channels</th><th>width (MHz)</th></tr>{rows_s}"
        f"</table><p><a href='index.html'>back</a></p></body></html>\n")
    (folder / "README").write_text(
        f"Pipeline weblog for {truth['mous_uid']} (simulated). Open {root.relative_to(folder)}"
        "/index.html.\n")
    return root / "index.html"
