"""A tiny PNG writer (zlib + struct): scatter plots without matplotlib, which is not a dependency."""
from __future__ import annotations

import struct
import zlib

import numpy as np

from .._files import atomic_write

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """The PNG bytes of an (H, W, 3) uint8 image (8-bit RGB, no filtering)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"encode_png: expected an (H, W, 3) uint8 array, got shape {rgb.shape} dtype {rgb.dtype}")
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 before each row
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))


def scatter_png(path, xy: np.ndarray, groups, size: int = 480, radius: int = 4) -> None:
    """Write a scatter plot of points ``xy`` (N, 2), coloured by group index, as a PNG."""
    xy = np.asarray(xy, dtype=np.float64)
    img = np.full((size, size, 3), 255, dtype=np.uint8)
    lo, hi = xy.min(0), xy.max(0)
    pos = (xy - lo) / np.where(hi > lo, hi - lo, 1.0) * (size - 4 * radius) + 2 * radius  # (N, 2) pixels
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disc = yy**2 + xx**2 <= radius**2
    for (px, py), gi in zip(pos, groups):
        cx, cy = int(px), size - 1 - int(py)  # y axis points up
        ys, xs = cy + yy[disc], cx + xx[disc]
        ok = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
        img[ys[ok], xs[ok]] = PALETTE[int(gi) % len(PALETTE)]
    atomic_write(path, encode_png(img))
