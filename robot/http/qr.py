"""The pickup page's own link as a QR code, drawn inline as SVG (segno), so a buyer who opened
the link on a computer can move it to their phone.

The SVG is paths only (no script, no style attribute, nothing fetched), so it fits the page's
Content-Security-Policy as it is. This module never sees a code; the link it draws is the
page's own, already in the address bar.
"""

from __future__ import annotations

import segno

#: Modules of white around the symbol (the QR standard asks for four).
QUIET_ZONE = 4


def svg(url: str) -> str:
    """An ``<svg class="qr">`` of ``url`` (error correction M), sized by the page's CSS."""
    code = segno.make(url, error="m", micro=False, boost_error=False)
    return code.svg_inline(scale=1, border=QUIET_ZONE, dark="#000", light="#fff",
                           omitsize=True, svgclass="qr", lineclass=None,
                           title="二维码 QR code")
