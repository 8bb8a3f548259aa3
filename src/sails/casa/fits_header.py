"""The primary header of a FITS file, read with the standard library only.

Job-side code runs in a CASA container, which has no astropy; the feather step only needs a
few keywords of a TP cube's header (unit, frame, beam, spectral axis) to decide whether it
can take the cube, so it reads the 80-character cards itself.
"""

from __future__ import annotations

from pathlib import Path

BLOCK = 2880  # bytes per FITS header block
CARD = 80  # bytes per header card

HeaderValue = str | int | float | bool


def primary_header(path: str | Path) -> dict[str, HeaderValue]:
    """Keyword -> value of the primary HDU (ValueError if it is not a FITS file)."""
    out: dict[str, HeaderValue] = {}
    with open(path, "rb") as f:
        first = True
        while True:
            block = f.read(BLOCK)
            if len(block) < BLOCK:
                raise ValueError("not a FITS file, or its header is truncated (no END card)")
            if first and not block.startswith(b"SIMPLE  ="):
                raise ValueError("not a FITS file (no SIMPLE card)")
            first = False
            for i in range(0, BLOCK, CARD):
                card = block[i:i + CARD].decode("ascii", "replace")
                key = card[:8].strip()
                if key == "END":
                    return out
                if card[8:10] == "= ":
                    out[key] = _value(card[10:])


def _value(text: str) -> HeaderValue:
    text = text.strip()
    if text.startswith("'"):  # a string: '' inside stands for one quote
        body, i = [], 1
        while i < len(text):
            if text[i] == "'":
                if text[i + 1:i + 2] == "'":
                    body.append("'")
                    i += 2
                    continue
                break
            body.append(text[i])
            i += 1
        return "".join(body).rstrip()
    raw = text.split("/", 1)[0].strip()
    if raw in ("T", "F"):
        return raw == "T"
    for kind in (int, float):
        try:
            return kind(raw.replace("D", "E")) if kind is float else kind(raw)
        except ValueError:
            pass
    return raw
