"""`shapes`: a seeded, procedurally drawn image-classification task (numpy only).

Each image shows one filled shape (the label) at a random pose (rotation, scale, stretch,
position) and colour, on a two-colour gradient background, with distractor strokes and blobs
behind and in front of it, plus pixel noise. Every random choice is drawn up front from one
seeded generator and is independent of the resolution, so `shapes:size=64` shows the same
scenes as `shapes:size=32`, only sharper. Rendering is vectorised over chunks of images and
antialiased by 2x supersampling.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Order matters: class index i is SHAPE_CLASSES[i]; `classes=K` uses the first K.
SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "hexagon",
    "arrow",
    "crescent",
    "semicircle",
    "tee",
)
DEFAULT_N = 12000
DEFAULT_SIZE = 32
DEFAULT_CLASSES = 10

# Each scene draws a difficulty d ~ U(0, 1); every knob goes linearly from its easy value (d = 0)
# to its hard value (d = 1). The easy end gives a small network a learning signal within a few
# epochs; the hard end (low contrast, small stretched shapes, occluding distractors, noise) keeps
# a strong network below 100%. Lengths are in units of half the image width; colours in 0..255.
DIFFICULTY: dict[str, tuple[float, float]] = {
    "min_scale": (0.55, 0.34),  # smallest shape radius (the largest is 0.78)
    "stretch": (0.05, 0.24),  # largest |log aspect ratio|
    "min_contrast": (140.0, 45.0),  # RGB distance between shape and background colour, at least
    "shade": (10.0, 70.0),  # largest brightness ramp across the shape
    "bg_ramp": (20.0, 90.0),  # largest colour ramp across the background
    "max_distractors": (1.0, 4.0),  # count per image: 0..max
    "front": (0.10, 0.45),  # probability that a distractor lies in front of the shape
    "max_noise": (4.0, 22.0),  # largest Gaussian pixel-noise sigma (the smallest is 2)
}
# Not tied to the difficulty: sizes of the distractors.
LINE_WIDTH = (0.04, 0.10)  # half-width of distractor strokes
BLOB_RADIUS = (0.07, 0.20)
MAX_SCALE = 0.78
MIN_NOISE = 2.0
_MAX_DISTRACTORS = 4
_CHUNK = 256


def _poly(u: np.ndarray, v: np.ndarray, k: int, r_in: float, phase: float = 0.0) -> np.ndarray:
    inside = np.ones(u.shape, dtype=bool)
    for i in range(k):
        a = phase + 2 * np.pi * i / k
        inside &= (u * np.cos(a) + v * np.sin(a)) < r_in
    return inside


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    sector = 2 * np.pi / 5
    phi = np.arctan2(v, u)
    phi = np.abs(phi - sector * np.round(phi / sector))
    r = np.hypot(u, v)
    px, py = r * np.cos(phi), r * np.sin(phi)
    ri = 0.45
    wx, wy = ri * np.cos(np.pi / 5), ri * np.sin(np.pi / 5)
    # Inside the spike triangle (origin, outer vertex (1, 0), inner vertex w) in the folded wedge.
    return (wx - 1) * py - wy * (px - 1) > 0


_MASKS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: np.hypot(u, v) < 0.85,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) < 0.72,
    "triangle": lambda u, v: _poly(u, v, 3, 0.53, np.pi / 6),
    "star": _star,
    "cross": lambda u, v: (
        ((np.abs(u) < 0.27) & (np.abs(v) < 0.9)) | ((np.abs(v) < 0.27) & (np.abs(u) < 0.9))
    ),
    "ring": lambda u, v: (np.hypot(u, v) < 0.9) & (np.hypot(u, v) > 0.52),
    "diamond": lambda u, v: np.abs(u) / 0.95 + np.abs(v) / 0.55 < 1,
    "hexagon": lambda u, v: _poly(u, v, 6, 0.92 * np.cos(np.pi / 6)),
    "arrow": lambda u, v: (
        ((u > -0.9) & (u < 0.15) & (np.abs(v) < 0.2))
        | ((u >= 0.15) & (u < 0.9) & (np.abs(v) < 0.6 * (0.9 - u) / 0.75))
    ),
    "crescent": lambda u, v: (np.hypot(u, v) < 0.88) & (np.hypot(u - 0.42, v) > 0.72),
    "semicircle": lambda u, v: (np.hypot(u, v + 0.38) < 0.95) & (v > -0.38),
    "tee": lambda u, v: (
        ((np.abs(u) < 0.85) & (v > 0.45) & (v < 0.85))
        | ((np.abs(u) < 0.2) & (v > -0.85) & (v <= 0.45))
    ),
}


def _knob(key: str, d: np.ndarray) -> np.ndarray:
    easy, hard = DIFFICULTY[key]
    return easy + (hard - easy) * d


def _draw_params(n: int, classes: int, seed: int) -> dict[str, np.ndarray]:
    """Every random choice for n scenes, in a fixed order, independent of the resolution."""
    rng = np.random.default_rng([seed, 7919])
    p: dict[str, np.ndarray] = {}
    p["y"] = rng.permutation(np.arange(n) % classes).astype(np.int64)
    d = rng.uniform(0, 1, n)
    p["difficulty"] = d
    p["angle"] = rng.uniform(0, 2 * np.pi, n)
    scale = rng.uniform(_knob("min_scale", d), MAX_SCALE)
    stretch = np.exp(rng.uniform(-1, 1, n) * _knob("stretch", d))
    p["sx"], p["sy"] = scale * stretch, scale / stretch
    p["centre"] = rng.uniform(-1, 1, (n, 2)) * (1 - scale)[:, None] * 0.85
    bg = rng.uniform(0, 255, (n, 3))
    ramp_dir = rng.uniform(0, 2 * np.pi, n)
    ramp = rng.normal(0, 1, (n, 3))
    ramp *= (rng.uniform(0, _knob("bg_ramp", d)) / np.linalg.norm(ramp, axis=1))[:, None]
    p["bg"], p["bg_dir"], p["bg_ramp"] = bg, ramp_dir, ramp
    # Shape colour: redraw (vectorised) until far enough from the background colour; the few
    # that never get there take the complement of the background.
    fg = rng.uniform(0, 255, (n, 3))
    need = _knob("min_contrast", d)
    for _ in range(64):
        close = np.linalg.norm(fg - bg, axis=1) < need
        if not close.any():
            break
        fg[close] = rng.uniform(0, 255, (int(close.sum()), 3))
    close = np.linalg.norm(fg - bg, axis=1) < need
    fg[close] = 255 - bg[close]
    p["fg"] = fg
    p["shade_dir"] = rng.uniform(0, 2 * np.pi, n)
    p["shade"] = rng.uniform(0, _knob("shade", d)) * rng.choice([-1.0, 1.0], n)
    k = _MAX_DISTRACTORS
    count = rng.integers(0, np.rint(_knob("max_distractors", d)).astype(np.int64) + 1)
    p["d_active"] = np.arange(k)[None, :] < count[:, None]
    p["d_line"] = rng.random((n, k)) < 0.6
    p["d_front"] = rng.random((n, k)) < _knob("front", d)[:, None]
    p["d_a"] = rng.uniform(-1.1, 1.1, (n, k, 2))  # line start / blob centre
    p["d_b"] = rng.uniform(-1.1, 1.1, (n, k, 2))  # line end
    p["d_width"] = rng.uniform(*LINE_WIDTH, (n, k))
    p["d_radius"] = rng.uniform(*BLOB_RADIUS, (n, k, 2))
    p["d_colour"] = rng.uniform(0, 255, (n, k, 3))
    p["noise"] = rng.uniform(MIN_NOISE, _knob("max_noise", d))
    # float32 keeps the rendering arrays float32 (half the memory traffic of float64).
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in p.items()}


def _distractor_mask(
    px: np.ndarray, py: np.ndarray, p: dict[str, np.ndarray], idx: np.ndarray, k: int
) -> np.ndarray:
    """Masks (len(idx), G, G) of distractor slot k for the scenes `idx`."""
    f32 = np.float32
    ax = p["d_a"][idx, k, 0].astype(f32)[:, None, None]
    ay = p["d_a"][idx, k, 1].astype(f32)[:, None, None]
    out = np.empty((len(idx), px.shape[2], py.shape[1]), dtype=bool)
    line = p["d_line"][idx, k]
    li, bi = np.flatnonzero(line), np.flatnonzero(~line)
    if li.size:
        bx = p["d_b"][idx[li], k, 0].astype(f32)[:, None, None]
        by = p["d_b"][idx[li], k, 1].astype(f32)[:, None, None]
        lx, ly = ax[li], ay[li]
        dx, dy = bx - lx, by - ly
        # Distance to the segment from (lx, ly) to (bx, by).
        t = ((px - lx) * dx + (py - ly) * dy) / np.maximum(dx * dx + dy * dy, f32(1e-6))
        np.clip(t, 0, 1, out=t)
        d2 = (px - lx - t * dx) ** 2 + (py - ly - t * dy) ** 2
        w = p["d_width"][idx[li], k].astype(f32)[:, None, None]
        out[li] = d2 < w * w
    if bi.size:
        r = p["d_radius"][idx[bi], k].astype(f32)
        rx, ry = r[:, 0, None, None], r[:, 1, None, None]
        out[bi] = ((px - ax[bi]) / rx) ** 2 + ((py - ay[bi]) / ry) ** 2 < 1
    return out


def _render(p: dict[str, np.ndarray], sl: slice, size: int, classes: int, seed: int) -> np.ndarray:
    ss = 2 if size <= 128 else 1  # supersampling for antialiased edges
    g = size * ss
    coords = (np.arange(g, dtype=np.float32) + 0.5) / g * 2 - 1
    px = coords[None, None, :]  # x grows to the right
    py = -coords[None, :, None]  # y grows upwards
    f32 = np.float32
    m = sl.stop - sl.start

    def col(a: np.ndarray) -> np.ndarray:
        return a[:, None, None, :].astype(np.float32)

    def direction(angle: np.ndarray) -> np.ndarray:
        c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        return (px * c + py * s).astype(np.float32)  # in [-1.4, 1.4]

    img = col(p["bg"][sl]) + direction(p["bg_dir"][sl])[..., None] * col(p["bg_ramp"][sl]) / 1.4
    img = np.broadcast_to(img, (m, g, g, 3)).copy()

    def paint(idx: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
        sub = img[idx]
        np.copyto(sub, np.broadcast_to(colour, sub.shape), where=mask[..., None])
        img[idx] = sub

    def distractors(front: bool) -> None:
        for k in range(_MAX_DISTRACTORS):
            on = p["d_active"][sl, k] & (p["d_front"][sl, k] == front)
            idx = np.flatnonzero(on)
            if idx.size:
                mask = _distractor_mask(px, py, p, idx + sl.start, k)
                paint(idx, mask, col(p["d_colour"][idx + sl.start, k]))

    distractors(front=False)
    cx = p["centre"][sl, 0].astype(f32)[:, None, None]
    cy = p["centre"][sl, 1].astype(f32)[:, None, None]
    ang = p["angle"][sl][:, None, None]
    cos, sin = np.cos(ang).astype(f32), np.sin(ang).astype(f32)
    dx, dy = px - cx, py - cy
    u = (cos * dx + sin * dy) / p["sx"][sl].astype(f32)[:, None, None]
    v = (cos * dy - sin * dx) / p["sy"][sl].astype(f32)[:, None, None]
    mask = np.zeros((m, g, g), dtype=bool)
    ys = p["y"][sl]
    for c in range(classes):
        idx = np.flatnonzero(ys == c)
        if idx.size:
            mask[idx] = _MASKS[SHAPE_CLASSES[c]](u[idx], v[idx])
    fg = col(p["fg"][sl]) + direction(p["shade_dir"][sl])[..., None] * (
        p["shade"][sl][:, None, None, None] / 1.4
    )
    img += mask[..., None] * (fg - img)
    distractors(front=True)
    if ss > 1:
        img = img.reshape(m, size, ss, size, ss, 3).mean(axis=(2, 4))
    noise_rng = np.random.default_rng([seed, 104729, sl.start])
    img += (
        noise_rng.standard_normal(img.shape, dtype=np.float32)
        * p["noise"][sl].astype(np.float32)[:, None, None, None]
    )
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def generate(
    n: int = DEFAULT_N, size: int = DEFAULT_SIZE, seed: int = 0, classes: int = DEFAULT_CLASSES
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Draw `n` RGB images (n, size, size, 3) uint8, balanced labels (n,) and the class names."""
    p = _draw_params(n, classes, seed)
    x = np.empty((n, size, size, 3), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        x[sl] = _render(p, sl, size, classes, seed)
    return x, p["y"], list(SHAPE_CLASSES[:classes])
