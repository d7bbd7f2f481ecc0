"""Pictures without matplotlib (not a dependency): a tiny PNG writer (zlib + struct), a heatmap
for attention weights and a scatter plot for embeddings. Every example that saves a picture uses
these; they sit at the bottom of the layer diagram (NumPy and ``_files`` only)."""
from __future__ import annotations

import struct
import zlib

import numpy as np

from ._files import atomic_write

__all__ = ["PALETTE", "encode_png", "write_png", "heatmap_rgb", "scatter_png"]

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


def write_png(path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as a PNG (atomically)."""
    atomic_write(path, encode_png(rgb))


def heatmap_rgb(matrix: np.ndarray, cell: int = 16) -> np.ndarray:
    """(T, S) non-negative weights -> an image, white (0) to dark blue (the max), ``cell`` pixels
    per entry: (T·cell, S·cell, 3) uint8."""
    m = np.asarray(matrix, dtype=np.float64)
    m = m / max(float(m.max()), 1e-12)
    white, blue = np.array([255, 255, 255], float), np.array([8, 48, 107], float)
    rgb = (white + m[..., None] * (blue - white)).round().astype(np.uint8)  # (T, S, 3)
    return np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)


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
    write_png(path, img)
