"""Pen primitives for the stroke recipes: lines, arcs, loops and boxes in a unit box.

Points are ``(n, 2)`` float arrays, about -1..1 with y pointing down, in the order a pen follows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Strokes = list[np.ndarray]
Recipe = Callable[[np.random.Generator], Strokes]
TAU = 2 * np.pi


def line(*points: tuple[float, float], n: int = 10) -> np.ndarray:
    """A polyline through ``points``, each segment sampled with ``n`` points."""
    pts = np.asarray(points, dtype=np.float64)
    segs = [np.linspace(a, b, n, endpoint=False) for a, b in zip(pts[:-1], pts[1:], strict=True)]
    return np.vstack([*segs, pts[-1:]])


def arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 40) -> np.ndarray:
    """An elliptical arc from angle ``a0`` to ``a1`` (radians; 0 is +x, angles turn towards +y)."""
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def loop(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float | None = None) -> np.ndarray:
    """A hand-drawn closed ellipse: random start, ending a little short of or past the start."""
    a0 = rng.uniform(0, TAU)
    return arc(cx, cy, rx, rx if ry is None else ry, a0, a0 + TAU * rng.uniform(0.96, 1.06), 48)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return line((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))
