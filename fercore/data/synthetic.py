"""Synthetic grayscale cartoon faces (48x48 by default) whose brows, eyes and mouth show one of the seven emotions."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fercore.labels import EMOTIONS

_CHUNK = 128  # faces rendered at once, so that the arrays stay small enough for the cache

# Face geometry in head units: the head's half-width is 1, x to the right, y downwards, origin at its centre.
_NEUTRAL: dict[str, float] = {
    "brow_y": -0.50,  # mean height of the brows
    "brow_tilt": 0.0,  # inner end minus outer end height: > 0 brows slope down toward the centre (anger)
    "brow_in": 0.15,  # x of the inner ends
    "brow_arch": 0.04,
    "eye_h": 0.085,  # half-height of the eye opening
    "mouth_y": 0.62,
    "mouth_w": 0.34,  # half-width
    "lift": 0.0,  # corner height above the centre: > 0 smile, < 0 frown
    "open_top": 0.0,
    "open_bot": 0.0,
    "round": 1.0,  # opening profile exponent: 1 lens-shaped, 0.5 elliptic (the surprised O)
    "sneer": 0.0,  # one-sided raise of the upper lip (disgust)
    "wrinkle": 0.0,  # nose wrinkles (disgust)
    "teeth": 0.0,
}

# Change from neutral at full intensity; "happy_open" replaces "happy" for open-mouthed smiles.
_DELTAS: dict[str, dict[str, float]] = {
    "angry": {"brow_y": 0.10, "brow_tilt": 0.20, "brow_in": -0.04, "brow_arch": -0.04, "eye_h": -0.02,
              "mouth_w": -0.08, "lift": -0.03},
    "disgust": {"brow_y": 0.08, "brow_tilt": 0.08, "eye_h": -0.035, "mouth_y": -0.03, "lift": -0.08,
                "open_bot": 0.02, "sneer": 0.2, "wrinkle": 1.0},
    "fear": {"brow_y": -0.10, "brow_tilt": -0.12, "brow_in": -0.03, "eye_h": 0.06, "mouth_w": 0.14,
             "lift": -0.08, "open_top": 0.04, "open_bot": 0.10},
    "happy": {"lift": 0.20, "mouth_w": 0.10, "eye_h": -0.02},
    "happy_open": {"lift": 0.16, "mouth_w": 0.10, "eye_h": -0.02, "open_bot": 0.22,
                   "teeth": 1.0},
    "neutral": {},
    "sad": {"brow_y": -0.02, "brow_tilt": -0.16, "eye_h": -0.015, "mouth_y": 0.03, "lift": -0.14},
    "surprise": {"brow_y": -0.16, "brow_arch": 0.05, "eye_h": 0.07, "mouth_w": -0.18, "open_top": 0.12,
                 "open_bot": 0.14, "round": -0.5},
}

# Person-to-person spread, independent of the expression, so that weak expressions overlap with neutral.
_JITTER: dict[str, float] = {
    "brow_y": 0.04, "brow_tilt": 0.04, "brow_in": 0.02, "brow_arch": 0.02, "eye_h": 0.015,
    "mouth_y": 0.04, "mouth_w": 0.04, "lift": 0.035, "open_bot": 0.01,
}


def generate_faces(n: int, seed: int = 0, emotions: Sequence[str] = EMOTIONS,
                   size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """n faces as uint8 [n, size, size] and their labels as int64 indices into labels.EMOTIONS (not into `emotions`)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    unknown = [e for e in emotions if e not in EMOTIONS]
    if unknown or not emotions:
        raise ValueError(f"emotions must be a non-empty subset of {', '.join(EMOTIONS)}, got {list(emotions)!r}")
    classes = np.array([EMOTIONS.index(e) for e in dict.fromkeys(emotions)], dtype=np.int64)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(classes[np.arange(n) % len(classes)])
    params = _draw_params(labels, rng, size)
    faces = np.empty((n, size, size), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        part = {k: v[start:start + _CHUNK, None, None] for k, v in params.items()}
        faces[start:start + _CHUNK] = _render(part, size, rng)
    return faces, labels


def _draw_params(labels: np.ndarray, rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """Per-face expression geometry, pose, shading and noise, each a float32 array of length n."""
    n = len(labels)
    names = [EMOTIONS[i] for i in labels]
    is_open_smile = rng.random(n) < 0.4
    keys = [("happy_open" if name == "happy" and smile else name) for name, smile in zip(names, is_open_smile)]
    intensity = rng.uniform(0.3, 1.0, n)
    p: dict[str, np.ndarray] = {}
    for name, base in _NEUTRAL.items():
        delta = np.array([_DELTAS[k].get(name, 0.0) for k in keys])
        p[name] = base + intensity * delta + _JITTER.get(name, 0.0) * rng.standard_normal(n)
    p["eye_h"] = np.maximum(p["eye_h"], 0.03)
    p["mouth_w"] = np.maximum(p["mouth_w"], 0.08)
    p["open_bot"] = np.maximum(p["open_bot"], 0.0)
    p["sneer_side"] = rng.choice([-1.0, 1.0], n)
    p["teeth"] = p["teeth"] * (rng.random(n) < 0.7)
    p["scale"] = size * rng.uniform(0.34, 0.42, n)  # pixels per head unit
    p["aspect"] = rng.uniform(1.15, 1.4, n)  # head half-height in units
    p["cx"] = size / 2 + rng.normal(0, 0.04 * size, n)
    p["cy"] = size / 2 + rng.normal(0.05 * size, 0.04 * size, n)
    p["angle"] = rng.normal(0, 0.10, n)
    p["eye_x"] = rng.uniform(0.33, 0.42, n)
    p["eye_y"] = rng.uniform(-0.28, -0.18, n)
    p["eye_w"] = rng.uniform(0.13, 0.17, n)
    p["brow_w"] = rng.uniform(0.035, 0.06, n)  # half-thickness
    p["skin"] = rng.uniform(80, 220, n)
    p["ink"] = p["skin"] * rng.uniform(0.15, 0.45, n)
    p["bg"] = rng.uniform(10, 240, n)
    p["hair"] = np.where(rng.random(n) < 0.75, rng.uniform(10, 120, n), p["skin"])
    p["hairline"] = rng.uniform(-1.15, -0.7, n)
    p["light_x"] = rng.normal(0, 0.25, n)
    p["light_y"] = rng.normal(0, 0.15, n)
    p["contrast"] = rng.uniform(0.6, 1.3, n)
    p["blur"] = rng.uniform(0.2, 1.0, n)
    p["noise"] = rng.uniform(1.0, 9.0, n)
    p["flip"] = rng.random(n) < 0.5
    return {k: np.asarray(v, dtype=np.float32) for k, v in p.items()}


def _render(p: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a batch of faces from parameters shaped [b, 1, 1]; returns uint8 [b, size, size]."""
    grid = np.arange(size, dtype=np.float32) + 0.5
    px, py = grid[None, None, :] - p["cx"], grid[None, :, None] - p["cy"]
    cos, sin = np.cos(p["angle"]), np.sin(p["angle"])
    u = (px * cos + py * sin) / p["scale"]  # head coordinates of every pixel
    v = (-px * sin + py * cos) / p["scale"]
    s = p["scale"]
    img = np.broadcast_to(p["bg"], u.shape).astype(np.float32)
    img = _paint(img, np.maximum(np.abs(u) - 0.5, 0.9 - v), p["skin"] * 0.9, s)  # neck
    head = _ellipse_dist(u, v, 0.0, 0.0, 1.0, p["aspect"])
    img = _paint(img, head, p["skin"], s)
    hair_edge = p["hairline"] + 0.35 * u * u - v
    img = _paint(img, np.maximum(head, -hair_edge), p["hair"], s)
    ink, dark, white = p["ink"], p["ink"] * 0.35, np.minimum(p["skin"] + 60, 245)
    for side in (-1.0, 1.0):
        img = _paint(img, _brow_dist(u * side, v, p), ink, s)
        eye = _ellipse_dist(u * side, v, p["eye_x"], p["eye_y"], p["eye_w"], p["eye_h"])
        img = _paint(img, eye - 0.025, ink, s)  # lids
        img = _paint(img, eye + 0.01, white, s)
        iris = np.hypot(u * side - p["eye_x"], v - p["eye_y"]) - np.minimum(p["eye_w"] * 0.55, p["eye_h"] + 0.02)
        img = _paint(img, np.maximum(iris, eye + 0.01), dark, s)
        nostril = np.hypot(u * side - 0.08 - 0.03 * p["wrinkle"], v - 0.28 + 0.04 * p["wrinkle"]) - 0.035
        img = _paint(img, nostril, ink, s)
    for row in (-0.12, -0.03, 0.06):  # wrinkles across the nose bridge, disgust only
        line = np.maximum(np.abs(v - row + 0.25 * u * u) - 0.02, np.abs(u) - 0.13)
        img = _paint(img, line, ink, s, np.clip(p["wrinkle"], 0.0, 1.0))
    img = _paint_mouth(img, u, v, p)
    light = 1.0 + p["light_x"] * u + p["light_y"] * v
    img = img * np.clip(light, 0.4, 1.6)
    img = (img - img.mean(axis=(1, 2), keepdims=True)) * p["contrast"] + img.mean(axis=(1, 2), keepdims=True)
    img = img + p["blur"] * (_blur(img) - img)
    img = img + p["noise"] * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.where(p["flip"] > 0.5, img[:, :, ::-1], img)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _paint(img: np.ndarray, dist: np.ndarray, value: np.ndarray, scale: np.ndarray,
           strength: np.ndarray | float = 1.0) -> np.ndarray:
    """Blend `value` in where the signed distance (head units, < 0 inside) says, antialiased over a pixel."""
    alpha = np.clip(0.5 - dist * scale, 0.0, 1.0) * strength
    return img + alpha * (value - img)


def _paint_mouth(img: np.ndarray, u: np.ndarray, v: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Lips as a curve with corners raised by `lift`, opened between two profiles, with optional teeth."""
    w = p["mouth_w"]
    t = np.clip(u / w, -1.0, 1.0)
    profile = np.power(np.clip(1.0 - t * t, 0.0, 1.0), p["round"])
    centre = p["mouth_y"] - p["lift"] * t * t
    raise_ = p["sneer"] * np.clip(p["sneer_side"] * t + 0.3, 0.0, 1.3)
    top = centre - p["open_top"] * profile - raise_
    bot = centre + p["open_bot"] * profile - 0.4 * raise_
    norm = np.sqrt(1.0 + (2.0 * p["lift"] * t / w) ** 2)  # vertical to normal distance on the sloped corners
    ends = np.abs(u) - w
    lip = 0.035
    lips = np.maximum.reduce([(top - v) / norm - lip, (v - bot) / norm - lip, ends - 0.01])
    s = p["scale"]
    img = _paint(img, lips, p["ink"], s)
    cavity = np.maximum.reduce([(top - v) / norm, (v - bot) / norm, ends + 0.02])
    img = _paint(img, cavity, p["ink"] * 0.3, s)
    teeth = np.maximum(cavity, v - top - 0.08)
    return _paint(img, teeth, np.minimum(p["skin"] + 50, 240), s, p["teeth"])


def _ellipse_dist(u: np.ndarray, v: np.ndarray, cx: np.ndarray | float, cy: np.ndarray | float,
                  rx: np.ndarray | float, ry: np.ndarray | float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (first-order, exact on the axes)."""
    du, dv = (u - cx) / rx, (v - cy) / ry
    r = np.sqrt(du * du + dv * dv) + 1e-6
    grad = np.sqrt((du / rx) ** 2 + (dv / ry) ** 2) / r + 1e-6
    return (r - 1.0) / grad


def _brow_dist(u: np.ndarray, v: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Signed distance to the right brow (mirror u for the left): a tilted, arched stroke."""
    x0, x1 = p["brow_in"], p["eye_x"] + p["eye_w"] + 0.06
    y0, y1 = p["brow_y"] + p["brow_tilt"] / 2, p["brow_y"] - p["brow_tilt"] / 2
    f = np.clip((u - x0) / (x1 - x0), 0.0, 1.0)
    centre = y0 + (y1 - y0) * f - p["brow_arch"] * 4 * f * (1 - f)
    slope = (y1 - y0) / (x1 - x0)
    along = np.maximum(x0 - u, u - x1)
    return np.maximum(np.abs(v - centre) / np.sqrt(1 + slope * slope) - p["brow_w"], along)


def _blur(img: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge padding."""
    pad = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows = (pad[:, :-2] + 2 * pad[:, 1:-1] + pad[:, 2:]) / 4
    return (rows[:, :, :-2] + 2 * rows[:, :, 1:-1] + rows[:, :, 2:]) / 4
