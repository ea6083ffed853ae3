"""Running the app on a real loopback socket for the browser tests, Debian's Chromium for
Playwright, and a small PNG reader so a screenshot can be handed to a QR decoder."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.applications import Starlette

from robot.http.server import HttpServer

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browsers are not used
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PHONE = {"width": 390, "height": 844}


def loopback_socket() -> socket.socket:
    """A socket bound to a free loopback port (its port known before the app is built)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(app: Starlette, sock: socket.socket) -> Iterator[str]:
    """``app`` on a real uvicorn (in its own thread and loop) on ``sock``; yields its base
    URL and stops the server on exit."""
    server = HttpServer(app, sock)
    port = server.port
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(server.serve(stop))
        while not server.started:
            await asyncio.sleep(0.01)
        started.set()
        await task

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(kind: int, line: bytearray, prior: bytes | bytearray, bpp: int) -> None:
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = prior[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
        elif kind == 4:
            line[i] = (line[i] + _paeth(left, up, prior[i - bpp] if i >= bpp else 0)) & 0xFF


def png_gray(data: bytes) -> tuple[int, int, bytes]:
    """``(width, height, pixels)`` of an 8-bit RGB(A) PNG (what Chromium writes), one grey
    byte per pixel."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, "only 8-bit RGB(A), no interlace"
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prior = bytearray(stride)
    gray = bytearray(width * height)
    for y in range(height):
        start = y * (stride + 1)
        line = bytearray(raw[start + 1:start + 1 + stride])
        _unfilter(raw[start], line, prior, bpp)
        gray[y * width:(y + 1) * width] = bytes(
            (line[x] * 299 + line[x + 1] * 587 + line[x + 2] * 114) // 1000
            for x in range(0, stride, bpp))
        prior = line
    return width, height, bytes(gray)
