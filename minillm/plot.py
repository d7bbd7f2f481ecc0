"""Pictures without matplotlib (not a dependency): a tiny PNG writer (zlib + struct), a heatmap
for attention weights, a scatter plot for embeddings and line plots for training curves. Every example that saves a picture uses
these; they sit at the bottom of the layer diagram (NumPy and ``_files`` only)."""
from __future__ import annotations

import struct
import zlib

import numpy as np

from ._files import atomic_write

__all__ = ["PALETTE", "encode_png", "write_png", "heatmap_rgb", "scatter_png", "lines_png"]

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


def _segment(img, x0, y0, x1, y1, colour, thick: int = 1) -> None:
    """Draw a straight line (sampled at one point per pixel of its longer side)."""
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.linspace(x0, x1, n).round().astype(int)
    ys = np.linspace(y0, y1, n).round().astype(int)
    h, w, _ = img.shape
    for d in range(-(thick // 2), thick - thick // 2):
        for yy, xx in ((ys + d, xs), (ys, xs + d)):
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            img[yy[ok], xx[ok]] = colour


def lines_png(path, series, width: int = 640, height: int = 360, margin: int = 12) -> tuple:
    """Write curves as a PNG: ``series`` is a list of ``(xs, ys)``, drawn in ``PALETTE`` order
    (blue, orange, green, red, ...) on shared axes, with a grey frame and a grey line at y = 0
    when 0 is in range. There is no text (no font renderer): the caller says what the colours
    and the axes are. Returns ``(x_min, x_max, y_min, y_max)``, the corners of the frame."""
    series = [(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in series]
    series = [(x[np.isfinite(y)], y[np.isfinite(y)]) for x, y in series]
    if not series or not any(len(x) for x, _ in series):
        raise ValueError("lines_png: no finite points to draw")
    for i, (x, y) in enumerate(series):
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"lines_png: series {i} has xs of shape {x.shape} and ys of shape {y.shape}")
    xs = np.concatenate([x for x, _ in series])
    ys = np.concatenate([y for _, y in series])
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    img = np.full((height, width, 3), 255, dtype=np.uint8)

    def px(x, y):  # data -> pixel (y axis points up)
        return (margin + (x - x0) / (x1 - x0) * (width - 2 * margin - 1),
                height - 1 - margin - (y - y0) / (y1 - y0) * (height - 2 * margin - 1))

    grey = (190, 190, 190)
    (a, b), (c, d) = px(x0, y0), px(x1, y1)
    for seg in ((a, b, c, b), (a, d, c, d), (a, b, a, d), (c, b, c, d)):
        _segment(img, *seg, grey)
    if y0 < 0 < y1:
        _, zy = px(x0, 0.0)
        _segment(img, a, zy, c, zy, grey)
    for k, (x, y) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        pts = [px(xi, yi) for xi, yi in zip(x, y)]
        for (p0, q0), (p1, q1) in zip(pts, pts[1:]):
            _segment(img, p0, q0, p1, q1, colour, thick=2)
        if len(pts) == 1:
            _segment(img, pts[0][0] - 2, pts[0][1], pts[0][0] + 2, pts[0][1], colour, thick=3)
    write_png(path, img)
    return float(x0), float(x1), float(y0), float(y1)
