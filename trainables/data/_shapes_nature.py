"""Stroke recipes for natural and living things of the built-in sketch set: a tree, a fish, a face, the sun...

Each recipe takes a random generator and returns strokes (see :mod:`._strokes`); see :mod:`._shapes`
for how they are named.
"""

from __future__ import annotations

import numpy as np

from ._strokes import TAU, Recipe, Strokes, arc, line, loop


def _tree(rng: np.random.Generator) -> Strokes:
    tw, base = rng.uniform(0.08, 0.16), rng.uniform(0.1, 0.3)
    r, n = rng.uniform(0.5, 0.7), int(rng.integers(6, 11))
    cy = base - r * 0.9
    t = np.linspace(0, TAU, 160)
    bump = 1 + rng.uniform(0.1, 0.2) * np.abs(np.sin(n * t / 2))
    crown = np.stack([r * bump * np.cos(t), cy + r * 0.85 * bump * np.sin(t)], axis=1)
    s: Strokes = [crown, line((-tw, 0.95), (-tw, base)), line((tw, 0.95), (tw, base))]
    if rng.random() < 0.6:
        s.append(line((0, base + 0.05), (rng.uniform(-0.3, 0.3), base - 0.3)))
    if rng.random() < 0.5:
        s.append(line((-0.6, 0.95), (0.6, 0.95)))
    return s


def _fish(rng: np.random.Generator) -> Strokes:
    L, h = rng.uniform(0.55, 0.7), rng.uniform(0.3, 0.45)
    nose, joint = -0.85, -0.85 + 2 * L
    t = np.linspace(0, 1, 30)
    upper = np.stack([nose + (joint - nose) * t, -h * np.sin(np.pi * t)], axis=1)
    lower = np.stack([nose + (joint - nose) * t, h * np.sin(np.pi * t)], axis=1)
    tl = rng.uniform(0.25, 0.4)
    tail = line(
        (joint - 0.05, 0),
        (joint + tl, -tl * 1.1),
        (joint + tl * 0.8, 0),
        (joint + tl, tl * 1.1),
        (joint - 0.05, 0),
    )
    s: Strokes = [upper, lower, tail, loop(rng, nose + 0.25, -h * 0.25, 0.05)]
    if rng.random() < 0.7:
        s.append(arc(nose + 0.45, 0, 0.12, h * 0.7, -1.2, 1.2, 16))
    if rng.random() < 0.5:
        s.append(line((nose + L * 0.9, -h * 0.95), (nose + L * 1.2, -h * 1.45), (nose + L * 1.4, -h * 0.9)))
    return s


def _star(rng: np.random.Generator) -> Strokes:
    n = 5 if rng.random() < 0.85 else 6
    ro, ri, a0 = rng.uniform(0.8, 0.95), rng.uniform(0.35, 0.5), -np.pi / 2 + rng.uniform(-0.15, 0.15)
    a = a0 + np.arange(2 * n + 1) * np.pi / n
    r = np.where(np.arange(2 * n + 1) % 2 == 0, ro, ri)
    return [line(*zip(r * np.cos(a), r * np.sin(a), strict=True), n=6)]


def _sun(rng: np.random.Generator) -> Strokes:
    r, n = rng.uniform(0.32, 0.45), int(rng.integers(8, 15))
    a0 = rng.uniform(0, TAU)
    rays = [
        line((np.cos(a) * (r + 0.1), np.sin(a) * (r + 0.1)), (np.cos(a) * (r + L), np.sin(a) * (r + L)), n=6)
        for a, L in zip(a0 + np.arange(n) * TAU / n, rng.uniform(0.3, 0.5, n), strict=True)
    ]
    s: Strokes = [loop(rng, 0, 0, r), *rays]
    if rng.random() < 0.3:
        s += [
            loop(rng, -r * 0.35, -r * 0.2, 0.04),
            loop(rng, r * 0.35, -r * 0.2, 0.04),
            arc(0, r * 0.1, r * 0.45, r * 0.35, 0.3, np.pi - 0.3, 16),
        ]
    return s


def _flower(rng: np.random.Generator) -> Strokes:
    n, c = int(rng.integers(5, 9)), rng.uniform(0.12, 0.18)
    cy, pl = -0.35, rng.uniform(0.25, 0.35)
    a0 = rng.uniform(0, TAU)
    petals = []
    for a in a0 + np.arange(n) * TAU / n:
        t = np.linspace(-np.pi / 2, np.pi / 2, 20)
        px = (c + pl * np.cos(t)) * np.cos(a) - pl * 0.35 * np.sin(t) * np.sin(a)
        py = cy + (c + pl * np.cos(t)) * np.sin(a) + pl * 0.35 * np.sin(t) * np.cos(a)
        petals.append(np.stack([px, py], axis=1))
    bend = rng.uniform(-0.15, 0.15)
    stem = np.stack([bend * np.sin(np.linspace(0, np.pi, 20)), np.linspace(cy + c + pl, 0.95, 20)], axis=1)
    side = np.sign(rng.uniform(-1, 1))
    leaf_y = rng.uniform(0.35, 0.6)
    leaf = [line((0, leaf_y), (side * 0.2, leaf_y - 0.18), (side * 0.4, leaf_y - 0.1), (0, leaf_y), n=8)]
    return [loop(rng, 0, cy, c), *petals, stem, *leaf]


def _face(rng: np.random.Generator) -> Strokes:
    r = rng.uniform(0.75, 0.9)
    ex, ey = rng.uniform(0.25, 0.38), rng.uniform(-0.35, -0.2)
    er = rng.uniform(0.05, 0.1)
    mood = rng.uniform(0.6, 1.0) if rng.random() < 0.85 else -0.6
    mouth = arc(0, 0.25 - 0.2 * mood * 0.3, 0.4, 0.25 * abs(mood), 0.35, np.pi - 0.35, 20)
    if mood < 0:
        mouth[:, 1] = 0.6 - (mouth[:, 1] - 0.25)
    s: Strokes = [
        loop(rng, 0, 0, r, r * rng.uniform(0.9, 1.1)),
        loop(rng, -ex, ey, er),
        loop(rng, ex, ey, er),
        mouth,
    ]
    if rng.random() < 0.5:
        s.append(line((0, -0.05), (-0.06, 0.1), (0.04, 0.12)))
    return s


def _heart(rng: np.random.Generator) -> Strokes:
    t = np.linspace(0, TAU * rng.uniform(0.97, 1.03), 80) + rng.uniform(-0.3, 0.3)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    k = rng.uniform(0.85, 1.15)
    s: Strokes = [np.stack([x / 17 * k, y / 17], axis=1)]
    if rng.random() < 0.3:  # an arrow through it
        s.append(line((-0.95, 0.6), (0.95, -0.6), n=12))
    return s


def _moon(rng: np.random.Generator) -> Strokes:
    r, off = rng.uniform(0.75, 0.9), rng.uniform(0.3, 0.5)
    ri = r * rng.uniform(0.85, 1.0)
    # The points where the inner circle (centre off to the right) meets the outer one.
    cos_a = (off**2 + r**2 - ri**2) / (2 * off * r)
    a = np.arccos(np.clip(cos_a, -1, 1))
    outer = arc(0, 0, r, r, a, TAU - a, 48)
    b = np.arctan2(r * np.sin(a), r * np.cos(a) - off)
    inner = arc(off, 0, ri, ri, TAU - b, b, 40)
    s: Strokes = [outer, inner]
    if rng.random() < 0.4:
        s.append(
            line(
                (0.6, -0.7),
                (0.65, -0.55),
                (0.8, -0.5),
                (0.65, -0.45),
                (0.6, -0.3),
                (0.55, -0.45),
                (0.4, -0.5),
                (0.55, -0.55),
                (0.6, -0.7),
                n=3,
            )
        )
    return s


def _cloud(rng: np.random.Generator) -> Strokes:
    w, n = rng.uniform(0.75, 0.92), int(rng.integers(3, 6))
    base = rng.uniform(0.05, 0.2)
    xs = np.linspace(-w, w, n + 1)
    bumps = [
        arc((a + b) / 2, base, (b - a) / 2 * 1.1, rng.uniform(0.3, 0.55), np.pi, TAU, 18)
        for a, b in zip(xs[:-1], xs[1:], strict=True)
    ]
    s: Strokes = [np.vstack(bumps), line((w, base), (-w, base), n=12)]
    if rng.random() < 0.4:
        s += [
            line((x, base + 0.2), (x - 0.08, base + 0.45), n=4)
            for x in np.linspace(-w * 0.6, w * 0.6, int(rng.integers(3, 6)))
        ]
    return s


def _snail(rng: np.random.Generator) -> Strokes:
    r, turns = rng.uniform(0.45, 0.55), rng.uniform(2.2, 3.0)
    t = np.linspace(0, TAU * turns, 140)
    rr = r * (1 - t / (TAU * turns)) ** 0.9
    a0 = rng.uniform(0, TAU)
    spiral = np.stack([0.1 + rr * np.cos(-t + a0), -0.05 + rr * np.sin(-t + a0)], axis=1)
    foot = 0.05 + r
    body = line(
        (0.1 + r + 0.05, foot - 0.05),
        (-0.85, foot),
        (-0.75, foot - 0.25),
        (-0.55, foot - 0.25),
        (-0.45, foot - 0.05),
        n=10,
    )
    return [
        spiral,
        body,
        line((-0.7, foot - 0.25), (-0.8, foot - 0.55), n=6),
        line((-0.6, foot - 0.25), (-0.55, foot - 0.55), n=6),
    ]


def _mushroom(rng: np.random.Generator) -> Strokes:
    w, h = rng.uniform(0.75, 0.95), rng.uniform(0.45, 0.65)
    y = rng.uniform(-0.05, 0.1)
    sw = rng.uniform(0.15, 0.25)
    s: Strokes = [
        arc(0, y, w, h, np.pi, TAU, 40),
        np.vstack(
            [arc(0, y, w, 0.12, 0, np.pi / 2 - 0.3, 8)[::-1], arc(0, y, w, 0.12, np.pi / 2 + 0.3, np.pi, 8)]
        ),
        line((-sw, y + 0.1), (-sw * 1.1, 0.9), (sw * 1.1, 0.9), (sw, y + 0.1)),
    ]
    for _ in range(int(rng.integers(0, 4))):
        s.append(loop(rng, rng.uniform(-0.5, 0.5) * w, y - rng.uniform(0.2, 0.6) * h, rng.uniform(0.06, 0.1)))
    return s


NATURE: dict[str, Recipe] = {
    "cloud": _cloud,
    "face": _face,
    "fish": _fish,
    "flower": _flower,
    "heart": _heart,
    "moon": _moon,
    "mushroom": _mushroom,
    "snail": _snail,
    "star": _star,
    "sun": _sun,
    "tree": _tree,
}
