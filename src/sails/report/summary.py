"""One line of science results per target (self-cal gain, image noise, lines), shared by
``sails show`` and anything else that prints a terminal summary."""

from __future__ import annotations

from sails.report.data import line_name
from sails.report.html import fmt_flux, fmt_num


def _f(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def selfcal_text(m: dict) -> str:
    a, b = _f(m.get("snr_initial")), _f(m.get("snr_final"))
    parts = []
    if m.get("success") is False:
        parts.append("not applied")
    if a is not None and b is not None:
        parts.append(f"S/N {a:.3g} -> {b:.3g}" + (f" (x{b / a:.2f})" if a else ""))
    ra, rb = _f(m.get("rms_initial")), _f(m.get("rms_final"))
    if ra is not None and rb is not None:
        parts.append(f"rms {fmt_flux(ra)} -> {fmt_flux(rb)}")
    if m.get("solints_accepted"):
        parts.append("solints " + ",".join(map(str, m["solints_accepted"])))
    if m.get("reason") and m.get("success") is False:
        parts.append(str(m["reason"]))
    return "; ".join(parts)


def image_text(m: dict) -> str:
    parts = []
    if _f(m.get("rms")) is not None:
        t = f"rms {fmt_flux(m['rms'])}"
        if _f(m.get("rms_ratio")) is not None:
            t += f" (x{float(m['rms_ratio']):.2f} theoretical)"
        parts.append(t)
    if _f(m.get("peak")) is not None:
        parts.append(f"peak {fmt_flux(m['peak'])}")
    if _f(m.get("dynamic_range")) is not None:
        parts.append(f"DR {fmt_num(m['dynamic_range'])}")
    beam = m.get("beam")
    if isinstance(beam, list | tuple) and len(beam) >= 2:
        parts.append(f"beam {fmt_num(beam[0])}\" x {fmt_num(beam[1])}\"")
    return "; ".join(parts)


def target_results(products: list[dict]) -> list[dict]:
    """Per target: self-cal and continuum summaries, the lines imaged, product count."""
    out: dict[str, dict] = {}
    for p in products:
        t = p.get("target") or ""
        if not t:
            continue
        row = out.setdefault(t, {"target": t, "selfcal": "", "continuum": "", "lines": [],
                                 "products": 0})
        row["products"] += 1
        m = p.get("metrics") or {}
        kind = p.get("kind")
        if kind == "selfcal_summary":
            row["selfcal"] = selfcal_text(m)
        elif kind == "cont_image":
            row["continuum"] = image_text(m)
        elif kind == "cube":
            name = line_name(p)
            if name not in row["lines"]:
                row["lines"].append(name)
    return [out[k] for k in sorted(out)]
